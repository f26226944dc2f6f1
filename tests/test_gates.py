"""gate_units refusals, proven against systemd's own ordering with ``systemd-analyze verify``.

For each unit the parser refuses because gating it closes an ordering cycle,
the test does what the parser would not: it renders a real STRICT plan, copies
its gate drop-in into ``<unit>.d/``, and asks the host's systemd to build the
boot transaction (``verify <unit> multi-user.target``).  systemd must report
the cycle.  The same treatment for units the parser accepts must report none,
and the plain rendered tree must verify clean, so a cycle seen is our drop-in's.

Stub units stand in only where the host has no unit of that kind (a socket, a
local mount, a path unit, kubelet); they carry the default dependencies and
[Install] section a real one has, and are enabled the way a real one would be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest
import yaml
from cli_support import cli

from cloudinit_hostrouting.config import ConfigError, parse

SYSTEMD = "etc/systemd/system"
DROPIN = "50-hostrouting.conf"

STUBS = {
    "kubelet.service": "[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n"
                       "[Install]\nWantedBy=multi-user.target\n",
    "docker.service": "[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n"
                      "[Install]\nWantedBy=multi-user.target\n",
    "hrstub.service": "[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n",
    "hrstub.socket": "[Unit]\nDescription=stub\n[Socket]\nListenStream=/run/hrstub.sock\n"
                     "[Install]\nWantedBy=sockets.target\n",
    "hrstub.path": "[Unit]\nDescription=stub\n[Path]\nPathExists=/run/hrstub\n"
                   "Unit=hrstub.service\n[Install]\nWantedBy=paths.target\n",
    "mnt-hrstub.mount": "[Unit]\nDescription=stub\n[Mount]\nWhat=tmpfs\nWhere=/mnt/hrstub\n"
                        "Type=tmpfs\n[Install]\nWantedBy=local-fs.target\n",
}

# Refused by the parser, and systemd finds an ordering cycle once gated.
CYCLES = [
    "sysinit.target", "basic.target", "sockets.target", "local-fs.target",
    "network.target", "network-online.target",
    "systemd-networkd.service", "systemd-networkd-wait-online.service",
    "systemd-timesyncd.service", "kmod-static-nodes.service",
    "cloud-init-local.service", "cloud-init.service",
    "hrstub.socket", "hrstub.path", "mnt-hrstub.mount",
]
# Refused without a cycle: ours, cloud-init's later stages, access, shutdown.
REFUSED_OTHERWISE = [
    "hostrouting-guard.service", "hostrouting-static-routes.service",
    "cloud-config.service", "cloud-final.service", "ssh.service", "getty@tty1.service",
    "shutdown.target", "walinuxagent.service",
]
# Accepted, and no cycle.
ALLOWED = [
    "kubelet.service", "docker.service", "systemd-nspawn@.service", "machines.target",
    "multi-user.target", "remote-fs.target",
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real STRICT render (with the guard), plus enabled stubs, as systemd would see it."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: install systemd (scripts/setup-dev)",
                    pytrace=False)
    base = tmp_path_factory.mktemp("gates")
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump({"host_routing": {
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]},
        "gate_units": ["kubelet.service"], "guard": {"enabled": True}}}), encoding="utf-8")
    root = base / "root"
    proc = cli("render", "--config", str(config), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    stubs = base / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text, encoding="utf-8")
        wanted_by = text.partition("WantedBy=")[2].strip()
        if wanted_by:
            wants = root / SYSTEMD / f"{wanted_by}.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / name).symlink_to(stubs / name)
    machines = root / SYSTEMD / "machines.target.wants"
    machines.mkdir(parents=True, exist_ok=True)
    (machines / "systemd-nspawn@hrverify.service").symlink_to(
        "/lib/systemd/system/systemd-nspawn@.service")
    return root


def _verify(root: Path, unit: str) -> Tuple[int, List[str]]:
    """systemd-analyze verify of ``unit`` and the boot transaction, with our tree first."""
    stubs = root.parent / "stubs"
    prefix, at, suffix = unit.partition("@")
    name = f"{prefix}@hrverify{suffix}" if at and suffix.startswith(".") else unit
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{root / SYSTEMD}:{stubs}:", SYSTEMD_PAGER="cat")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", name, "multi-user.target"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout.splitlines()


def _gated(root: Path, unit: str) -> Path:
    """Copy the rendered STRICT drop-in onto ``unit``, as gate_units would have."""
    dropin_dir = root / SYSTEMD / f"{unit}.d"
    if unit != "kubelet.service":  # the one the render gated itself
        dropin_dir.mkdir()
        shutil.copy(root / SYSTEMD / "kubelet.service.d" / DROPIN, dropin_dir / DROPIN)
    return dropin_dir


def _refused(unit: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse({"gate_units": [unit]})
    [problem] = caught.value.problems
    assert problem.path == "host_routing.gate_units[0]" and problem.value == unit
    assert problem.fix.startswith("Fix:")
    return problem.message


def _exists(unit: str) -> bool:
    prefix, at, _ = unit.partition("@")
    template = f"{prefix}@.{unit.rsplit('.', 1)[1]}" if at else unit
    return unit in STUBS or any(os.path.exists(os.path.join(d, template))
                                for d in ("/lib/systemd/system", "/usr/lib/systemd/system"))


def test_the_rendered_boot_transaction_has_no_cycle(rendered: Path) -> None:
    """The control: without an extra drop-in, systemd sees no cycle at all."""
    rc, lines = _verify(rendered, "kubelet.service")
    assert not [line for line in lines if "cycle" in line], lines
    assert rc == 0, lines


@pytest.mark.parametrize("unit", CYCLES)
def test_refused_unit_really_closes_an_ordering_cycle(rendered: Path, unit: str) -> None:
    """The parser refuses it, and systemd agrees: gated, it is in an ordering cycle."""
    assert _exists(unit), f"{unit} is not on this host: scripts/setup-dev installs it"
    message = _refused(unit)
    assert "cannot be gated" in message or "cycle" in message, message
    dropin_dir = _gated(rendered, unit)
    try:
        _, lines = _verify(rendered, unit)
    finally:
        shutil.rmtree(dropin_dir)
    assert any("Found ordering cycle" in line for line in lines), lines


@pytest.mark.parametrize("unit", REFUSED_OTHERWISE)
def test_units_refused_for_other_reasons_say_why(unit: str) -> None:
    """Ours, cloud-init's, the way in to the node, shutdown: each refusal names its reason."""
    message = _refused(unit)
    assert any(word in message for word in ("our own", "cloud-init", "reach the node",
                                            "shutdown", "Azure agent")), message


def test_gating_shutdown_conflicts_with_our_units(rendered: Path) -> None:
    """shutdown.target: no cycle, but Requires= on units that Conflict= with it."""
    dropin_dir = _gated(rendered, "shutdown.target")
    try:
        _, lines = _verify(rendered, "shutdown.target")
    finally:
        shutil.rmtree(dropin_dir)
    assert any("conflicting jobs" in line for line in lines), lines


@pytest.mark.parametrize("unit", ALLOWED)
def test_allowed_unit_makes_no_cycle(rendered: Path, unit: str) -> None:
    """The negative control: accepted units, gated the same way, make no cycle."""
    assert _exists(unit) or unit.endswith(".target")
    assert parse({"gate_units": [unit]}).gate_units == (unit,)
    dropin_dir = _gated(rendered, unit)
    try:
        rc, lines = _verify(rendered, unit)
    finally:
        if unit != "kubelet.service":
            shutil.rmtree(dropin_dir)
    assert not [line for line in lines if "cycle" in line or "conflicting" in line], lines
    assert rc == 0, lines
