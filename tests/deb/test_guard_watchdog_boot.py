"""systemd's watchdog kills a guard whose loop hangs, and restarts it; a healthy guard stays.

The root's own systemd runs the guard from the installed .deb (PID 1 in
``systemd-nspawn``, as in test_units_boot.py, whose network setup this
reuses).  A drop-in shortens ``WatchdogSec=`` to 3 s and points the guard's
test-only stall knob at a FIFO.  The evidence unit then deletes our route: the
reconcile that follows blocks in read(2) on the FIFO, a real hang of the main
loop while the event thread lives on.  Once the guard is blocked the FIFO is
unlinked, so the restarted guard runs normally and puts the route back.

The control boots the same root without the FIFO: the guard handles the same
deletion, and over four watchdog intervals systemd never kills it, so its
pings reach systemd through the sandbox (AF_UNIX, ProtectSystem=strict).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import debroot
import pytest
from debroot import in_root, put
from test_units_boot import GUARD, NETSETUP, NETSETUP_UNIT

from cloudinit_hostrouting.guard import STALL_ENV

pytestmark = pytest.mark.deb

WATCHDOG_S = 3
FIFO = "/run/hr-stall/fifo"
CONFIG = """\
host_routing:
  static_routes:
    enabled: true
    routes: [{destination: 10.0.5.0/24, dev: eth0}]
  route_overlap: {mode: STRICT, expected_cidrs: [10.0.5.0/24]}
  guard: {enabled: true}
"""
GUARD_DROPIN = f"""\
[Service]
WatchdogSec={WATCHDOG_S}s
Environment={STALL_ENV}={FIFO}
# A SIGABRT'ed guard must not leave a core file anywhere.
LimitCORE=0
"""
EVIDENCE_UNIT = f"""\
[Unit]
Description=Stall the guard (or not), record what systemd did, then power off
After={GUARD} hr-netsetup.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hr-watchdog-evidence
[Install]
WantedBy=multi-user.target
"""
# Runs in the container.  Every wait is bounded; the verdict is for the test.
EVIDENCE = f"""\
#!/usr/bin/python3
import errno, json, os, subprocess, sys, time

GUARD, FIFO, WATCHDOG_S = "{GUARD}", "{FIFO}", {WATCHDOG_S}
STALL = os.path.exists("/etc/hr-stall")


def show():
    out = subprocess.run(["systemctl", "show", "-p", "MainPID,NRestarts,ActiveState", GUARD],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def until(predicate, limit):
    end = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def writer():
    try:
        return os.open(FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno != errno.ENXIO:
            raise


def our_route():
    return subprocess.run(["ip", "-4", "route", "show", "10.0.5.0/24", "proto", "214"],
                          capture_output=True, text=True).stdout.strip()


got = {{"stall": STALL}}
until(lambda: show()["ActiveState"] == "active", 60)
got["before"] = show()
if STALL:
    os.makedirs(os.path.dirname(FIFO), exist_ok=True)
    os.mkfifo(FIFO)
subprocess.run(["ip", "route", "del", "10.0.5.0/24"], check=True)
if STALL:
    fds = []
    got["blocked"] = until(lambda: (fd := writer()) is not None and not fds.append(fd), 30)
    os.unlink(FIFO)  # the restarted guard must not stall again
    got["restarted"] = until(lambda: show()["NRestarts"] != "0"
                             and show()["ActiveState"] == "active", 60)
    for fd in fds:
        os.close(fd)
got["route_back"] = until(lambda: our_route() != "", 30)
if not STALL:
    time.sleep(4 * WATCHDOG_S)  # four intervals in which a missed ping would be fatal
got["after"] = show()
got["route"] = our_route()
with open("/evidence/watchdog.json", "w") as out:
    json.dump(got, out)
with open("/evidence/journal-guard", "w") as out:
    subprocess.run(["journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-u", GUARD],
                   stdout=out)
subprocess.run(["systemctl", "--no-block", "poweroff"])
"""


def boot(suite: str, deb: Path, work: Path, stall: bool) -> Dict[str, Any]:
    with debroot.fresh_root(suite) as root:
        debroot.copy_in(root, deb, "/tmp/cloudinit-hostrouting.deb")
        for path, text, mode in (
                ("/tmp/c.yaml", CONFIG, 0o644),
                ("/usr/local/sbin/hr-netsetup", NETSETUP, 0o755),
                ("/usr/local/sbin/hr-watchdog-evidence", EVIDENCE, 0o755),
                ("/etc/systemd/system/hr-netsetup.service", NETSETUP_UNIT, 0o644),
                ("/etc/systemd/system/hr-watchdog-evidence.service", EVIDENCE_UNIT, 0o644),
                (f"/etc/systemd/system/{GUARD}.d/90-test.conf", GUARD_DROPIN, 0o644)):
            put(root, path, text, mode)
        if stall:
            put(root, "/etc/hr-stall", "")
        in_root(root, """
dpkg -i /tmp/cloudinit-hostrouting.deb >/dev/null
cloudinit-hostrouting render --config /tmp/c.yaml --root /
systemctl enable hr-netsetup.service hr-watchdog-evidence.service 2>/dev/null
systemctl mask console-getty.service systemd-firstboot.service 2>/dev/null
""")
        evidence = work / "evidence"
        proc = debroot.boot(root, evidence)
    assert (evidence / "watchdog.json").exists(), \
        f"the evidence unit never finished (rc={proc.returncode}):\n{proc.stdout[-4000:]}"
    got: Dict[str, Any] = json.loads((evidence / "watchdog.json").read_text())
    got["journal"] = (evidence / "journal-guard").read_text(errors="replace")
    return got


@pytest.mark.parametrize("suite", ["bookworm", "forky"])
def test_systemd_kills_a_hung_guard_and_restarts_it(package: Dict[str, Path], suite: str,
                                                    tmp_path: Path) -> None:
    got = boot(suite, package["deb"], tmp_path, stall=True)
    journal = got["journal"]
    assert got["blocked"], journal  # the loop really was stuck on the FIFO
    assert re.search(rf"{re.escape(GUARD)}: Watchdog timeout \(limit {WATCHDOG_S}s\)!",
                     journal), journal
    pid = got["before"]["MainPID"]
    assert re.search(rf"{re.escape(GUARD)}: Killing process {pid} \(python3\) with signal "
                     r"SIGABRT", journal), journal
    assert got["restarted"] and got["after"]["NRestarts"] == "1", got
    assert got["after"]["MainPID"] not in ("0", pid)
    assert journal.count("guard: watching 1 route(s)") == 2, journal
    # The restarted guard put back the route the stuck one never got to.
    assert got["route_back"] and "dev eth0" in got["route"], got


def test_control_a_healthy_guard_is_never_killed(package: Dict[str, Path],
                                                 tmp_path: Path) -> None:
    got = boot("bookworm", package["deb"], tmp_path, stall=False)
    journal = got["journal"]
    assert got["route_back"] and "dev eth0" in got["route"], journal
    assert got["after"]["NRestarts"] == "0" and got["after"]["ActiveState"] == "active", got
    assert got["after"]["MainPID"] == got["before"]["MainPID"]
    assert "Watchdog timeout" not in journal
    assert "guard: restored 10.0.5.0/24" in journal
