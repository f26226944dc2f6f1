"""The guard cannot go deaf: lost rtnetlink events, a feed that cannot be re-made, a loop error.

Every failure here is real, made in the kernel or the file system, never mocked:

* ENOBUFS: the event socket's receive buffer is shrunk (the backend's test-only
  RCVBUF_ENV), the guard is stopped (SIGSTOP: it cannot read) while a flood of
  route and address changes overflows that buffer, and the changes that matter
  (our route deleted, a new IB /16 shadow) come last, so the kernel drops their
  notifications for sure.  Only a complete re-check after the loss can see them.
* A subscription that cannot be re-made: the same overflow, with the guard's
  file descriptor limit lowered (prlimit) so that no new socket can be opened.
* An error in the main loop: the run directory replaced by a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from netns import CLUSTER_CIDR, NDHost
from test_guard_netns import GuardProcess, wait_for, write_config

from cloudinit_hostrouting.pyroute2_backend import RCVBUF_ENV

SMALL_RCVBUF = {RCVBUF_ENV: "4096"}  # the kernel doubles it: ~10 notifications fit
LATE_SHADOW = "10.96.200.5/16"  # on ib0: shadows the expected 10.96.0.0/12
LOST = "guard: rtnetlink events were lost (ENOBUFS: No buffer space available); " \
       "subscribed again, re-checking everything"


def flood(host: NDHost, routes: int = 400, addresses: int = 40, then: str = "") -> None:
    """Many route and address notifications in one `ip -batch`, then ``then``'s commands."""
    lines = [f"route add blackhole 10.201.{i // 250}.{i % 250 + 1}/32" for i in range(routes)]
    lines += [f"address add 10.202.0.{i + 1}/32 dev eth0" for i in range(addresses)]
    subprocess.run(["ip", "-n", host.ns, "-batch", "-"], input="\n".join(lines) + "\n" + then,
                   text=True, check=True, timeout=60, capture_output=True)


@pytest.fixture
def fixed_host(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """An ND-isr host with our static route applied and the guard's config."""
    host = NDHost()
    try:
        cfg = write_config(tmp_path, auto=False)
        assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
        yield {"host": host, "cfg": cfg}
    finally:
        host.close()


def stopped(guard: GuardProcess) -> Any:
    """SIGSTOP the guard for a ``with`` block (it reads no event meanwhile); SIGCONT after."""
    class Stopped:
        def __enter__(self) -> None:
            os.kill(guard.proc.pid, signal.SIGSTOP)

        def __exit__(self, *exc: object) -> None:
            os.kill(guard.proc.pid, signal.SIGCONT)
    return Stopped()


def verdict_of(guard: GuardProcess) -> Dict[str, str]:
    return {c["cidr"]: c["status"] for c in guard.status()["cidrs"]}


def test_lost_events_are_recovered_with_a_complete_recheck(
        fixed_host: Dict[str, Any], tmp_path: Path) -> None:
    host = fixed_host["host"]
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run", env=SMALL_RCVBUF)
    try:
        assert verdict_of(guard) == {CLUSTER_CIDR: "ok", "10.96.0.0/12": "ok"}
        with stopped(guard):
            flood(host, then=f"route del {CLUSTER_CIDR}\n"
                             f"address add {LATE_SHADOW} dev ib0\n")
            assert host.routes(CLUSTER_CIDR) == []
        wait_for(lambda: LOST in guard.lines, "the loss logged", limit=20)
        wait_for(lambda: host.routes(CLUSTER_CIDR) != [], "our route restored", limit=20)
        wait_for(lambda: verdict_of(guard) == {CLUSTER_CIDR: "ok", "10.96.0.0/12": "overlap"},
                 "the verdict of the table as it is now", limit=20)
        assert host.route_get_dev("10.0.5.1") == "eth0"
        assert (guard.run_dir / "route-overlap.detected").read_text().splitlines() == [
            "OVERLAP: expected CIDR 10.96.0.0/12 (probe 10.96.0.1) routes via ib0, expected eth0"]
        # The changes' own notifications were dropped: the re-check found them.
        restored = next(i for i, ln in enumerate(guard.lines) if "guard: restored" in ln)
        assert guard.lines.index(LOST) < restored, "\n".join(guard.lines)
        # ... and the new subscription works: the next change is seen by its event.
        host.ip("route", "del", CLUSTER_CIDR)
        wait_for(lambda: sum("guard: restored" in ln for ln in guard.lines) == 2,
                 "restored again, through the new subscription")
        assert guard.proc.poll() is None
        assert not any("Traceback" in ln for ln in guard.lines)
    finally:
        guard.stop()


def test_control_without_an_overflow_nothing_is_lost(
        fixed_host: Dict[str, Any], tmp_path: Path) -> None:
    """Negative control: the same stop and changes with the default buffer lose nothing.

    So the loss line above is the kernel's ENOBUFS, not something the guard
    prints whenever it was stopped, and the restore here comes from the events.
    """
    host = fixed_host["host"]
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run")
    try:
        with stopped(guard):
            flood(host, routes=5, addresses=2, then=f"route del {CLUSTER_CIDR}\n")
        wait_for(lambda: host.routes(CLUSTER_CIDR) != [], "our route restored")
        wait_for(lambda: guard.status()["ok"] is True, "verdict ok")
        guard.stop()
        assert guard.proc.returncode == 0
        assert not any("were lost" in ln for ln in guard.lines), "\n".join(guard.lines)
    finally:
        guard.stop()


def test_a_feed_that_cannot_be_reopened_ends_the_guard_with_one_line(
        fixed_host: Dict[str, Any], tmp_path: Path) -> None:
    """Out of file descriptors when it must re-subscribe: exit 1 for Restart=, no old OK."""
    host = fixed_host["host"]
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run", env=SMALL_RCVBUF)
    try:
        assert (guard.run_dir / "route-overlap.ok").exists()
        with stopped(guard):
            # 0, 1 and 2 are taken: no new descriptor can be opened at all.
            subprocess.run(["prlimit", f"--pid={guard.proc.pid}", "--nofile=3:3"],
                           check=True, timeout=10)
            flood(host)
        assert guard.proc.wait(timeout=30) == 1
    finally:
        guard.stop()
    failed = [ln for ln in guard.lines if ln.startswith("guard: failed:")]
    assert failed == [
        "guard: failed: FeedError: the rtnetlink event socket failed (ENOBUFS: No buffer space "
        "available) and could not be re-opened: EMFILE: Too many open files; exiting for "
        "systemd to restart it"], "\n".join(guard.lines)
    assert guard.lines[-1] == failed[0]
    assert not any("Traceback" in ln for ln in guard.lines), "\n".join(guard.lines)
    # Writing "unknown" needs a descriptor; unlinking the old verdict does not.
    assert sorted(p.name for p in guard.run_dir.iterdir()) == []
    assert not guard.textfile.exists()


def test_an_error_in_the_loop_ends_the_guard_and_says_unknown(
        fixed_host: Dict[str, Any], tmp_path: Path) -> None:
    """The run directory replaced by a file: the next reconcile cannot write; exit 1."""
    host = fixed_host["host"]
    textfile = tmp_path / "prom" / "hostrouting.prom"
    textfile.parent.mkdir()
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run", textfile=textfile)
    try:
        assert "hostrouting_check_ok 1" in textfile.read_text()
        for path in guard.run_dir.iterdir():
            path.unlink()
        guard.run_dir.rmdir()
        guard.run_dir.write_text("not a directory\n")
        host.ip("route", "del", CLUSTER_CIDR)  # a reconcile: it restores, then cannot publish
        assert guard.proc.wait(timeout=30) == 1
    finally:
        guard.stop()
    assert guard.lines[-1].startswith("guard: failed: FileExistsError: "), "\n".join(guard.lines)
    assert guard.lines[-1].endswith("; exiting for systemd to restart it")
    assert not any("Traceback" in ln for ln in guard.lines)
    text = textfile.read_text()
    assert 'hostrouting_check_state{state="unknown"} 1' in text and "hostrouting_check_ok 0" in text
    assert host.routes(CLUSTER_CIDR) != []  # the restore itself had happened


def test_the_guard_status_names_the_failure(fixed_host: Dict[str, Any], tmp_path: Path) -> None:
    """status.json after a loop error says unknown, with the reason (run dir still usable).

    The error: the textfile's directory replaced by a file, so publishing the
    next verdict fails after the markers were written.
    """
    host = fixed_host["host"]
    textfile = tmp_path / "prom" / "hostrouting.prom"
    textfile.parent.mkdir()
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run", textfile=textfile)
    try:
        textfile.unlink()
        textfile.parent.rmdir()
        textfile.parent.write_text("not a directory\n")
        host.ip("route", "del", CLUSTER_CIDR)
        assert guard.proc.wait(timeout=30) == 1
    finally:
        guard.stop()
    status = json.loads((guard.run_dir / "status.json").read_text())
    assert (status["state"], status["ok"], status["mode"]) == ("unknown", False, "STRICT")
    assert status["reason"].startswith("the guard failed: FileExistsError: ")
    assert sorted(p.name for p in guard.run_dir.iterdir()) == [
        "route-overlap.unknown", "status.json"]
