"""The units import neither typing, json nor datetime (issue 11): the real units, run.

Both units run for real in a namespace (routes installed, the overlap decided,
status.json and a marker written), as the rendered ExecStart= runs them
(``-I -S .../unit.py``) and through ``-m`` with site, and their ``-X importtime``
report is read.  The negative
control runs a copy of the package with one of those imports added to a module
both units load, and the same check must see it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest
from netns import CLUSTER_CIDR, ETH_GW, NDHost

from cloudinit_hostrouting.config import parse
from cloudinit_hostrouting.render import UNIT_SCRIPT_FLAGS

REPO = Path(__file__).resolve().parent.parent
# What the units no longer import, with the modules each one brings.
FORBIDDEN = {"typing", "_typing", "json", "json.decoder", "json.encoder", "json.scanner",
             "datetime", "_datetime"}
# How the units' interpreter is started, before the command: the rendered ExecStart= form
# (render.UNIT_SCRIPT_FLAGS and unit.py of the package copy run) and the human -m form.
FORMS = {"as ExecStart= renders": "script", "through -m with site": "module"}


def _entry(form: str, package_root: Path) -> List[str]:
    if form == "script":
        return [*UNIT_SCRIPT_FLAGS, "-X", "importtime",
                str(package_root / "cloudinit_hostrouting" / "unit.py")]
    return ["-X", "importtime", "-m", "cloudinit_hostrouting"]


def _config(tmp_path: Path) -> str:
    path = tmp_path / "host-routing.json"
    path.write_text(parse({
        "static_routes": {"enabled": True, "routes": [
            {"destination": CLUSTER_CIDR, "gateway": ETH_GW, "dev": "eth0"}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": [CLUSTER_CIDR]},
    }).to_json(), encoding="utf-8")
    return str(path)


def unit_imports(host: NDHost, package_root: Path, form: str, config: str,
                 run_dir: Path) -> Set[str]:
    """Every module the two units imported, run from ``package_root`` as they run."""
    seen: Set[str] = set()
    for command in (["apply-routes", "--config", config],
                    ["check-overlap", "--config", config, "--run-dir", str(run_dir)]):
        proc = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable,
                               *_entry(form, package_root), *command],
                              cwd=package_root, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        seen |= {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                 if line.startswith("import time:")}
    return seen


def test_bare_interpreter_imports_none_of_them() -> None:
    """Precondition: else the interpreter, not the package, would be what is measured."""
    for flags in ([], list(UNIT_SCRIPT_FLAGS)):
        proc = subprocess.run([sys.executable, *flags, "-X", "importtime", "-c", "pass"],
                              capture_output=True, text=True, timeout=60, check=True)
        assert not FORBIDDEN & {line.split("|")[-1].strip()
                                for line in proc.stderr.splitlines()}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_the_units_import_no_typing_json_or_datetime(host: NDHost, tmp_path: Path,
                                                      form: str) -> None:
    config, run_dir = _config(tmp_path), tmp_path / "run"
    seen = unit_imports(host, REPO, FORMS[form], config, run_dir)
    # The runs did their work: the kernel's route, the verdict and its status.json.
    assert host.route_get_dev("10.0.5.1") == "eth0"
    assert (run_dir / "route-overlap.ok").exists()
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status["ok"] is True and status["checked_at"].endswith("+00:00")
    assert {"cloudinit_hostrouting.jsonio", "cloudinit_hostrouting.records",
            "cloudinit_hostrouting.overlap", "cloudinit_hostrouting.routes"} <= seen
    assert FORBIDDEN & seen == set()


@pytest.mark.parametrize("module", ["typing", "json", "datetime"])
def test_negative_control_an_added_import_is_seen(host: NDHost, tmp_path: Path,
                                                  module: str) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(REPO / "cloudinit_hostrouting", copy / "cloudinit_hostrouting",
                    ignore=shutil.ignore_patterns("__pycache__"))
    constants = copy / "cloudinit_hostrouting" / "constants.py"
    constants.write_text(f"import {module}\n" + constants.read_text(encoding="utf-8"),
                         encoding="utf-8")
    seen = unit_imports(host, copy, "script", _config(tmp_path), tmp_path / "run")
    assert module in FORBIDDEN & seen
