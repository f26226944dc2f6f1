"""guard: keep routes right after boot, driven by rtnetlink events.

A oneshot at boot cannot see what happens next on a real ND-isr node: the
Azure guest agent adds the ib0 /16 up to a minute later, systemd-networkd drops
routes it did not configure when it reconfigures a link, IB drivers reload.
The guard subscribes to route, address and link events (no polling) and, after
each burst of events, reconciles:

1. re-installs any of our static routes that vanished;
2. re-runs the complete analysis (with the IPoIB routes the KVP pool announces,
   as check-overlap anticipates them, but never waiting for them) and rewrites
   the markers, status.json and, if configured, the node_exporter textfile;
3. with ``auto_mitigate``, routes every shadowed expected range via the default
   interface, tagged ``hostrouting-auto`` (proto 215) so exactly those routes
   are removed again when their cause goes away or the config changes.

Bursts are debounced, reconciles are spaced out, and a reconcile streak that
keeps changing routes (another daemon undoing ours) backs off exponentially,
with a log line, rather than fighting in a tight loop.  Stopping the guard
leaves every route as it is.

The guard must never go deaf while systemd shows it active.  Lost events
(ENOBUFS after a burst) make the feed subscribe anew and the guard re-check
everything; a feed that cannot be re-made, or any other error, ends the process
with one line and a non-zero exit, for ``Restart=``; and the loop itself pings
systemd's watchdog, so a loop that hangs is killed and restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Set, Tuple

from .analysis import Tables, split_exact_clashes
from .atomic import write_atomic
from .config import HostRouting
from .constants import (
    KVP_POOL_PATH,
    MAIN_TABLE,
    OUR_PROTOS,
    RTPROT_HOSTROUTING,
    RTPROT_HOSTROUTING_AUTO,
)
from .netlink import PYROUTE2, Event, Kernel, Want
from .overlap import Report, Unknown, check, clear_verdict, write_markers
from .routes import Waiter, apply_routes
from .signals import prometheus_text

if TYPE_CHECKING:
    from .overlap import Verdict

QUIET_S = 0.05  # an event burst is over after this much silence...
MAX_DEBOUNCE_S = 0.3  # ...or after this long, whichever comes first
MIN_INTERVAL_S = 0.2  # at most five reconciles a second
STREAK_LIMIT = 5  # route-changing reconciles in a row before backing off...
FIGHT_WINDOW_S = 2.0  # ...when each came within this long of the one before
MAX_BACKOFF_S = 60.0
STOP_CHECK_S = 1.0  # how often an idle loop looks at the stop flag
PINGS_PER_INTERVAL = 4  # watchdog pings per WATCHDOG_USEC (systemd asks for at least 2)
# Test-only: a path each reconcile reads to its end first, if it exists.  A test
# points it at a FIFO and so blocks the loop in a real system call, as a hung
# netlink request or file system would, to show the watchdog pings stop.
STALL_ENV = "CLOUDINIT_HOSTROUTING_TEST_STALL"


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notify socket; False if there is none or it fails.

    A lost READY=1 fails the start by TimeoutStartSec=, a lost WATCHDOG=1 gets
    the guard restarted: systemd handles both, so the caller only reports it.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


class Watchdog:
    """systemd's watchdog, fed by the main loop only.

    Enabled as sd_watchdog_enabled(3) decides: WATCHDOG_USEC is a positive
    number of microseconds and WATCHDOG_PID, if set, is this process.  The
    loop calls ``alive`` after each pass (an event batch or a timeout, and any
    reconcile it ran), so a loop stuck anywhere stops the pings, and systemd
    kills and restarts the guard after WatchdogSec=.  No timer thread: one
    would keep pinging for a loop that hangs.
    """

    def __init__(self, environ: Mapping[str, str], log: Callable[[str], None]):
        self.log = log
        self.period: Optional[float] = None  # seconds between pings; None: disabled
        self.next_ping = float("-inf")
        self._complained = False
        try:
            usec = int(environ.get("WATCHDOG_USEC", ""))
            pid = int(environ.get("WATCHDOG_PID") or os.getpid())
        except ValueError:
            return
        if usec > 0 and pid == os.getpid():
            self.period = usec / 1e6 / PINGS_PER_INTERVAL

    def wait(self, now: float) -> float:
        """How long the loop may block before its next ping is due."""
        return float("inf") if self.period is None else max(0.0, self.next_ping - now)

    def alive(self, now: float) -> None:
        """Ping if one is due."""
        if self.period is None or now < self.next_ping:
            return
        self.next_ping = now + self.period
        if not sd_notify("WATCHDOG=1") and not self._complained:
            self._complained = True
            self.log("guard: cannot reach systemd's notify socket for the watchdog")


class Pacer:
    """Decides when the next reconcile may run: debounce, spacing and back-off."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.streak = 0
        self.last_run = self.last_change = float("-inf")
        self.first_event: Optional[float] = None
        self.last_event = 0.0

    def event(self, now: float) -> None:
        if self.first_event is None:
            self.first_event = now
        self.last_event = now

    def due(self) -> Optional[float]:
        """When to reconcile next, or None when nothing is pending."""
        if self.first_event is None:
            return None
        settle = min(self.last_event + QUIET_S, self.first_event + MAX_DEBOUNCE_S)
        return max(settle, self.last_run + self.spacing())

    def spacing(self) -> float:
        if self.streak < STREAK_LIMIT:
            return MIN_INTERVAL_S
        return min(MAX_BACKOFF_S, MIN_INTERVAL_S * 2 ** (self.streak - STREAK_LIMIT + 1))

    def ran(self, now: float, changed: bool) -> None:
        """Record a reconcile; only rapid repeats of route changes count as a fight.

        A link reconfigured every few minutes is ordinary life and must not slow
        the next restore; a route removed again within seconds of every restore is
        another daemon, and racing it helps nobody.
        """
        self.first_event = None
        self.last_run = now
        if not changed:
            self.streak = 0
        elif now - self.last_change <= FIGHT_WINDOW_S:
            self.streak += 1
        else:
            self.streak = 1
        if changed:
            self.last_change = now
        if changed and self.streak >= STREAK_LIMIT:
            self.log(f"guard: routes changed on {self.streak} reconciles in a row (is another "
                     f"daemon removing them?); backing off {self.spacing():.1f}s")


class Guard:
    """Reconciles the kernel with the config; every side effect goes through ``kernel``."""

    def __init__(self, cfg: HostRouting, kernel: Kernel, run_dir: str,
                 textfile: Optional[str], log: Callable[[str], None],
                 pool_path: str = KVP_POOL_PATH, root: str = "/"):
        self.cfg, self.kernel, self.run_dir, self.textfile, self.log = (
            cfg, kernel, run_dir, textfile, log)
        self.pool_path, self.root = pool_path, root
        self.last_ipoib: List[str] = []
        self.last_findings: Optional[Set[Tuple[str, str, str]]] = None
        self.last_errors: Set[str] = set()
        self.stall = os.environ.get(STALL_ENV)

    def reconcile(self) -> bool:
        """One pass; True if it changed any route."""
        if self.stall:
            with contextlib.suppress(FileNotFoundError), open(self.stall, "rb") as fifo:
                fifo.read()
        changed = self.restore_static()
        report = self.check()
        self.note(report)
        if self.cfg.auto_mitigate and self.mitigate(report):
            changed = True
            report = self.check()
            self.note(report)
        self.publish(report)
        return changed

    def check(self) -> Report:
        """The same check as check-overlap, pending IPoIB routes included; never waits."""
        return check(self.cfg, self.kernel, Waiter(0), self.pool_path, self.root,
                     ipoib_wait=False)

    def restore_static(self) -> bool:
        """Re-install configured routes whose tagged copy is gone; True if any was."""
        present = {net for v in {r.destination.version for r in self.cfg.routes}
                   for net in self.kernel.tagged(RTPROT_HOSTROUTING, v)}
        missing = tuple(r for r in self.cfg.routes if r.destination not in present)
        if not missing:
            self.last_errors = set()
            return False
        restored, errors = False, set()
        for outcome in apply_routes(HostRouting(routes=missing), self.kernel, Waiter(0)):
            if outcome.installed:
                self.log(f"guard: restored {outcome.describe()}")
                restored = True
            if outcome.error:  # refused or failed; or restored but not in effect
                line = f"guard: {outcome.error}" if outcome.installed else \
                    f"guard: cannot restore {outcome.route.destination}: {outcome.error}"
                errors.add(line)
                if line not in self.last_errors:  # say it once, not on every event
                    self.log(line)
        self.last_errors = errors
        return restored

    def mitigate(self, report: Report) -> bool:
        """Add auto routes for shadowed ranges; remove those whose cause is gone."""
        changed = False
        for version, default in report.defaults.items():
            if default is None or default.gateway is None:
                continue
            tables = report.tables[version]
            existing = set(self.kernel.tagged(RTPROT_HOSTROUTING_AUTO, version))
            wanted = {n for n in existing if self._still_shadowed(n, tables, default.ifname)}
            # Never the exact prefix of another route: that would replace it.
            taken = {r.network for r in tables.routes
                     if r.table == MAIN_TABLE and r.proto != "hostrouting-auto"}
            for result in report.results:
                if result.cidr.version != version:
                    continue
                for finding in result.bad:
                    if finding.status == "overlap":
                        wanted.update(split_exact_clashes(finding.region.networks(), taken))
            new = sorted(wanted - existing)
            results = self.kernel.install(
                [Want(net, default.gateway, default.ifindex, default.ifname, None) for net in new],
                proto=RTPROT_HOSTROUTING_AUTO)
            for net, done in zip(new, results):
                if done.installed:
                    self.log(f"guard: auto-mitigated {net} via {default.gateway} "
                             f"dev {default.ifname}")
                    changed = True
                if done.error:
                    self.log(f"guard: {done.error}" if done.installed else
                             f"guard: cannot auto-mitigate {net}: {done.error}")
            for net in sorted(existing - wanted):
                self.kernel.delete(net, RTPROT_HOSTROUTING_AUTO)
                self.log(f"guard: removed auto route {net}: its cause is gone")
                changed = True
        return changed

    def _still_shadowed(self, net: Any, tables: Tables, default_if: str) -> bool:
        """Does a foreign route still pull part of ``net`` away, inside an expected CIDR?"""
        if not any(net.subnet_of(c) for c in self.cfg.expected_cidrs
                   if c.version == net.version):
            return False
        return any(r.kind == "unicast" and r.ifname != default_if
                   and r.proto not in ("hostrouting", "hostrouting-auto")
                   and r.network.overlaps(net) for r in tables.routes)

    def publish(self, verdict: Verdict) -> None:
        """Markers, status.json and metrics for the final verdict of a reconcile."""
        write_markers(self.run_dir, verdict)
        if self.textfile:
            write_atomic(self.textfile, prometheus_text(verdict))

    def note(self, report: Report) -> None:
        """Log findings to the journal, with their culprit route, when they change."""
        # The rule and the pool's problems, once each time they change.  Pending
        # routes turning into present ones change neither, nor the findings' key:
        # the same range shadowed by the same /16 is the same finding, whether
        # its route is announced or assigned, and whichever IB link holds it.
        ipoib = [line for line in (report.ipoib.lines() if report.ipoib else [])
                 if not line.startswith(("IPoIB: pending", "IPoIB wait"))] + report.unchecked
        if ipoib != self.last_ipoib:
            for line in ipoib:
                self.log(f"guard: {line}")
            self.last_ipoib = ipoib
        findings = {(str(r.cidr), f.region.describe(), f.status)
                    for r in report.results for f in r.bad}
        if findings != self.last_findings:
            for result in report.results:
                for f in result.bad:
                    self.log(f"guard: SHADOWED {result.cidr}: {f.region.describe()} goes via "
                             f"{f.answer.ifname or f.answer.kind} (route: {f.culprit})")
            if not findings and self.last_findings:
                self.log("guard: all expected CIDRs route via the default interface again")
            self.last_findings = findings


def _relevant(event: Event) -> bool:
    """Everything but our own route additions (their echo must not re-trigger us)."""
    return event.kind != "RTM_NEWROUTE" or event.proto not in OUR_PROTOS


def run(cfg: HostRouting, run_dir: str, textfile: Optional[str],
        log: Callable[[str], None] = print, pool_path: str = KVP_POOL_PATH,
        root: str = "/") -> int:
    """The guard: 0 on SIGTERM/SIGINT, 1 with one log line when it cannot go on.

    The signal handler only sets a flag, which the loop checks at least once a
    second: raising from the handler could interrupt pyroute2 mid-request and
    turn a clean stop into a failure.  Any exception (a feed that could not be
    re-made, a kernel or file error) ends the guard rather than leaving it
    half-alive; its verdict then becomes "unknown", since nobody keeps it
    current any more, until systemd's restart decides again.  Errors Python
    can only ignore (in a destructor: pyroute2 0.9's half-made event loop when
    a socket cannot be had) are one journal line each, not a traceback.
    """
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: log(
        f"guard: ignored {_one_line(u.exc_value)} in {_name(u.object)}")
    try:
        with Kernel(backend=PYROUTE2) as kernel:
            guard = Guard(cfg, kernel, run_dir, textfile, log, pool_path, root)
            _watch(guard, kernel, stopping, Watchdog(os.environ, log))
    except Exception as err:
        reason = _one_line(err)
        log(f"guard: failed: {reason}; exiting for systemd to restart it")
        _forget_verdict(run_dir, textfile, Unknown(f"the guard failed: {reason}", cfg.mode))
        return 1
    finally:
        sys.unraisablehook = previous_hook
    log("guard: stopping; routes are left as they are")
    return 0


def _one_line(err: Optional[BaseException]) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")


def _name(obj: object) -> str:
    """What an "Exception ignored in" report names, without a multi-line repr."""
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _forget_verdict(run_dir: str, textfile: Optional[str], unknown: Unknown) -> None:
    """Best effort, step by step: no old verdict survives, and "unknown" replaces it.

    Unlinking comes first and needs no file descriptor, so even a guard out of
    them (or with its run directory gone) leaves no stale OK behind.
    """
    steps: List[Callable[[], object]] = [lambda: clear_verdict(run_dir)]
    if textfile:
        steps.append(lambda: os.unlink(textfile))
    steps.append(lambda: write_markers(run_dir, unknown))
    if textfile:
        steps.append(lambda: write_atomic(textfile, prometheus_text(unknown)))
    for step in steps:
        with contextlib.suppress(Exception):
            step()


def _watch(guard: Guard, kernel: Kernel, stopping: threading.Event,
           watchdog: Watchdog) -> None:
    """Subscribe, decide once, tell systemd, then follow the events until stopped."""
    pacer = Pacer(guard.log)
    feed = kernel.events()  # before the first reconcile: no change falls in between
    guard.reconcile()
    pacer.ran(time.monotonic(), False)
    sd_notify("READY=1")
    cfg = guard.cfg
    guard.log(f"guard: watching {len(cfg.routes)} route(s) and {len(cfg.expected_cidrs)} "
              f"expected CIDR(s)" + (", auto-mitigating" if cfg.auto_mitigate else ""))
    losses: List[str] = []  # since the last reconcile: one line for them, not one each
    while not stopping.is_set():
        now = time.monotonic()
        due = pacer.due()
        timeout = min(STOP_CHECK_S, watchdog.wait(now),
                      float("inf") if due is None else max(0.0, due - now))
        batch = feed.get(timeout)  # FeedError: deaf for good, so out
        if batch.lost is not None:
            losses.append(batch.lost)
        if batch.lost is not None or any(
                e.kind in ("RTM_NEWLINK", "RTM_DELLINK") for e in batch.events):
            kernel.forget_links()
        if batch.lost is not None or any(_relevant(e) for e in batch.events):
            pacer.event(time.monotonic())  # every reconcile re-reads every table
        due = pacer.due()
        if due is not None and time.monotonic() >= due:
            if losses:
                times = f" ({len(losses)} times)" if len(losses) > 1 else ""
                guard.log(f"guard: rtnetlink events were lost{times} ({losses[-1]}); "
                          "subscribed again, re-checking everything")
                losses = []
            pacer.ran(time.monotonic(), guard.reconcile())
        watchdog.alive(time.monotonic())
