"""The ``host_routing`` module run by the REAL cloud-init 22.4, 25.1 and 26.2, stage by stage.

Each test boots cloud-init (``init --local``, ``init``, ``modules --mode config``,
``modules --mode final``, then ``status --long``) on a NoCloud seed inside the
sandbox of ``tests/cloudinit_sandbox.py`` (mount/UTS/network namespaces,
overlays over /etc and /var, a fresh tmpfs /run per boot) and asserts what the
module did on disk, in cloud-init's log and status, and through systemctl.

systemctl is a stand-in that records its arguments, because PID 1 systemd cannot
run in a mount namespace; the VM suite (tests/vm) boots real systemd and checks
what it does with the units, the drop-ins and the non-blocking start.

cloud-init 22.4 is Debian 12's package; 25.1 is Debian 13's and 26.2 forky's,
unpacked by ``scripts/setup-dev`` (``CLOUDINIT25_DIR``/``CLOUDINIT26_DIR``
override where); all run on Debian 12's /usr/bin/python3.  The package is
pip-installed into a directory on cloud-init's ``PYTHONPATH``, so cloud-init
finds the top-level shim ``cc_host_routing`` on ``sys.path`` as on an image
(see the sandbox module's docstring for why not the editable install).

No assertion depends on timing: only files, inodes, mtimes, logs and exit codes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import yaml
from cloudinit_sandbox import (
    CloudInit,
    Sandbox,
    cloudinit_versions,
    install_package,
    sandbox_unavailable,
)

from cloudinit_hostrouting.config import parse

UNIT_DIR = "/etc/systemd/system"
STATIC = "hostrouting-static-routes.service"
CHECK = "hostrouting-route-overlap.service"
CONFIG = "/etc/cloudinit-hostrouting/host-routing.json"
MANIFEST = "/etc/cloudinit-hostrouting/manifest.json"
PROTOS = "/etc/iproute2/rt_protos.d/cloudinit-hostrouting.conf"
NSPAWN_DROPIN = f"{UNIT_DIR}/systemd-nspawn@.service.d/50-hostrouting.conf"
KUBELET_DROPIN = f"{UNIT_DIR}/kubelet.service.d/50-hostrouting.conf"
OUR_UNIT_PATHS = [f"{UNIT_DIR}/{STATIC}", f"{UNIT_DIR}/{CHECK}"]
WANTS_LINKS = [f"{UNIT_DIR}/multi-user.target.wants/{u}" for u in (STATIC, CHECK)]
# What the module must do through systemctl, from the init stage, and nothing else:
# a blocking start there deadlocks the boot (NOTES §3).
EXPECTED_CALLS = [["init", "daemon-reload"], ["init", "start", "--no-block", STATIC, CHECK]]
ERROR_PATH = "host_routing.static_routes.routes[0].gateway"

VALID_STRICT = """\
#cloud-config
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
        gateway: 172.16.1.2
        dev: eth0
        metric: 100
      - destination: 10.96.0.0/12
  route_overlap:
    mode: strict
    expected_cidrs: [10.0.5.0/24, 10.96.0.0/12]
"""

CHANGED_WARN = """\
#cloud-config
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.6.0/24
        dev: eth1
  route_overlap:
    mode: WARN
    expected_cidrs: [10.0.6.0/24]
  gate_units: [kubelet.service]
"""

NO_HOST_ROUTING = """\
#cloud-config
final_message: "sandbox boot without host_routing"
"""

INVALID_WARN = """\
#cloud-config
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
        gateway: not-an-ip
  route_overlap:
    mode: WARN
    expected_cidrs: [10.0.5.0/24]
"""

INVALID_STRICT = """\
#cloud-config
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
        gateway: not-an-ip
  route_overlap:
    mode: STRICT
    expected_cidrs: [10.0.5.0/24]
  gate_units: [systemd-nspawn@.service, kubelet.service]
"""

VERSIONS = cloudinit_versions()
UNAVAILABLE = sandbox_unavailable()
# Never skipped: a missing cloud-init or sandbox fails loudly, so CI cannot go
# green without having run the real thing.
pytestmark = pytest.mark.cloudinit


# ----------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------


def _host_state() -> Dict[str, Any]:
    """Everything of ours a leaking sandbox could leave on the real host."""
    ours = sorted(
        os.path.join(dirpath, name)
        for dirpath, dirnames, filenames in os.walk(UNIT_DIR)
        for name in dirnames + filenames
        if "hostrouting" in name
    )
    watched = [
        "/etc/cloudinit-hostrouting",
        PROTOS,
        "/etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg",
        "/etc/cloud/cloud.cfg.d/90_sandbox.cfg",
        "/etc/cloud/cloud-init.disabled",
        "/var/lib/cloud",
        "/var/log/cloud-init.log",
    ]
    return {"unit_dir": ours, **{p: os.path.lexists(p) for p in watched}}


# Taken at import, before any sandbox exists (module-scoped boots run before a
# test's own fixtures, so a per-test "before" could already include a leak).
HOST_BASELINE = _host_state()


@pytest.fixture(autouse=True)
def host_untouched() -> Iterator[None]:
    """Sandbox leak check after every test: the host's /etc and /var are as at import."""
    yield
    after = _host_state()
    assert after["unit_dir"] == [], f"hostrouting files in the host's {UNIT_DIR}: {after}"
    assert after == HOST_BASELINE


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """The distribution pip-installed (not editable), as an image would have it."""
    base = Path(tempfile.mkdtemp(prefix="ci-real-site-"))
    try:
        yield install_package(base / "site")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def cloudinit(request: pytest.FixtureRequest) -> CloudInit:
    """Each supported cloud-init version in turn."""
    if UNAVAILABLE is not None:
        pytest.fail(f"cannot build the cloud-init sandbox: {UNAVAILABLE}")
    found = VERSIONS[request.param]
    if found is None:
        pytest.fail(f"cloud-init {request.param} not found (run scripts/setup-dev as root)")
    return found


@pytest.fixture
def new_sandbox(cloudinit: CloudInit, site: Path) -> Iterator[Callable[[], Sandbox]]:
    """Factory of sandboxes for the running version; all are removed afterwards."""
    made: List[Path] = []

    def make() -> Sandbox:
        base = Path(tempfile.mkdtemp(prefix=f"ci-real-{cloudinit.version}-"))
        made.append(base)
        return Sandbox(base, cloudinit, site)

    yield make
    for base in made:
        shutil.rmtree(base, ignore_errors=True)


class Boot:
    """One sandboxed boot's observations, plus the systemctl calls it made."""

    def __init__(self, data: Dict[str, Any], calls: List[Tuple[str, List[str]]]):
        self.data = data
        self.calls = [call for _, call in calls]
        self.ran = {path for path, _ in calls}
        self.tree: Dict[str, Dict[str, Any]] = data["tree"]
        self.log: str = data["cloud_init_log"]

    def text(self, path: str) -> str:
        entry = self.tree.get(path)
        assert entry is not None and entry["type"] == "file", f"{path} not written"
        return str(entry["text"])

    def ours(self) -> Dict[str, Dict[str, Any]]:
        """Every entry the module may have written (its config dir, units, drop-ins).

        The enable-module file in /etc/cloud/cloud.cfg.d is the image's, not the module's.
        """
        return {p: e for p, e in self.tree.items()
                if "hostrouting" in p and not p.startswith("/etc/cloud/")}

    def stage_rcs(self) -> Dict[str, Any]:
        return {s["stage"]: s["rc"] for s in self.data["stages"]}

    def status_line(self, key: str) -> str:
        for line in self.data["status"]["stdout"].splitlines():
            if line.startswith(f"{key}:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no {key!r} in status output:\n{self.data['status']['stdout']}")

    def log_lines(self, *needles: str) -> List[str]:
        return [ln for ln in self.log.splitlines() if any(n in ln for n in needles)]


def boot(sandbox: Sandbox, extra: Any = None) -> Boot:
    """Boot once; attribute to it only the systemctl calls it made."""
    before = len(sandbox.systemctl_calls())
    data = sandbox.boot(extra)
    return Boot(data, sandbox.systemctl_calls()[before:])


def _prepare_ok(first: Boot) -> None:
    for step in first.data["prepare"]:
        assert step["rc"] == 0, step
    assert "enabled: wrote /etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg" in (
        first.data["prepare"][0]["stdout"]
    )


def _assert_no_deprecations_or_tracebacks(b: Boot) -> None:
    # 25.1 logs "Config modules with a `log` parameter is deprecated" without
    # naming the module, so any deprecation line at all counts against us; the
    # sandbox's module lists are short enough that nothing else emits one.
    assert b.log_lines("DEPRECATED", "deprecated", "Deprecated") == []
    assert b.log_lines("Traceback") == []


@pytest.fixture(scope="module")
def lifecycle(cloudinit: CloudInit, site: Path) -> Iterator[Dict[str, Boot]]:
    """One disk, three boots: first boot, a reboot, then a new instance-id and config.

    Module-scoped because the three boots are one story; each test below
    asserts one chapter of it.
    """
    base = Path(tempfile.mkdtemp(prefix=f"ci-real-life-{cloudinit.version}-"))
    try:
        sandbox = Sandbox(base, cloudinit, site)
        sandbox.seed("iid-one", VALID_STRICT)
        first = boot(sandbox, extra=[[cloudinit.entry, "schema", "--system"]])
        # After the reboot, force the module to run again on the same instance,
        # as `cloud-init single` does for an operator: same config, same files.
        second = boot(sandbox, extra=[[cloudinit.entry, "single", "--name", "host_routing",
                                       "--frequency", "always"]])
        sandbox.seed("iid-two", CHANGED_WARN)
        third = boot(sandbox)
        yield {"first": first, "second": second, "third": third}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------
# Valid config: first boot, reboot, new instance
# ----------------------------------------------------------------------------


def test_first_boot_writes_units_dropin_config_and_queues_without_blocking(
    lifecycle: Dict[str, Boot], cloudinit: CloudInit
) -> None:
    """Real user-data (STRICT, routes with and without gateway/dev) reaches the module.

    Proves discovery through the shim on sys.path, the handle signature each
    version calls, the files and enablement links, that the config file is the
    normalised config, and that systemctl is only reloaded and queued, from the
    init stage, never a blocking start.
    """
    first = lifecycle["first"]
    _prepare_ok(first)
    # cloud-init keeps PATH: the module's run(["systemctl", ...]) found the
    # stand-in by PATH lookup, not through the bind mount over /usr/bin/systemctl.
    assert first.data["which_systemctl"].endswith("/standin/systemctl")
    assert first.ran == {first.data["which_systemctl"]}
    assert all(rc == 0 for rc in first.stage_rcs().values()), first.data["stages"]
    # Imported as the top-level shim from the pip-installed directory.
    assert first.log_lines("Running module host_routing (<module 'cc_host_routing' from ")
    assert first.log_lines("config-host_routing ran successfully")

    # The units run, without site, unit.py of the very copy cloud-init imported.
    shim_line = first.log_lines("Running module host_routing (<module 'cc_host_routing' from ")[0]
    site_dir = shim_line.split(" from '", 1)[1].rsplit("/cc_host_routing.py", 1)[0]
    for path in OUR_UNIT_PATHS:
        unit = first.text(path)
        assert (f"ExecStart=/usr/bin/python3 -I -S {site_dir}/cloudinit_hostrouting/unit.py "
                in unit), (site_dir, unit)
        assert f"--config {CONFIG}" in unit
        for user_value in ("10.0.5.0", "10.96.0.0", "172.16.1.2", "eth0"):
            assert user_value not in unit, f"user data in {path}"
    for link, unit_path in zip(WANTS_LINKS, OUR_UNIT_PATHS):
        assert first.tree[link]["type"] == "link"
        assert first.tree[link]["target"] == unit_path

    dropin = first.text(NSPAWN_DROPIN)
    assert f"Requires={STATIC} {CHECK}\n" in dropin
    assert f"After={STATIC} {CHECK}\n" in dropin
    assert "Wants=" not in dropin

    raw = yaml.safe_load(VALID_STRICT)["host_routing"]
    written = first.text(CONFIG)
    assert written == parse(raw).to_json()
    normalised = json.loads(written)["host_routing"]
    assert normalised["route_overlap"] == {
        "mode": "STRICT", "expected_cidrs": ["10.0.5.0/24", "10.96.0.0/12"]}
    assert normalised["static_routes"] == {"enabled": True, "routes": [
        {"destination": "10.0.5.0/24", "gateway": "172.16.1.2", "dev": "eth0", "metric": 100},
        {"destination": "10.96.0.0/12"},
    ]}
    assert normalised["gate_units"] == ["systemd-nspawn@.service"]
    # Our route protocol is named for iproute2 (`ip route show proto hostrouting`).
    assert "\thostrouting\n" in first.text(PROTOS)

    # Atomic writes leave no temporary files behind; systemd warns about
    # executable or world-writable unit files.
    assert [p for p in first.ours() if ".tmp" in os.path.basename(p)] == []
    for path in [*OUR_UNIT_PATHS, NSPAWN_DROPIN, CONFIG]:
        assert first.tree[path]["mode"] == 0o644, path

    assert first.calls == EXPECTED_CALLS
    assert first.data["iid"] == "iid-one"
    assert "/var/lib/cloud/instances/iid-one/sem/config_host_routing" in first.data["sem"]
    _assert_no_deprecations_or_tracebacks(first)


def test_first_boot_status_per_version(lifecycle: Dict[str, Boot], cloudinit: CloudInit) -> None:
    """What ``cloud-init status --long`` really says after a good first boot.

    22.4 accepts the unknown top-level key silently: done, exit 0.  25.1 and
    26.2 (as every cloud-init from 23.4 on, NOTES §7) log a schema warning for
    ``host_routing`` (no third-party schema hook, upstream issue #5558), so
    status is done but extended_status is "degraded done" and the exit code
    is 2: health checks demanding 0 trip on it (NOTES §3).
    ``cloud-init schema --system`` shows the cause.  Status reports
    "enabled-by-sysvinit" because the sandbox has no /run/systemd/system.
    """
    first = lifecycle["first"]
    assert first.status_line("status") == "done"
    schema = first.data["extra"][0]
    if cloudinit.version == "22.4":
        assert first.data["status"]["rc"] == 0
        assert first.log_lines("schema.py[WARNING]") == []
        assert schema["rc"] == 0, schema
    else:
        assert first.data["status"]["rc"] == 2
        assert first.status_line("extended_status") == "degraded done"
        assert "cloud-config failed schema validation" in first.data["status"]["stdout"]
        assert schema["rc"] == 1
        assert "'host_routing' was unexpected" in schema["stdout"] + schema["stderr"]


def test_reboot_same_instance_changes_nothing(lifecycle: Dict[str, Boot]) -> None:
    """Per-instance: a reboot (fresh /run, same disk) does not re-run the module.

    Proves the semaphore is honoured by the boot stages, and that even a forced
    re-run with the same config (``cloud-init single --frequency always``) is
    idempotent: every file we wrote keeps its inode and mtime, and systemctl is
    not called again.
    """
    first, second = lifecycle["first"], lifecycle["second"]
    assert all(rc == 0 for rc in second.stage_rcs().values()), second.data["stages"]
    assert second.data["iid"] == "iid-one"
    assert second.log_lines("config-host_routing already ran (freq=once-per-instance)")
    single = second.data["extra"][0]
    assert single["rc"] == 0, single
    # The module ran exactly once this boot: in `single`, and found nothing to do.
    assert len(second.log_lines("module.py[")) == 1
    assert second.log_lines("host_routing: units already up to date")
    assert second.ours() == first.ours()
    assert second.calls == []
    _assert_no_deprecations_or_tracebacks(second)


def test_new_instance_rewrites_and_removes_the_old_dropin(lifecycle: Dict[str, Boot]) -> None:
    """A new instance-id with a changed config (WARN, gate kubelet.service).

    Proves the module runs again, rewrites the config, removes the
    systemd-nspawn@ drop-in it wrote earlier (manifest), writes a WARN drop-in
    (Wants=, not Requires=) for the new gate unit, leaves the unchanged units
    alone (same inode and mtime: no user data in them), and queues again.
    """
    second, third = lifecycle["second"], lifecycle["third"]
    assert all(rc == 0 for rc in third.stage_rcs().values()), third.data["stages"]
    assert third.data["iid"] == "iid-two"
    assert "/var/lib/cloud/instances/iid-two/sem/config_host_routing" in third.data["sem"]

    raw = yaml.safe_load(CHANGED_WARN)["host_routing"]
    assert third.text(CONFIG) == parse(raw).to_json()
    assert json.loads(third.text(CONFIG))["host_routing"]["route_overlap"]["mode"] == "WARN"
    assert NSPAWN_DROPIN not in third.tree
    dropin = third.text(KUBELET_DROPIN)
    assert f"Wants={STATIC} {CHECK}\n" in dropin
    assert f"After={STATIC} {CHECK}\n" in dropin
    assert "Requires=" not in dropin
    manifest = json.loads(third.text(MANIFEST))
    assert KUBELET_DROPIN in manifest and NSPAWN_DROPIN not in manifest
    for path in OUR_UNIT_PATHS + WANTS_LINKS:
        assert third.tree[path] == second.tree[path], f"{path} rewritten without a change"

    assert third.calls == EXPECTED_CALLS
    _assert_no_deprecations_or_tracebacks(third)


# ----------------------------------------------------------------------------
# No config, invalid config
# ----------------------------------------------------------------------------


def test_without_host_routing_nothing_is_written(new_sandbox: Callable[[], Sandbox]) -> None:
    """No ``host_routing`` key: cloud-init skips the module (activate_by_schema_keys).

    Proves nothing of ours is written, systemctl is never called, no semaphore
    is taken (so adding the key on a later instance still works), and status is
    a clean "done" on both versions (no schema warning without our key).
    """
    sandbox = new_sandbox()
    sandbox.seed("iid-none", NO_HOST_ROUTING)
    b = boot(sandbox)
    _prepare_ok(b)
    assert all(rc == 0 for rc in b.stage_rcs().values()), b.data["stages"]
    # Other modules without their keys are skipped in the same line.
    assert re.search(r"Skipping modules '([^']*,)?host_routing(,[^']*)?' because no applicable "
                     r"config", b.log)
    assert b.ours() == {}
    assert not any(p.startswith("/etc/cloudinit-hostrouting") for p in b.tree)
    assert b.calls == []
    assert not any(p.endswith("/config_host_routing") for p in b.data["sem"])
    assert b.status_line("status") == "done"
    assert b.data["status"]["rc"] == 0
    _assert_no_deprecations_or_tracebacks(b)


def test_invalid_warn_config_writes_nothing_and_reports_the_path(
    new_sandbox: Callable[[], Sandbox]
) -> None:
    """Invalid ``host_routing`` (gateway 'not-an-ip') in WARN mode.

    Proves validation happens before any write: nothing of ours on disk, no
    systemctl call, cloud-init's log names the exact path and value, and
    status is error (the init stage reports the module failure).
    """
    sandbox = new_sandbox()
    sandbox.seed("iid-bad-warn", INVALID_WARN)
    b = boot(sandbox)
    assert b.log_lines(ERROR_PATH)
    assert any("not-an-ip" in line for line in b.log_lines(ERROR_PATH))
    assert b.stage_rcs()["init"] != 0
    assert b.ours() == {}
    assert b.calls == []
    # cloud-init takes the per-instance semaphore before calling handle, so the
    # failed run is not retried on this instance: a fix needs a new instance-id.
    assert "/var/lib/cloud/instances/iid-bad-warn/sem/config_host_routing" in b.data["sem"]
    assert b.status_line("status") == "error"
    assert b.data["status"]["rc"] == 1
    assert ERROR_PATH in b.data["status"]["stdout"]


def test_invalid_strict_config_fails_closed(new_sandbox: Callable[[], Sandbox]) -> None:
    """Invalid ``host_routing`` that asks for STRICT: the module fails closed.

    Proves the units and a Requires= drop-in for every valid gate unit are
    written and queued, the config file holds the error (never the raw input,
    which may not even be serialisable), status is error,
    and what the units run (ExecStart) fails with the same path-named message,
    so gated units never start until the user-data is fixed.
    """
    sandbox = new_sandbox()
    sandbox.seed("iid-bad-strict", INVALID_STRICT)
    # Each unit's own ExecStart= line, word for word, as written at this boot.
    check = ["/bin/sh", "-c", f"exec $(sed -n 's/^ExecStart=//p' {UNIT_DIR}/{CHECK}) "
             "--run-dir /run/cloudinit-hostrouting"]
    apply = ["/bin/sh", "-c", f"exec $(sed -n 's/^ExecStart=//p' {UNIT_DIR}/{STATIC})"]
    b = boot(sandbox, extra=[apply, check])
    assert b.log_lines(ERROR_PATH)
    assert b.log_lines("failing closed")
    assert b.stage_rcs()["init"] != 0

    for path in OUR_UNIT_PATHS:
        assert "ExecStart=/usr/bin/python3 -I -S /" in b.text(path)
        assert "/cloudinit_hostrouting/unit.py " in b.text(path)
    for link in WANTS_LINKS:
        assert b.tree[link]["type"] == "link"
    for dropin in (NSPAWN_DROPIN, KUBELET_DROPIN):
        text = b.text(dropin)
        assert f"Requires={STATIC} {CHECK}\n" in text
        assert f"After={STATIC} {CHECK}\n" in text
    stored = json.loads(b.text(CONFIG))["host_routing_failed_closed"]["error"]
    assert any(ERROR_PATH in line and "not-an-ip" in line for line in stored), stored
    assert b.calls == EXPECTED_CALLS

    assert b.status_line("status") == "error"
    assert b.data["status"]["rc"] == 1
    for unit_run in b.data["extra"]:
        assert unit_run["rc"] == 2, unit_run
        assert ERROR_PATH in unit_run["stderr"], unit_run
