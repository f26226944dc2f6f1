"""No stale verdict: when check-overlap cannot decide, it says "unknown", everywhere.

Each test first makes a real, decided OK verdict in an ND-isr namespace
(``route-overlap.ok`` and a status.json with ``"ok": true``), then breaks one
input (config missing, a directory, invalid, the one the module writes when it
fails closed, or netlink that cannot be opened) and runs the check again in the
same run directory.  The old verdict must be gone, ``route-overlap.unknown``
and status.json must say ``unknown`` with the reason, the exit code must be 2
(so a STRICT check unit fails and gated units stay blocked), and the JSON output
must say unknown too (NPD and Prometheus: test_monitoring.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
import yaml
from netns import CLUSTER_CIDR, ETH_GW, NDHost

VERDICT_FILES = ("route-overlap.ok", "route-overlap.detected", "route-overlap.unknown",
                 "status.json")
RAW_STRICT = {"route_overlap": {"mode": "STRICT", "expected_cidrs": [CLUSTER_CIDR]}}


def write_config(tmp_path: Path, fixed: bool = True) -> Path:
    body: Dict[str, Any] = json.loads(json.dumps(RAW_STRICT))
    if fixed:
        body["static_routes"] = {"enabled": True, "routes": [
            {"destination": CLUSTER_CIDR, "dev": "eth0", "gateway": ETH_GW}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"host_routing": body}))
    return path


def verdict(run_dir: Path) -> Tuple[List[str], Dict[str, Any]]:
    """The verdict files present, and status.json."""
    present = sorted(name for name in VERDICT_FILES if (run_dir / name).exists())
    return present, json.loads((run_dir / "status.json").read_text())


def decided_ok(host: NDHost, tmp_path: Path) -> Tuple[Path, Path]:
    """A real passing STRICT check in ``run_dir``: the verdict a broken run must not leave."""
    cfg, run_dir = write_config(tmp_path), tmp_path / "run"
    assert host.run_cli("apply-routes", "--config", str(cfg)).returncode == 0
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    present, status = verdict(run_dir)
    assert present == ["route-overlap.ok", "status.json"]
    assert (status["ok"], status["state"], status["reason"]) == (True, "ok", None)
    return cfg, run_dir


def _missing(tmp_path: Path, cfg: Path) -> List[str]:
    return ["--config", str(tmp_path / "gone.yaml")]


def _directory(tmp_path: Path, cfg: Path) -> List[str]:
    (tmp_path / "cfgdir").mkdir()
    return ["--config", str(tmp_path / "cfgdir")]


def _invalid(tmp_path: Path, cfg: Path) -> List[str]:
    cfg.write_text("host_routing: {route_overlap: {mode: STRICTLY}}\n")
    return ["--config", str(cfg)]


def _fail_closed(tmp_path: Path, cfg: Path) -> List[str]:
    """The config file the module itself writes for invalid STRICT user-data."""
    from cloudinit_hostrouting.config import ConfigError, parse
    from cloudinit_hostrouting.constants import CONFIG_PATH
    from cloudinit_hostrouting.module import fail_closed_plan

    raw = {"route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/33"]}}
    with pytest.raises(ConfigError) as err:
        parse(raw)
    (text,) = [e.text for e in fail_closed_plan(["systemd-nspawn@.service"], err.value)
               if e.path == CONFIG_PATH]
    cfg.write_text(text or "")
    return ["--config", str(cfg)]


def _no_netns(tmp_path: Path, cfg: Path) -> List[str]:
    return ["--config", str(cfg), "--netns", "hr-no-such-namespace"]


BREAKS: Dict[str, Tuple[Callable[[Path, Path], List[str]], str, Any]] = {
    # name: (break it, what the reason says, mode in status.json)
    "config missing": (_missing, "cannot read {tmp}/gone.yaml: No such file", None),
    "config is a directory": (_directory, "cannot read {tmp}/cfgdir: Is a directory", None),
    "config invalid": (_invalid, "{tmp}/cfg.yaml: invalid host_routing", None),
    "module's fail-closed config": (_fail_closed, "{tmp}/cfg.yaml: invalid host_routing", None),
    "netlink cannot be opened": (_no_netns, "cannot open rtnetlink", "STRICT"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_undecided_check_clears_the_old_verdict_and_says_unknown(
        name: str, host: NDHost, tmp_path: Path) -> None:
    cfg, run_dir = decided_ok(host, tmp_path)
    breaker, reason, mode = BREAKS[name]
    args = breaker(tmp_path, cfg)
    proc = host.run_cli("check-overlap", *args, "--run-dir", str(run_dir))
    assert proc.returncode == 2, proc.stdout + proc.stderr  # non-zero: STRICT keeps gates shut
    assert "Traceback" not in proc.stderr
    present, status = verdict(run_dir)
    assert present == ["route-overlap.unknown", "status.json"]
    expected = reason.format(tmp=tmp_path)
    assert expected in (run_dir / "route-overlap.unknown").read_text()
    assert status["state"] == "unknown" and status["ok"] is False
    assert expected in status["reason"]
    assert status["mode"] == mode
    assert (status["cidrs"], status["shadowed_ranges"], status["default_interface"]) == (
        [], None, None)


def test_json_output_reports_unknown_as_unknown(host: NDHost, tmp_path: Path) -> None:
    """The NPD and Prometheus formats are proven in test_monitoring.py."""
    _, run_dir = decided_ok(host, tmp_path)
    missing = str(tmp_path / "gone.yaml")
    proc = host.run_cli("check-overlap", "--config", missing, "--run-dir", str(run_dir),
                        "--json")
    assert proc.returncode == 2, proc.stderr
    status = json.loads(proc.stdout)
    assert (status["state"], status["ok"]) == ("unknown", False)
    assert status["reason"] == f"cannot read {missing}: No such file or directory"
    assert json.loads((run_dir / "status.json").read_text())["reason"] == status["reason"]


def test_decided_verdicts_carry_their_state(host: NDHost, tmp_path: Path) -> None:
    """The unknown tests' control: a decided check says ok or overlap, with no reason."""
    cfg = write_config(tmp_path)
    run_dir = tmp_path / "run"
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir", str(run_dir))
    assert proc.returncode == 1  # STRICT, shadowed: routes not applied yet
    present, status = verdict(run_dir)
    assert present == ["route-overlap.detected", "status.json"]
    assert (status["state"], status["ok"], status["reason"]) == ("overlap", False, None)
    assert status["cidrs"][0]["status"] == "overlap"
    decided_ok(host, tmp_path)


def test_a_check_killed_before_deciding_leaves_unknown(host: NDHost, tmp_path: Path) -> None:
    """The old verdict is gone before the check waits: killing it mid-wait leaves "unknown"."""
    _, run_dir = decided_ok(host, tmp_path)
    host.ip("route", "del", "default")  # the check now waits for DHCP, up to --wait
    cfg = write_config(tmp_path, fixed=False)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-m", "cloudinit_hostrouting",
         "check-overlap", "--config", str(cfg), "--run-dir", str(run_dir), "--wait", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "route-overlap.unknown").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "never cleared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    present, status = verdict(run_dir)
    assert present == ["route-overlap.unknown", "status.json"]
    assert status["state"] == "unknown"
    assert "started but did not decide" in status["reason"]


def test_guard_with_an_unreadable_config_says_unknown(tmp_path: Path) -> None:
    """The guard's markers and textfile lose their old verdict too (no namespace needed:
    the guard stops before it opens rtnetlink)."""
    run_dir, textfile = tmp_path / "run", tmp_path / "prom" / "hostrouting.prom"
    run_dir.mkdir()
    (run_dir / "route-overlap.ok").write_text("")
    (run_dir / "status.json").write_text('{"ok": true}\n')
    textfile.parent.mkdir()
    textfile.write_text("hostrouting_check_ok 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cloudinit_hostrouting", "guard", "--config",
         str(tmp_path / "gone.yaml"), "--run-dir", str(run_dir), "--textfile", str(textfile)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    present, status = verdict(run_dir)
    assert present == ["route-overlap.unknown", "status.json"]
    assert status["state"] == "unknown" and "gone.yaml" in status["reason"]
    assert 'hostrouting_check_state{state="unknown"} 1' in textfile.read_text()
    assert "hostrouting_check_ok 0" in textfile.read_text()
