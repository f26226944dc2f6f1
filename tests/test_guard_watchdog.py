"""systemd's watchdog: the guard's loop pings it, and a loop that hangs stops the pings.

The supervisor here is a real AF_UNIX datagram socket the test binds, passed
to the guard the way systemd passes its own (NOTIFY_SOCKET, WATCHDOG_USEC and
WATCHDOG_PID, the last one the guard's own pid).  The hang is real too: the
guard's test-only STALL_ENV points at a FIFO, so its next reconcile blocks in
read(2) until the test closes the FIFO's other end, while its event thread
keeps running.  SIGSTOP would not do: it stops every thread, so a pinger on a
timer thread (the design this rules out) would fall silent as well.  That
systemd then kills and restarts the guard is shown under a real systemd in
tests/deb/test_guard_watchdog_boot.py.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from netns import CLUSTER_CIDR, NDHost
from test_guard_netns import GuardProcess, wait_for, write_config

from cloudinit_hostrouting.guard import STALL_ENV, Watchdog
from cloudinit_hostrouting.render import guard_unit

INTERVAL_USEC = 1_000_000  # so the guard pings about every 0.25 s
# Long enough for a dozen pings of a live loop; silence over it means no pinger runs.
SILENCE_S = 4 * INTERVAL_USEC / 1e6


class NotifySocket:
    """Stands in for systemd's notify socket: the datagrams the guard sends, in order."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout: float) -> Optional[str]:
        """The next datagram, or None if none comes within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            return None

    def drain(self) -> List[str]:
        """Every datagram already sent, without waiting."""
        got = []
        while (msg := self.recv(0.001)) is not None:
            got.append(msg)
        return got

    def collect(self, pings: int, limit: float = 20.0) -> List[str]:
        """Datagrams until ``pings`` WATCHDOG=1 arrived; fail after a generous ``limit``."""
        got: List[str] = []
        end = time.monotonic() + limit
        while got.count("WATCHDOG=1") < pings:
            assert time.monotonic() < end, f"only {got} in {limit} s"
            msg = self.recv(0.1)
            if msg is not None:
                got.append(msg)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.fixture
def fixed_host(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    host = NDHost()
    try:
        cfg = write_config(tmp_path, auto=False)
        assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
        yield {"host": host, "cfg": cfg}
    finally:
        host.close()


def watched(notify: NotifySocket, **extra: str) -> Dict[str, str]:
    return {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(INTERVAL_USEC), **extra}


def test_ready_then_regular_watchdog_pings(fixed_host: Dict[str, Any], tmp_path: Path,
                                           notify: NotifySocket) -> None:
    guard = GuardProcess(fixed_host["host"], fixed_host["cfg"], tmp_path / "run",
                         env=watched(notify), pid_env="WATCHDOG_PID")
    try:
        got = notify.collect(pings=8)
        assert got[0] == "READY=1" and set(got[1:]) == {"WATCHDOG=1"}, got
    finally:
        guard.stop()


@pytest.mark.parametrize("env", [{"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": ""}],
                         ids=["another-pid", "no-interval"])
def test_control_no_pings_when_the_watchdog_is_not_ours(
        fixed_host: Dict[str, Any], tmp_path: Path, notify: NotifySocket,
        env: Dict[str, str]) -> None:
    """Negative control: READY=1 comes, then silence, as sd_watchdog_enabled(3) decides.

    Shows the silence the stall test asserts is something this socket can
    observe, and that the guard honours WATCHDOG_PID as systemd means it.
    """
    guard = GuardProcess(fixed_host["host"], fixed_host["cfg"], tmp_path / "run",
                         env=watched(notify, **env))
    try:
        assert notify.recv(10) == "READY=1"
        assert notify.recv(SILENCE_S) is None
    finally:
        guard.stop()


def blocked_writer(fifo: Path, limit: float = 10.0) -> int:
    """The FIFO's write end, opened once a reader is blocked opening it (ENXIO before).

    Opening it lets that reader's open(2) return; its read(2) then blocks
    until this end is closed.
    """
    end = time.monotonic() + limit
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO or time.monotonic() > end:
                raise
        time.sleep(0.02)


def test_a_stalled_loop_stops_the_pings_and_they_resume_after(
        fixed_host: Dict[str, Any], tmp_path: Path, notify: NotifySocket) -> None:
    host = fixed_host["host"]
    fifo = tmp_path / "stall"
    guard = GuardProcess(host, fixed_host["cfg"], tmp_path / "run",
                         env=watched(notify, **{STALL_ENV: str(fifo)}), pid_env="WATCHDOG_PID")
    try:
        assert notify.collect(pings=2)[0] == "READY=1"
        os.mkfifo(fifo)
        host.ip("route", "del", CLUSTER_CIDR)  # the reconcile it triggers blocks on the FIFO
        writer = blocked_writer(fifo)
        # The loop is inside reconcile now (and stays there until the writer closes),
        # so whatever the socket holds was sent before; nothing may follow.
        notify.drain()
        assert notify.recv(SILENCE_S) is None, "pings while the loop was stuck"
        assert host.routes(CLUSTER_CIDR) == []  # it really is stuck: nothing restored
        assert guard.proc.poll() is None  # and alive: only systemd's watchdog would notice
        fifo.unlink()
        os.close(writer)  # read(2) returns: the reconcile, and the loop, go on
        assert notify.collect(pings=2) == ["WATCHDOG=1", "WATCHDOG=1"]
        wait_for(lambda: host.routes(CLUSTER_CIDR) != [], "route restored after the stall")
    finally:
        guard.stop()
    assert guard.proc.returncode == 0, "\n".join(guard.lines)


# --- the rules, without a kernel ----------------------------------------------------


@pytest.mark.parametrize("environ", [
    {}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "-1"}, {"WATCHDOG_USEC": "soon"},
    {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},
    {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "me"},
])
def test_the_watchdog_is_off_unless_systemd_asks_this_process(environ: Dict[str, str]) -> None:
    dog = Watchdog(environ, log=lambda _line: None)
    assert dog.period is None and dog.wait(0.0) == float("inf")


@pytest.mark.parametrize("pid", [None, "self"])
def test_the_watchdog_pings_every_quarter_interval(pid: Optional[str]) -> None:
    """The README's 7.5 s for WatchdogSec=30s: within the half systemd asks for."""
    environ = {"WATCHDOG_USEC": "30000000"}
    if pid:
        environ["WATCHDOG_PID"] = str(os.getpid())
    dog = Watchdog(environ, log=lambda _line: None)
    assert dog.period == 7.5


def test_alive_pings_only_when_due_and_reports_an_unreachable_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    lines: List[str] = []
    dog = Watchdog({"WATCHDOG_USEC": "4000000"}, log=lines.append)  # a ping per second
    try:
        dog.alive(100.0)
        dog.alive(100.5)  # not due yet
        assert dog.wait(100.5) == 0.5
        dog.alive(101.0)
        assert sock.drain() == ["WATCHDOG=1", "WATCHDOG=1"]
    finally:
        sock.close()
    os.unlink(sock.path)  # systemd gone: said once, not at every ping
    dog.alive(102.0)
    dog.alive(103.0)
    assert lines == ["guard: cannot reach systemd's notify socket for the watchdog"]


def test_the_unit_sets_the_watchdog_the_readme_documents() -> None:
    unit = guard_unit("/usr/bin/python3")
    assert re.findall(r"^WatchdogSec=(.*)$", unit, re.MULTILINE) == ["30s"]
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "`WatchdogSec=30s`" in readme and "every quarter of `WatchdogSec=` (7.5 s)" in readme
