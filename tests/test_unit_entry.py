"""The boot units' exact command lines, run as rendered: ``PYTHON -I -S <pkg>/unit.py ...``.

Everything else runs the package through ``-m``; these tests run the words of
the rendered ``ExecStart=`` themselves, in a namespace built like an ND-isr
host, and check the three things the form promises (render.py, unit.py): the
unit works without ``site``, it runs the package that rendered it, and nothing
from the environment or the working directory reaches its imports.  Each has a
negative control that shows the check can fail.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from netns import NDHost

import cloudinit_hostrouting
from cloudinit_hostrouting import render
from cloudinit_hostrouting.config import parse

ROUTE = "10.0.5.0/24"
POISON_EXIT = 99


def _execstart(command: str) -> List[str]:
    """The words of the rendered unit's ExecStart= for ``command``, interpreter included."""
    unit = (render.static_unit if command == "apply-routes" else render.check_unit)(
        sys.executable)
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.split("=", 1)[1])


def _config(tmp_path: Path) -> Path:
    cfg = parse({"static_routes": {"enabled": True, "routes": [
        {"destination": ROUTE, "gateway": "10.1.0.1", "dev": "eth0"}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": [ROUTE]}})
    path = tmp_path / "host-routing.json"
    path.write_text(cfg.to_json(), encoding="utf-8")
    return path


def _poison(tmp_path: Path) -> Path:
    """A directory whose ``ipaddress`` and ``cloudinit_hostrouting`` exit 99 on import."""
    bad = tmp_path / "poison"
    (bad / "cloudinit_hostrouting").mkdir(parents=True)
    for name in ("ipaddress.py", "cloudinit_hostrouting/__init__.py"):
        (bad / name).write_text(f"raise SystemExit({POISON_EXIT})\n", encoding="utf-8")
    return bad


def _run(host: NDHost, argv: List[str], cwd: Path, env: Dict[str, str]
         ) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", host.ns, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_rendered_command_line_is_the_package_that_rendered_it() -> None:
    here = os.path.dirname(os.path.abspath(cloudinit_hostrouting.__file__))
    for command in ("apply-routes", "check-overlap"):
        words = _execstart(command)
        assert words[:4] == [sys.executable, "-I", "-S", os.path.join(here, "unit.py")]
        assert words[4] == command


def test_units_run_as_rendered_without_site_and_deaf_to_the_environment(
        host: NDHost, tmp_path: Path) -> None:
    """Both units, word for word, with a poisoned PYTHONPATH and working directory.

    apply-routes must install the route (read back from the kernel with ``ip``)
    and check-overlap, STRICT, must pass on it; ``-X importtime`` shows neither
    ``site`` nor ``runpy`` was imported.
    """
    config, run_dir, poison = _config(tmp_path), tmp_path / "run", _poison(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(poison))
    apply = _execstart("apply-routes")
    apply[apply.index("--config") + 1] = str(config)
    check = _execstart("check-overlap")
    check[check.index("--config") + 1] = str(config)
    check += ["--run-dir", str(run_dir)]

    assert host.route_get_dev("10.0.5.1") == "ib0"  # the shadow is there before
    done = _run(host, apply[:1] + ["-X", "importtime"] + apply[1:], poison, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.get("protocol") for r in host.routes(ROUTE)] in (["hostrouting"], ["214"])
    assert host.route_get_dev("10.0.5.1") == "eth0"
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "cloudinit_hostrouting.cli" in imported
    assert not imported & {"site", "runpy", "importlib.util"}, sorted(imported)

    verdict = _run(host, check, poison, env)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert (run_dir / "route-overlap.ok").exists()


def test_negative_controls_the_same_run_without_the_flags(host: NDHost, tmp_path: Path) -> None:
    """Without ``-I`` the poisoned PYTHONPATH wins, and ``-m`` imports site and runpy: the
    assertions above can fail."""
    config, poison = _config(tmp_path), _poison(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(poison))
    words = _execstart("apply-routes")
    words[words.index("--config") + 1] = str(config)
    without_isolation = [w for w in words if w != "-I"]
    assert _run(host, without_isolation, poison, env).returncode == POISON_EXIT

    plain = dict(os.environ)
    plain.pop("PYTHONPATH", None)
    repo = Path(cloudinit_hostrouting.__file__).resolve().parent.parent
    by_module = [sys.executable, "-X", "importtime", "-m", "cloudinit_hostrouting",
                 *words[words.index("apply-routes"):]]
    done = _run(host, by_module, repo, plain)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"site", "runpy"} <= imported
