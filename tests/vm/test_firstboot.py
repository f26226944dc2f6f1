"""First-boot assertions, one test per (scenario, Debian suite).

Every assertion reads evidence the guest wrote at its first boot (see
conftest.py for the harness). Select with e.g.
``python3 -m pytest tests/vm -m vm -k 'bookworm and fixed'``.
"""

from __future__ import annotations

import json
import re

import pytest
import vmharness as H
from scenarios import SCENARIOS, suites_for

pytestmark = pytest.mark.vm

# ---------------------------------------------------------------------------
# The module's decision for an invalid host_routing that asks for STRICT
# (cloudinit_hostrouting/module.py: "fails closed"): the units and gates are
# written anyway, the check fails every boot, and the machine never starts.
STRICT_INVALID_BLOCKS_MACHINE = True   # <-- the one line that encodes the decision
# ---------------------------------------------------------------------------

OVERLAP_LINE = "OVERLAP: expected CIDR 10.0.5.0/24 (probe 10.0.5.1) routes via ib0, expected eth0"
MARKER_DIR = "/run/cloudinit-hostrouting"
CONFIG_FILE = "/etc/cloudinit-hostrouting/host-routing.json"
OUR_UNIT_FILES = [
    f"/etc/systemd/system/{H.UNIT_STATIC}",
    f"/etc/systemd/system/{H.UNIT_OVERLAP}",
    H.DROPIN,
]
# Where the module writes at boot (the enable-module file in cloud.cfg.d is
# put there at image build time, so it is not in this list).
BOOT_WRITE_ROOTS = ("/etc/systemd/", "/etc/cloudinit-hostrouting", "/etc/iproute2/", MARKER_DIR)


# --------------------------------------------------------------------------- helpers

def route_dev(r: H.BootResult, probe: str) -> str | None:
    m = re.search(r"\bdev (\S+)", r.text(f"route_get_{probe}.txt"))
    return m.group(1) if m else None


def mono(props: dict, key: str) -> int:
    return int(props.get(key) or 0)


def ours_written(r: H.BootResult) -> list[str]:
    """Paths of ours present at collection time (from `find` in the guest)."""
    paths = [line for line in r.text("find_etc.txt").splitlines() if line.startswith("/")]
    # the listing is real (not an empty file that would make "nothing" vacuous)
    assert f"/etc/systemd/system/{H.EVIDENCE_UNIT}" in paths, "find listing incomplete"
    return [p for p in paths if "hostrouting" in p and p.startswith(BOOT_WRITE_ROOTS)]


# Which /usr/bin/python3 each suite has (forky: 3.14 at the time of writing, or newer).
PYTHON = {"bookworm": r"python3\.11", "trixie": r"python3\.13",
          "forky": r"python3\.(1[4-9]|[2-9]\d)"}
# cloud-init 23.4 and later warn about our unknown top-level key (NOTES §7):
# Debian 13's 25.1 and forky's 26.2.
SCHEMA_WARNS = {"trixie", "forky"}
DEB_PKG = "/usr/lib/python3/dist-packages/cloudinit_hostrouting"
PIP_PKG = "/usr/local/lib/python3.11/dist-packages/cloudinit_hostrouting"


def assert_installed_as(r: H.BootResult, install: str) -> None:
    """The package is where this scenario's install method puts it, and only there."""
    versions = r.text("versions.txt")
    listed = set(versions.splitlines())  # `ls -d` prints each existing path on a line
    if install == "deb":
        assert "cloudinit-hostrouting install ok installed" in listed, versions
        assert {DEB_PKG, "/usr/bin/cloudinit-hostrouting"} <= listed, versions
        assert not any(line.startswith("/usr/local/") for line in listed), versions
    else:
        assert {PIP_PKG, "/usr/local/bin/cloudinit-hostrouting"} <= listed, versions
        assert DEB_PKG not in listed and "/usr/bin/cloudinit-hostrouting" not in listed, versions
        assert "cloudinit-hostrouting install ok installed" not in listed, versions


def late_address_after_check(r: H.BootResult) -> None:
    """Race variants: ib0's address came after the check had exited (systemd's clock)."""
    late, ov = r.show(H.LATE_UNIT), r.show(H.UNIT_OVERLAP)
    assert late.get("ActiveState") == "active" and late.get("Result") == "success", late
    came = mono(late, "ActiveEnterTimestampMonotonic")
    judged = mono(ov, "ExecMainExitTimestampMonotonic")
    assert judged > 0 and came > judged, (
        f"address added at {came} us, check exited at {judged} us: not a race")


def assert_guest_baseline(r: H.BootResult) -> None:
    """The test bed is what it claims: right Debian and Python, package installed the
    scenario's way, ib0 shadowing (in the race variants: from its late address)."""
    sc = SCENARIOS[r.scenario]
    versions = r.text("versions.txt")
    assert versions.startswith(H.SUITES[r.suite]["release"]), versions
    assert re.search(r"^/usr/bin/" + PYTHON[r.suite] + "$", versions, re.M), versions
    assert_installed_as(r, sc.install)
    addr = r.text("addr.txt")
    assert re.search(r"\beth0\s+inet 10\.0\.2\.15/24", addr), addr
    assert re.search(r"\bib0\s+inet 10\.0\.200\.5/16", addr), addr
    if sc.variant != "std":
        late_address_after_check(r)
        kvp = H.KVP_POOL in r.text("find_etc.txt").splitlines()
        assert kvp == (sc.variant == "race"), r.text("find_etc.txt")
        assert "OS.EnableRDMA=y" in (r.file("/etc/waagent.conf") or "")
    # an IB peer keeps routing over ib0 whatever we do
    assert route_dev(r, "10.0.77.1") == "ib0", r.text("route_get_10.0.77.1.txt")


def assert_cloud_init_done(r: H.BootResult, key_present: bool) -> None:
    status, rc = r.text("status.txt"), r.rc("status.txt")
    assert re.search(r"^status: done\s*$", status, re.M), status
    if rc == 0:
        return
    # Debian 13 / cloud-init 25.1 and forky / 26.2: an unknown top-level key
    # gives "degraded done" and exit code 2 (NOTES §3, §7). Accept that, and only that.
    assert r.suite in SCHEMA_WARNS and key_present and rc == 2, f"rc={rc}\n{status}"
    assert re.search(r"^extended_status: degraded done\s*$", status, re.M), status
    assert re.search(r"^errors: \[\]\s*$", status, re.M), status
    recoverable = re.findall(r"^\s+- (.*)$", status.split("recoverable_errors:", 1)[-1], re.M)
    assert recoverable and all("schema validation" in m for m in recoverable), recoverable
    # ... and the schema problems are exactly our unknown top-level key
    schema = r.text("schema_system.txt")
    found = re.findall(r"schema errors: (.*)$", schema, re.M)
    assert found, schema
    problems = [p for line in found for p in re.split(r", (?=\S+: )", line.strip())]
    assert problems and all(p.startswith("host_routing:") for p in problems), problems


def assert_machine_running(r: H.BootResult) -> dict:
    m = r.show(H.UNIT_MACHINE)
    assert m.get("ActiveState") == "active" and m.get("SubState") == "running", m.get("ActiveState")
    assert mono(m, "ExecMainStartTimestampMonotonic") > 0
    assert ("start", "done") in [(t, res) for t, res, _ in r.job_results()], r.job_results()
    return m


def assert_machine_never_started(r: H.BootResult) -> None:
    m = r.show(H.UNIT_MACHINE)
    assert mono(m, "ExecMainStartTimestampMonotonic") == 0, m.get("ExecMainStartTimestampMonotonic")
    assert m.get("ActiveState") != "active", m.get("ActiveState")
    assert mono(m, "ActiveEnterTimestampMonotonic") == 0
    # `systemctl show -p Result` stays "success" for a unit that never ran: the
    # job result is only in systemd's job-completion journal entry.
    results = r.job_results()
    assert ("start", "dependency") in [(t, res) for t, res, _ in results], results
    assert not any(res == "done" for t, res, _ in results if t == "start"), results


def assert_ordered_after_checks(r: H.BootResult) -> None:
    """The machine's main process started after both oneshots had exited."""
    st, ov, m = r.show(H.UNIT_STATIC), r.show(H.UNIT_OVERLAP), r.show(H.UNIT_MACHINE)
    st_exit = mono(st, "ExecMainExitTimestampMonotonic")
    ov_exit = mono(ov, "ExecMainExitTimestampMonotonic")
    m_start = mono(m, "ExecMainStartTimestampMonotonic")
    assert st_exit > 0 and ov_exit > 0, (st_exit, ov_exit)
    assert m_start > max(st_exit, ov_exit), (
        f"machine started at {m_start} us, static-routes exited at {st_exit} us, "
        f"overlap check exited at {ov_exit} us")
    # and it is our drop-in that did it
    assert H.DROPIN in m.get("DropInPaths", ""), m.get("DropInPaths")
    after = m.get("After", "").split()
    assert H.UNIT_STATIC in after and H.UNIT_OVERLAP in after, after


def assert_unit_result(r: H.BootResult, unit: str, result: str, status: int) -> None:
    u = r.show(unit)
    assert u.get("LoadState") == "loaded", u.get("LoadState")
    assert u.get("Result") == result, u.get("Result")
    assert mono(u, "ExecMainStatus") == status, u.get("ExecMainStatus")


def markers(r: H.BootResult) -> tuple[str | None, str | None]:
    return (r.file(f"{MARKER_DIR}/route-overlap.detected"),
            r.file(f"{MARKER_DIR}/route-overlap.ok"))


def assert_overlap_reported(r: H.BootResult) -> None:
    """No fix: the shadow is real, and the check said so in upstream's format."""
    assert route_dev(r, "10.0.5.1") == "ib0", r.text("route_get_10.0.5.1.txt")
    detected, ok = markers(r)
    assert detected is not None and OVERLAP_LINE in detected.splitlines(), detected
    assert ok is None


def cloud_init_log_lines(r: H.BootResult, *needles: str) -> list[str]:
    log = r.file("/var/log/cloud-init.log") or ""
    return [line for line in log.splitlines() if all(n in line for n in needles)]


# --------------------------------------------------------------------------- scenarios

def assert_fixed(r: H.BootResult) -> None:
    """What a static route plus STRICT must give: fixed before the machine starts."""
    assert_guest_baseline(r)
    routes = r.text("routes.txt")
    assert re.search(r"^10\.0\.5\.0/24 via 10\.0\.2\.2 dev eth0\b", routes, re.M), routes
    # gateway and dev left out: resolved from the default route at boot
    assert re.search(r"^10\.0\.6\.0/24 via 10\.0\.2\.2 dev eth0\b", routes, re.M), routes
    assert route_dev(r, "10.0.5.1") == "eth0", r.text("route_get_10.0.5.1.txt")
    assert route_dev(r, "10.0.6.1") == "eth0", r.text("route_get_10.0.6.1.txt")
    detected, ok = markers(r)
    assert ok is not None, "route-overlap.ok missing"
    assert not (detected or "").strip(), detected
    assert r.file(CONFIG_FILE) is not None
    assert_unit_result(r, H.UNIT_STATIC, "success", 0)
    assert_unit_result(r, H.UNIT_OVERLAP, "success", 0)
    assert_machine_running(r)
    assert_ordered_after_checks(r)
    assert_cloud_init_done(r, key_present=True)


@pytest.mark.vm_case("fixed")
@pytest.mark.parametrize("suite", suites_for("fixed"))
def test_fixed(boot):
    """1. ND-isr with a static route and STRICT (the .deb): fixed before the machine starts."""
    assert_fixed(boot)


@pytest.mark.vm_case("pip_fixed")
@pytest.mark.parametrize("suite", suites_for("pip_fixed"))
def test_pip_fixed(boot):
    """1, installed with pip into /usr/local as the README's pip path says: the same holds."""
    assert_fixed(boot)


@pytest.mark.vm_case("guard")
@pytest.mark.parametrize("suite", suites_for("guard"))
def test_guard_restores_after_networkd_reconfigure(boot):
    """Issue 6: `networkctl reconfigure eth0` drops our route; the guard puts it back."""
    r = boot
    assert_guest_baseline(r)
    assert_unit_result(r, "hostrouting-guard.service", "success", 0)
    assert "10.0.5.0/24 via 10.0.2.2 dev eth0" in r.text("guard_routes_before.txt")
    assert r.text("guard_reconfigure.txt.rc").strip() == "0", r.text("guard_reconfigure.txt")
    journal = r.text("journal_guard.txt")
    # "restored" is only logged when the route had really vanished: proof that
    # networkd dropped it and that the guard, not luck, brought it back.
    assert "guard: restored 10.0.5.0/24 via 10.0.2.2 dev eth0" in journal, journal
    assert "10.0.5.0/24 via 10.0.2.2 dev eth0" in r.text("guard_routes_after.txt")
    assert re.search(r"\bdev eth0\b", r.text("guard_route_get.txt"))
    assert_machine_running(r)


@pytest.mark.vm_case("strict_nofix")
@pytest.mark.parametrize("suite", suites_for("strict_nofix"))
def test_strict_nofix(boot):
    """2. STRICT, no fix: the overlap is reported and the machine never starts."""
    r = boot
    assert_guest_baseline(r)
    assert_overlap_reported(r)
    assert_unit_result(r, H.UNIT_OVERLAP, "exit-code", 1)
    assert_machine_never_started(r)
    assert_cloud_init_done(r, key_present=True)


@pytest.mark.vm_case("warn_nofix")
@pytest.mark.parametrize("suite", suites_for("warn_nofix"))
def test_warn_nofix(boot):
    """3. WARN, no fix: the overlap is reported and the machine starts anyway."""
    r = boot
    assert_guest_baseline(r)
    assert_overlap_reported(r)
    assert_unit_result(r, H.UNIT_OVERLAP, "success", 0)
    assert_machine_running(r)
    assert_ordered_after_checks(r)
    assert_cloud_init_done(r, key_present=True)


@pytest.mark.vm_case("none")
@pytest.mark.parametrize("suite", suites_for("none"))
def test_none(boot):
    """4. No host_routing: nothing of ours is written, the machine starts."""
    r = boot
    assert_guest_baseline(r)
    assert ours_written(r) == [], ours_written(r)
    assert r.show(H.UNIT_STATIC).get("LoadState") == "not-found"
    assert r.show(H.UNIT_OVERLAP).get("LoadState") == "not-found"
    assert route_dev(r, "10.0.5.1") == "ib0"
    assert_machine_running(r)
    # the module is enabled in the image, so this is not vacuous
    cfg = r.file("/etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg") or ""
    assert "host_routing" in cfg, "enable-module file missing from the image"
    status, rc = r.text("status.txt"), r.rc("status.txt")
    H.log(f"{r.suite}/none: cloud-init status rc={rc}: {status.splitlines()[:2]}")
    assert_cloud_init_done(r, key_present=False)


@pytest.mark.vm_case("invalid")
@pytest.mark.parametrize("suite", suites_for("invalid"))
def test_invalid(boot):
    """5a. Invalid host_routing (WARN): error with our message, nothing written, machine runs."""
    r = boot
    assert_guest_baseline(r)
    status, rc = r.text("status.txt"), r.rc("status.txt")
    assert re.search(r"^status: error\s*$", status, re.M), status
    assert rc == 1, rc
    assert "not-an-address" in status, status
    ours = cloud_init_log_lines(r, "static_routes.routes[0].gateway", "not-an-address")
    assert ours, "our validation message is not in /var/log/cloud-init.log"
    assert ours_written(r) == [], ours_written(r)
    assert_machine_running(r)


@pytest.mark.vm_case("invalid_strict")
@pytest.mark.parametrize("suite", suites_for("invalid_strict"))
def test_invalid_strict(boot):
    """5b. Invalid host_routing that asks for STRICT: what STRICT-minded users get."""
    r = boot
    assert_guest_baseline(r)
    status, rc = r.text("status.txt"), r.rc("status.txt")
    assert re.search(r"^status: error\s*$", status, re.M), status
    assert rc == 1, rc
    assert "not-an-address" in status, status
    assert cloud_init_log_lines(r, "static_routes.routes[0].gateway", "not-an-address"), \
        "our validation message is not in /var/log/cloud-init.log"
    if STRICT_INVALID_BLOCKS_MACHINE:
        # fail closed: the full set of units and gates (nothing partial), the
        # check fails with the config error, and the machine never starts
        for path in [*OUR_UNIT_FILES, CONFIG_FILE]:
            assert r.exists(path), f"{path} missing"
        failed = {u: r.show(u).get("Result") for u in (H.UNIT_STATIC, H.UNIT_OVERLAP)}
        assert any(res not in ("success", None) for res in failed.values()), failed
        assert_machine_never_started(r)
    else:
        assert ours_written(r) == [], ours_written(r)
        assert_machine_running(r)


# --------------------------------------------------------------------------- issue 12: the race
# ib0's address (10.0.200.5/16) is added after cloud-final and after our check
# (vmtest-late-ipoib.service, standing in for WALinuxAgent); every route
# lookup below was made after it came (late_address_after_check).

PENDING = "10.0.0.0/16 on ib0, from KVP IPoIB_Data, not yet assigned"


def check_status(r: H.BootResult) -> dict:
    """The check's status.json, as it was at collection time."""
    text = r.file(f"{MARKER_DIR}/status.json")
    assert text, "status.json missing"
    return json.loads(text)


def assert_anticipated(r: H.BootResult) -> dict:
    """The check read the baked KVP pool and counted ib0's announced /16 as a route."""
    ipoib = check_status(r)["ipoib"]
    assert ipoib["anticipating"] is True, ipoib
    assert "auto" in ipoib["rule"] and "EnableRDMA" in ipoib["rule"], ipoib["rule"]
    assert ipoib["kvp"]["state"] == "ok", ipoib["kvp"]
    assert ipoib["kvp"]["pairs"] == [{"mac": H.IB0_KVP_MAC, "address": "10.0.200.5"}], ipoib
    assert [(p["route"], p["interface"]) for p in ipoib["pending"]] == [
        ("10.0.0.0/16", "ib0")], ipoib["pending"]
    journal = r.text("journal_ours.txt")
    assert f"IPoIB: pending {PENDING}" in journal, journal
    return ipoib


@pytest.mark.vm_case("race_strict_nofix")
@pytest.mark.parametrize("suite", suites_for("race_strict_nofix"))
def test_race_strict_nofix(boot):
    """STRICT, no fix, address late: the predicted shadow fails the gate; the machine
    never starts, and the prediction came true (10.0.5.1 via ib0 once the address came)."""
    r = boot
    assert_guest_baseline(r)
    assert_anticipated(r)
    detected, ok = markers(r)
    # upstream's line, although at check time the kernel sent 10.0.5.1 via eth0
    assert detected is not None and OVERLAP_LINE in detected.splitlines(), detected
    assert ok is None
    (cidr,) = check_status(r)["cidrs"]
    assert [f["culprit"] for f in cidr["shadowed"]] == [PENDING], cidr
    assert_unit_result(r, H.UNIT_OVERLAP, "exit-code", 1)
    assert_machine_never_started(r)
    assert route_dev(r, "10.0.5.1") == "ib0", r.text("route_get_10.0.5.1.txt")
    assert_cloud_init_done(r, key_present=True)


@pytest.mark.vm_case("race_fixed")
@pytest.mark.parametrize("suite", suites_for("race_fixed"))
def test_race_fixed(boot):
    """The fix, address late: the machine starts after the checks, and 10.0.5.1 still
    routes via eth0 after the address came (the static route is more specific)."""
    r = boot
    assert_guest_baseline(r)
    routes = r.text("routes.txt")
    assert re.search(r"^10\.0\.5\.0/24 via 10\.0\.2\.2 dev eth0\b", routes, re.M), routes
    assert re.search(r"^10\.0\.0\.0/16 dev ib0 proto kernel", routes, re.M), routes
    assert route_dev(r, "10.0.5.1") == "eth0", r.text("route_get_10.0.5.1.txt")
    assert_anticipated(r)
    detected, ok = markers(r)
    assert ok is not None and not (detected or "").strip(), detected
    assert check_status(r)["ok"] is True
    assert_unit_result(r, H.UNIT_OVERLAP, "success", 0)
    assert_machine_running(r)
    assert_ordered_after_checks(r)
    assert_cloud_init_done(r, key_present=True)


@pytest.mark.vm_case("race_nokvp")
@pytest.mark.parametrize("suite", suites_for("race_nokvp"))
def test_race_without_kvp_is_a_false_ok(boot):
    """Negative control, no KVP pool: the gate passes on a table without the shadow,
    the machine starts, and once the address came 10.0.5.1 routes via ib0."""
    r = boot
    assert_guest_baseline(r)
    detected, ok = markers(r)
    assert ok is not None and not (detected or "").strip(), detected
    ipoib = check_status(r)["ipoib"]
    # nothing to anticipate: the pool is missing, and the report says so
    assert ipoib["kvp"]["state"] == "absent" and ipoib["pending"] == [], ipoib
    assert_unit_result(r, H.UNIT_OVERLAP, "success", 0)
    assert_machine_running(r)
    assert_ordered_after_checks(r)
    assert route_dev(r, "10.0.5.1") == "ib0", r.text("route_get_10.0.5.1.txt")
