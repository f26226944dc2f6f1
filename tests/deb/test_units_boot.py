"""The hardened units under a real systemd: the .deb installed, the root booted in nspawn.

``systemd-analyze security`` only reads unit text; this proves the units still
work with every sandboxing property applied by a real service manager (the
root's own systemd as PID 1 in ``systemd-nspawn --private-network``).  The
root's units build an ND-isr-shaped network in the container's own network
namespace (``eth0`` 10.1.0.4/24 with the default route, ``ib0`` 10.0.200.5/16
shadowing the cluster CIDR 10.0.5.0/24), then our units run as rendered by
``cloudinit-hostrouting render`` from the installed package, before a gated
unit; an evidence unit records what happened and powers the container off.

What this does not show (the VM suite does): cloud-init's first boot writing
the units from the init stage, and the nspawn machine queued by machines.target.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator

import debroot
import pytest
from debroot import in_root, put

# Run by `tox -e deb` only (root, mmdebstrap, systemd-nspawn); never skipped.
pytestmark = pytest.mark.deb

UNITS = ("hostrouting-static-routes.service", "hostrouting-route-overlap.service",
         "hostrouting-guard.service", "hrgated.service")
STATIC, CHECK, GUARD, GATED = UNITS
TEXTFILE = "/var/lib/node_exporter/textfile_collector/hostrouting.prom"
ELSEWHERE = "/srv/metrics/hostrouting.prom"  # not a documented collector directory
CAP_NET_ADMIN = 1 << 12
# Ours, tagged rtnetlink protocol 214, which our rt_protos.d file names.
OUR_ROUTE = re.compile(r"^10\.0\.5\.0/24 via 10\.1\.0\.1 dev eth0 proto (214|hostrouting) ",
                       re.MULTILINE)

FIXED = f"""\
host_routing:
  static_routes:
    enabled: true
    routes: [{{destination: 10.0.5.0/24, dev: eth0}}]
  route_overlap: {{mode: STRICT, expected_cidrs: [10.0.5.0/24]}}
  gate_units: [hrgated.service]
  guard: {{enabled: true, prometheus_textfile: {TEXTFILE}}}
"""
UNFIXED = """\
host_routing:
  route_overlap: {mode: STRICT, expected_cidrs: [10.0.5.0/24]}
  gate_units: [hrgated.service]
"""

NETSETUP_UNIT = """\
[Unit]
Description=ND-isr-shaped links for the package test
DefaultDependencies=no
Before=network-online.target hostrouting-static-routes.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/hr-netsetup
[Install]
WantedBy=multi-user.target
"""
NETSETUP = """\
#!/bin/sh
set -e
ip link add eth0 type veth peer name eth0-peer
ip link add ib0 type veth peer name ib0-peer
for l in eth0-peer ib0-peer eth0 ib0; do ip link set "$l" up; done
ip addr add 10.1.0.4/24 dev eth0
ip addr add 10.0.200.5/16 dev ib0
ip route add default via 10.1.0.1 dev eth0
"""
GATED_UNIT = """\
[Unit]
Description=Stands in for a gated unit (an nspawn machine, kubelet)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
"""
EVIDENCE_UNIT = f"""\
[Unit]
Description=Collect the package test's evidence, then power off
After={" ".join(UNITS)} hr-netsetup.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hr-evidence
[Install]
WantedBy=multi-user.target
"""
EVIDENCE = f"""\
#!/bin/sh
# Runs inside the container once our units and the gated unit are done.
E=/evidence
for u in {" ".join(UNITS)}; do
    systemctl show -p ActiveState,Result,ExecMainStatus,ExecMainStartTimestampMonotonic \\
        -p ExecMainExitTimestampMonotonic,MainPID,NoNewPrivileges,ProtectSystem \\
        -p CapabilityBoundingSet,RestrictAddressFamilies "$u" >"$E/show-$u"
    systemd-analyze security --no-pager "$u" >"$E/security-$u" 2>&1 || true
done
pid=$(systemctl show -p MainPID --value {GUARD})
if [ "$pid" != 0 ]; then
    cat /proc/"$pid"/status >"$E/guard-status"
    cat /proc/"$pid"/mountinfo >"$E/guard-mountinfo"
fi
ip -4 route >"$E/routes"
ip -4 route get 10.0.5.1 >"$E/route-get" 2>&1 || true
mkdir -p "$E/run" && cp -a /run/cloudinit-hostrouting/. "$E/run/" 2>/dev/null || true
cp {TEXTFILE} "$E/textfile" 2>/dev/null || true
cp {ELSEWHERE} "$E/textfile-elsewhere" 2>/dev/null || true
journalctl -b --no-pager -o short-monotonic >"$E/journal"
journalctl -b --no-pager -o short-monotonic -u 'hostrouting-*' >"$E/journal-ours"
systemctl --no-block poweroff
"""


def boot_scenario(suite: str, deb: Path, config: str, work: Path,
                  dropins: Dict[str, str] | None = None, then: str = "") -> Dict[str, Any]:
    """Install the .deb, render ``config``, run ``then`` in the root, boot; return the evidence."""
    with debroot.fresh_root(suite) as root:
        debroot.copy_in(root, deb, "/tmp/cloudinit-hostrouting.deb")
        put(root, "/tmp/c.yaml", config)
        for path, text, mode in (
                ("/usr/local/sbin/hr-netsetup", NETSETUP, 0o755),
                ("/usr/local/sbin/hr-evidence", EVIDENCE, 0o755),
                ("/etc/systemd/system/hr-netsetup.service", NETSETUP_UNIT, 0o644),
                ("/etc/systemd/system/hr-evidence.service", EVIDENCE_UNIT, 0o644),
                (f"/etc/systemd/system/{GATED}", GATED_UNIT, 0o644)):
            put(root, path, text, mode)
        for unit, text in (dropins or {}).items():
            put(root, f"/etc/systemd/system/{unit}.d/90-test.conf", text)
        in_root(root, f"""
dpkg -i /tmp/cloudinit-hostrouting.deb >/dev/null
mkdir -p {Path(TEXTFILE).parent} {Path(ELSEWHERE).parent}
cloudinit-hostrouting render --config /tmp/c.yaml --root /
systemctl enable hr-netsetup.service hr-evidence.service {GATED} 2>/dev/null
systemctl mask console-getty.service systemd-firstboot.service 2>/dev/null
{then}
""")
        evidence = work / "evidence"
        proc = debroot.boot(root, evidence)
    got: Dict[str, Any] = {"boot": proc.stdout, "rc": proc.returncode}
    for path in evidence.rglob("*"):
        if path.is_file():
            got[str(path.relative_to(evidence))] = path.read_text(errors="replace")
    assert "journal" in got, f"the evidence unit never ran (rc={proc.returncode}):\n" \
                             f"{proc.stdout[-4000:]}"
    return got


def show(evidence: Dict[str, Any], unit: str) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in evidence[f"show-{unit}"].splitlines())


def exposure(evidence: Dict[str, Any], unit: str) -> float:
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)",
                      evidence[f"security-{unit}"])
    assert match, evidence[f"security-{unit}"]
    return float(match.group(1))


@pytest.fixture(scope="module", params=["bookworm", "forky"])
def fixed(request: pytest.FixtureRequest, package: Dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    yield boot_scenario(request.param, package["deb"], FIXED,
                        tmp_path_factory.mktemp("fixed"))


def test_hardened_units_install_the_route_check_and_release_the_gate(
        fixed: Dict[str, Any]) -> None:
    """STRICT with the fix: route via eth0 (proto 214), .ok, gated unit after the check."""
    static, check, gated = (show(fixed, u) for u in (STATIC, CHECK, GATED))
    assert (static["Result"], static["ExecMainStatus"]) == ("success", "0"), fixed["journal"]
    assert (check["Result"], check["ExecMainStatus"]) == ("success", "0"), fixed["journal"]
    assert OUR_ROUTE.search(fixed["routes"]), fixed["routes"]
    assert "dev eth0" in fixed["route-get"]
    assert "run/route-overlap.ok" in fixed and "run/route-overlap.detected" not in fixed
    assert json.loads(fixed["run/status.json"])
    assert gated["ActiveState"] == "active"
    assert int(gated["ExecMainStartTimestampMonotonic"]) > int(
        check["ExecMainExitTimestampMonotonic"]) > 0


def test_guard_runs_sandboxed_and_reports_ready(fixed: Dict[str, Any]) -> None:
    """The guard's process really has the sandbox, and still works inside it.

    Type=notify reached "active" (sd_notify over AF_UNIX passed the address
    family filter), and it wrote the textfile (ReadWritePaths) and markers.
    """
    guard = show(fixed, GUARD)
    assert guard["ActiveState"] == "active", fixed["journal"]
    status = dict(line.split(":", 1) for line in fixed["guard-status"].splitlines())
    assert int(status["CapBnd"].strip(), 16) == CAP_NET_ADMIN
    assert int(status["CapEff"].strip(), 16) == CAP_NET_ADMIN
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter is installed
    mounts = {fields[4]: fields[5].split(",")
              for fields in (line.split() for line in fixed["guard-mountinfo"].splitlines())}
    assert "ro" in mounts["/"]
    assert "rw" in mounts["/run/cloudinit-hostrouting"]
    assert "hostrouting_check_ok 1" in fixed["textfile"]


def test_running_units_are_rated_at_most_2(fixed: Dict[str, Any]) -> None:
    """The container's systemd rates the loaded units like the offline analysis."""
    for unit in (STATIC, CHECK, GUARD):
        assert exposure(fixed, unit) <= 2.0, fixed[f"security-{unit}"]
    assert exposure(fixed, GATED) > 2.0  # the unhardened stand-in: the rating can fail


def test_no_sandbox_denials_in_the_journal(fixed: Dict[str, Any]) -> None:
    """What our units printed: their normal output, and no EPERM, EROFS or refused socket."""
    ours = fixed["journal-ours"]
    assert "1 of 1 routes installed" in ours or "installed: 10.0.5.0/24" in ours, ours
    assert "OK: all 1 expected CIDR(s) route via eth0" in ours, ours
    assert "guard: watching 1 route(s)" in ours, ours
    bad = [ln for ln in ours.splitlines() if re.search(
        r"Read-only file system|Operation not permitted|Permission denied|"
        r"Address family not supported|Traceback|Errno", ln)]
    assert bad == []


@pytest.mark.parametrize("suite", ["bookworm", "forky"])
def test_strict_overlap_still_blocks_the_gated_unit(package: Dict[str, Path], suite: str,
                                                    tmp_path: Path) -> None:
    """STRICT without the fix: the check fails, markers say why, the gate never opens."""
    got = boot_scenario(suite, package["deb"], UNFIXED, tmp_path)
    check, gated = show(got, CHECK), show(got, GATED)
    assert (check["Result"], check["ExecMainStatus"]) == ("exit-code", "1")
    assert "OVERLAP: expected CIDR 10.0.5.0/24 (probe 10.0.5.1) routes via ib0, expected eth0" \
        in got["run/route-overlap.detected"]
    assert gated["ExecMainStartTimestampMonotonic"] == "0"
    assert re.search(r"Dependency failed for .*hrgated|hrgated.service: Job hrgated.service/"
                     r"start failed with result 'dependency'", got["journal"]), got["journal"]


def test_a_too_tight_sandbox_is_caught(package: Dict[str, Path], tmp_path: Path) -> None:
    """Negative control: without AF_NETLINK the static-routes unit fails, and the tests see it.

    Proves the boot tests above would catch a hardening property that breaks a
    unit, rather than passing because the properties were never applied.
    """
    no_guard = FIXED.replace(f"  guard: {{enabled: true, prometheus_textfile: {TEXTFILE}}}\n", "")
    assert "guard" not in no_guard  # the guard would put the route back
    got = boot_scenario("bookworm", package["deb"], no_guard, tmp_path, dropins={
        STATIC: "[Service]\nRestrictAddressFamilies=\nRestrictAddressFamilies=AF_UNIX\n"})
    static = show(got, STATIC)
    assert static["Result"] != "success"
    # ... with the message the denial scan above looks for.
    assert re.search(r"Address family not supported|Errno", got["journal-ours"]), \
        got["journal-ours"]
    assert not OUR_ROUTE.search(got["routes"])
    assert show(got, GATED)["ExecMainStartTimestampMonotonic"] == "0"


def test_after_apt_get_remove_strict_gates_stay_closed(package: Dict[str, Path],
                                                       tmp_path: Path) -> None:
    """remove keeps the instance's units (configuration) but not the commands they run.

    So at the next boot the check fails and a STRICT gate stays closed: never
    start unverified.  ``apt-get purge`` (or ``uninstall``) removes the gate.
    """
    got = boot_scenario("bookworm", package["deb"], FIXED, tmp_path,
                        then="apt-get remove -y cloudinit-hostrouting >/dev/null")
    check, gated = show(got, CHECK), show(got, GATED)
    assert check["Result"] == "exit-code"
    assert "No module named cloudinit_hostrouting" in got["journal-ours"]
    assert gated["ExecMainStartTimestampMonotonic"] == "0"


@pytest.mark.parametrize("dropin", [True, False])
def test_a_textfile_elsewhere_needs_a_readwritepaths_dropin(
        package: Dict[str, Path], tmp_path: Path, dropin: bool) -> None:
    """The guard may write only the documented collector directories (README).

    With the README's drop-in (``ReadWritePaths=`` the directory) a textfile
    elsewhere is written; without it the file system is read-only there and
    the guard fails, while routes and the boot check are unaffected.
    """
    config = FIXED.replace(TEXTFILE, ELSEWHERE)
    dropins = {GUARD: f"[Service]\nReadWritePaths={Path(ELSEWHERE).parent}\n"} if dropin else {}
    got = boot_scenario("bookworm", package["deb"], config, tmp_path, dropins=dropins)
    assert show(got, CHECK)["Result"] == "success"
    if dropin:
        assert show(got, GUARD)["ActiveState"] == "active"
        assert "hostrouting_check_ok 1" in got["textfile-elsewhere"]
    else:
        assert show(got, GUARD)["ActiveState"] != "active"
        assert "textfile-elsewhere" not in got
        assert "Read-only file system" in got["journal-ours"]
