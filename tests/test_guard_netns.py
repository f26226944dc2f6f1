"""The guard against the real kernel: restores, late IB shadows, flapping, fighting, signals.

The guard runs as its unit runs it (``python -m cloudinit_hostrouting guard``)
inside an ND-isr-shaped namespace.  Waits below are bounded polls for a state
to appear, never assertions about speed: the restore latency itself is
measured by the benchmarks (benchmarks/), where timing belongs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import pytest
import yaml
from netns import CLUSTER_CIDR, NDHost

EXPECTED = [CLUSTER_CIDR, "10.96.0.0/12"]


def write_config(tmp_path: Path, auto: bool, routes: bool = True) -> str:
    body: Dict[str, Any] = {
        "route_overlap": {"mode": "STRICT", "expected_cidrs": EXPECTED},
        "guard": {"enabled": True, "auto_mitigate": auto},
    }
    if routes:
        body["static_routes"] = {"enabled": True, "routes": [{"destination": CLUSTER_CIDR}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"host_routing": body}))
    return str(path)


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll until ``predicate`` holds; fail naming ``what`` after a generous bound."""
    end = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.02)


class GuardProcess:
    """The guard in a namespace, its output collected line by line.

    ``env`` adds to the guard's environment; ``pid_env`` names a variable set
    to the guard's own pid, as systemd sets WATCHDOG_PID (a shell exports its
    ``$$`` and execs ``ip netns exec``, which execs the guard: the same pid).
    Its markers always go to ``run_dir``, never the host's /run.
    """

    def __init__(self, host: NDHost, cfg: str, run_dir: Path,
                 env: Optional[Dict[str, str]] = None, pid_env: Optional[str] = None,
                 textfile: Optional[Path] = None, extra: Sequence[str] = ()):
        self.run_dir = run_dir
        self.textfile = textfile or run_dir / "hostrouting.prom"
        argv = ["ip", "netns", "exec", host.ns, sys.executable, "-m", "cloudinit_hostrouting",
                "guard", "--config", cfg, "--run-dir", str(run_dir), "--textfile",
                str(self.textfile), *extra]
        if pid_env:
            argv = ["sh", "-c", f'export {pid_env}=$$; exec "$@"', "sh", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=dict(os.environ, **(env or {})))
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: any("guard: watching" in ln for ln in self.lines)
                 or self.proc.poll() is not None, "guard ready")
        assert self.proc.poll() is None, "\n".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def status(self) -> Dict[str, Any]:
        return json.loads((self.run_dir / "status.json").read_text())

    def cpu_seconds(self) -> float:
        """CPU time of the guard (`ip netns exec` execs it in place: same pid)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)  # every line the guard wrote is in self.lines


@pytest.fixture
def guard_factory(tmp_path: Path) -> Iterator[Callable[..., GuardProcess]]:
    started: List[GuardProcess] = []

    def start(host: NDHost, cfg: str, **kwargs: Any) -> GuardProcess:
        g = GuardProcess(host, cfg, tmp_path / "run", **kwargs)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def test_restores_a_deleted_route(host: NDHost, tmp_path: Path, guard_factory: Any) -> None:
    cfg = write_config(tmp_path, auto=False)
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    guard = guard_factory(host, cfg)
    host.ip("route", "del", CLUSTER_CIDR)
    wait_for(lambda: host.routes(CLUSTER_CIDR) != [], "route restored")
    assert host.route_get_dev("10.0.5.1") == "eth0"
    wait_for(lambda: any("guard: restored 10.0.5.0/24 via 10.1.0.1 dev eth0" in ln
                         for ln in guard.lines), "restore logged")


def test_late_ib_shadow_flips_markers_metrics_and_logs(
        tmp_path: Path, guard_factory: Any) -> None:
    host = NDHost(ib=False)  # ib0 gets its /16 later, as from the Azure guest agent
    try:
        cfg = write_config(tmp_path, auto=False)
        guard = guard_factory(host, cfg)
        assert guard.status()["ok"] is True
        host.add_ib("10.96.200.5/16")
        wait_for(lambda: (guard.run_dir / "route-overlap.detected").exists(), "marker flips")
        assert not (guard.run_dir / "route-overlap.ok").exists()
        lines = (guard.run_dir / "route-overlap.detected").read_text().splitlines()
        assert lines == ["OVERLAP: expected CIDR 10.96.0.0/12 (probe 10.96.0.1) routes via "
                         "ib0, expected eth0"]
        wait_for(lambda: any("SHADOWED 10.96.0.0/12: 10.96.0.0/16 goes via ib0 (route: "
                             "10.96.0.0/16 dev ib0 proto kernel scope link)" in ln
                             for ln in guard.lines), "culprit logged")
        wait_for(lambda: 'hostrouting_cidr_ok{cidr="10.96.0.0/12",family="ipv4"} 0'
                 in guard.textfile.read_text(), "metrics flip")
        assert "hostrouting_shadowed_ranges 1" in guard.textfile.read_text()
    finally:
        host.close()


def test_auto_mitigation_installs_and_later_removes_tagged_routes(
        tmp_path: Path, guard_factory: Any) -> None:
    host = NDHost(ib=False)
    try:
        cfg = write_config(tmp_path, auto=True, routes=False)
        guard = guard_factory(host, cfg)
        host.add_ib("10.96.200.5/16")
        wait_for(lambda: host.route_get_dev("10.96.200.1") == "eth0", "auto-mitigation")
        auto = [r["dst"] for r in host.routes("proto", "215")]
        assert auto == ["10.96.0.0/17", "10.96.128.0/17"]  # split: never replace ib0's /16
        wait_for(lambda: (guard.run_dir / "route-overlap.ok").exists(), "markers back to ok")
        # The kernel's own connected route is untouched.
        assert host.routes("10.96.0.0/16")[0]["dev"] == "ib0"

        host.ip("addr", "flush", "dev", "ib0")  # the cause goes away...
        wait_for(lambda: host.routes("proto", "215") == [], "auto routes removed")
        assert any("removed auto route 10.96.0.0/17" in ln for ln in guard.lines)
    finally:
        host.close()


def test_flapping_link_keeps_guard_sane_and_cpu_bounded(
        host: NDHost, tmp_path: Path, guard_factory: Any) -> None:
    cfg = write_config(tmp_path, auto=True)
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    guard = guard_factory(host, cfg)
    cpu_before = guard.cpu_seconds()
    for _ in range(50):  # 50 flaps in about 5 s
        host.ip("link", "set", "ib0", "down")
        host.ip("link", "set", "ib0", "up")
        time.sleep(0.1)
    wait_for(lambda: guard.status()["ok"] is True and
             host.route_get_dev("10.0.5.1") == "eth0", "settled after flapping")
    assert guard.proc.poll() is None, "\n".join(guard.lines)
    used = guard.cpu_seconds() - cpu_before
    # Debounced and spaced to at most 5 reconciles/s: far below one core for 5 s.
    assert used < 2.5, f"guard used {used:.2f}s CPU during 5 s of flapping"
    assert not any("Traceback" in ln for ln in guard.lines)


def test_backs_off_instead_of_fighting_another_daemon(
        host: NDHost, tmp_path: Path, guard_factory: Any) -> None:
    cfg = write_config(tmp_path, auto=False)
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    guard = guard_factory(host, cfg)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # a rival that deletes our route on sight
        host.ip("route", "del", CLUSTER_CIDR, check=False)
        time.sleep(0.02)
    restores = sum("guard: restored" in ln for ln in guard.lines)
    assert any("backing off" in ln for ln in guard.lines), "\n".join(guard.lines)
    assert restores < 20, f"{restores} restores in 4 s: the guard fought instead of backing off"


def test_stopping_the_guard_leaves_routes(tmp_path: Path, guard_factory: Any) -> None:
    host = NDHost(ib=False)
    try:
        cfg = write_config(tmp_path, auto=True)
        assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
        guard = guard_factory(host, cfg)
        host.add_ib("10.96.200.5/16")
        wait_for(lambda: len(host.routes("proto", "215")) == 2, "auto routes")
        before = host.routes()
        guard.stop()
        assert guard.proc.returncode == 0, "\n".join(guard.lines)
        assert guard.lines[-1] == "guard: stopping; routes are left as they are"
        assert host.routes() == before
    finally:
        host.close()


def test_check_overlap_prometheus_and_npd_formats(host: NDHost, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, auto=False)
    run_dir = str(tmp_path / "run")
    prom = host.run_cli("check-overlap", "--config", cfg, "--run-dir", run_dir,
                        "--format", "prometheus")
    assert prom.returncode == 1  # STRICT
    assert 'hostrouting_cidr_ok{cidr="10.0.5.0/24",family="ipv4"} 0' in prom.stdout
    assert 'hostrouting_cidr_ok{cidr="10.96.0.0/12",family="ipv4"} 1' in prom.stdout
    assert "hostrouting_check_ok 0" in prom.stdout
    assert "# TYPE hostrouting_last_check_timestamp_seconds gauge" in prom.stdout

    npd = host.run_cli("check-overlap", "--config", cfg, "--run-dir", run_dir, "--format", "npd")
    assert (npd.returncode, npd.stdout.strip()) == (
        1, "10.0.5.0/24 via ib0, expected eth0 (1 range(s))")
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    npd = host.run_cli("check-overlap", "--config", cfg, "--run-dir", run_dir, "--format", "npd")
    assert (npd.returncode, npd.stdout.strip()) == (0, "routes OK")
    bad = tmp_path / "bad.yaml"
    bad.write_text("host_routing: {route_overlap: {mode: nope}}\n")
    unknown = host.run_cli("check-overlap", "--config", str(bad), "--run-dir", run_dir,
                           "--format", "npd")
    assert unknown.returncode == 2  # NPD "Unknown"
