"""check-overlap: does every part of every expected CIDR leave through the default interface?

Keeps upstream's contract so existing tooling keeps working: the marker files
``route-overlap.detected`` and ``route-overlap.ok`` in the run directory, WARN
exits 0, STRICT exits 1 on any finding, and the first line per CIDR in
upstream's exact format.  Unlike upstream, the verdict covers the whole CIDR
(``analysis.py``): every further bad range gets its own ``RANGE:`` line naming
the route that causes it, and ``status.json`` carries all of it.  IPv6 expected
CIDRs are compared with the interface of the IPv6 default route.

IPoIB (kvp.py, ib.py): the Azure guest agent adds the IPoIB /16 addresses after
this check runs.  Where something will really add them (``anticipate_ipoib``,
``anticipation``), the addresses the host announced in the KVP pool count as
routes already (analysis.py's pending routes); with ``wait_for_ipoib`` the
check first waits, out of the same budget as the default-route wait, for every
InfiniBand link to have its address.  Every report says which rule applied.

A verdict is one of three states: ``ok``, ``overlap`` (a decided ``Report``) or
``unknown`` (``Unknown``: the check could not decide, and says why).  No
verdict file may outlive the run that wrote it, so a run starts by clearing
them all and recording ``unknown``; only a decided check replaces that.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import jsonio, kvp
from .analysis import Finding, Tables, judge, regions
from .atomic import write_atomic
from .config import HostRouting
from .constants import KVP_POOL_PATH
from .ib import Ipoib, ipoib_state
from .netlink import DefaultRoute, Kernel
from .records import NamedTuple
from .routes import Waiter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

    from .config import IPNetwork

DETECTED = "route-overlap.detected"
OK = "route-overlap.ok"
UNKNOWN = "route-overlap.unknown"
STATUS = "status.json"
VERDICT_FILES = (DETECTED, OK, UNKNOWN, STATUS)


class CidrResult(NamedTuple):
    """The verdict for one expected CIDR: all its regions, and the bad ones."""

    cidr: IPNetwork
    expected_if: str
    findings: List[Finding]

    @property
    def bad(self) -> List[Finding]:
        return [f for f in self.findings if f.status != "ok"]

    @property
    def status(self) -> str:
        return self.bad[0].status if self.bad else "ok"

    def lines(self) -> List[str]:
        """Upstream's line for the first bad range, then a RANGE line per further one.

        Every range, with the route that causes it, is in status.json.
        """
        if not self.bad:
            return []
        first = self.bad[0]
        family = "IPv4" if self.cidr.version == 4 else "IPv6"
        if first.status == "no-route":
            out = [f"NO-ROUTE: expected CIDR {self.cidr} (probe {first.region.probe}) has no "
                   f"{family} route; expected via {self.expected_if}"]
        else:
            out = [f"OVERLAP: expected CIDR {self.cidr} (probe {first.region.probe}) routes via "
                   f"{first.answer.ifname}, expected {self.expected_if}"]
        for f in self.bad[1:]:
            where = f"via {f.answer.ifname}" if f.status == "overlap" else f"to {f.answer.kind}"
            out.append(f"  RANGE: {f.region.describe()} of {self.cidr} goes {where} "
                       f"(probe {f.region.probe}; route: {f.culprit or 'unknown'})")
        return out

    def to_dict(self) -> Dict[str, Any]:
        bad = self.bad  # once: status.json holds 4,096 of these
        head = bad[0] if bad else (self.findings[0] if self.findings else None)
        return {
            "cidr": str(self.cidr),
            "family": f"ipv{self.cidr.version}",
            "probe": str(head.region.probe) if head else None,
            "interface": head.answer.ifname if head else None,
            "route_type": head.answer.kind if head else None,
            "expected_interface": self.expected_if,
            "status": bad[0].status if bad else "ok",
            "shadowed": [{
                "range": f.region.describe(),
                "cidrs": [str(n) for n in f.region.networks()],
                "probe": str(f.region.probe),
                "interface": f.answer.ifname,
                "route_type": f.answer.kind,
                "status": f.status,
                "culprit": f.culprit,
            } for f in bad],
        }


class IpoibWait(NamedTuple):
    """What wait_for_ipoib waited for, how long, and what never came."""

    configured_s: int
    limit_s: float  # configured, cut to what the shared budget had left
    waited_s: float
    waited_for: Tuple[str, ...]
    still_missing: Tuple[str, ...]

    def line(self) -> str:
        if not self.waited_for:
            return "IPoIB wait: every InfiniBand link already has its IPv4 address"
        names = ", ".join(self.waited_for)
        if not self.still_missing:
            return f"IPoIB wait: waited {self.waited_s:.1f}s for {names}: all have their address"
        cut = "" if self.limit_s >= self.configured_s else \
            f" (cut from {self.configured_s}s: the shared wait budget had no more left)"
        return (f"IPoIB wait: gave up after {self.waited_s:.1f}s of {self.limit_s:.1f}s{cut}; "
                f"still without their IPv4 address: {', '.join(self.still_missing)}")

    def to_dict(self) -> Dict[str, Any]:
        return {"configured_s": self.configured_s, "limit_s": round(self.limit_s, 3),
                "waited_s": round(self.waited_s, 3), "waited_for": list(self.waited_for),
                "still_missing": list(self.still_missing),
                "complete": not self.still_missing}


class IpoibCheck(NamedTuple):
    """The IPoIB side of a check: the rule that applied, the KVP pool, the wait."""

    setting: str  # auto, always, never
    anticipating: bool
    rule: str  # the line saying which rule applied and why
    pool: kvp.KvpRead
    state: Ipoib
    wait: Optional[IpoibWait]

    @property
    def unchecked(self) -> List[str]:
        """Why the verdict cannot be OK: IPoIB routes to come that were not checked.

        Either the pool could not be read while anticipating, or the configured
        wait ended with links still lacking their address (the wait is the
        promise that they come; judging without them would be an OK unchecked).
        """
        out = []
        if self.anticipating and self.pool.state in (kvp.UNREADABLE, kvp.TOO_LARGE):
            out.append(f"IPoIB: the KVP pool could not be read while anticipating "
                       f"({self.pool.state}): the IPoIB routes to come are unchecked")
        if self.wait is not None and self.wait.still_missing:
            out.append("IPoIB: wait_for_ipoib ended before "
                       f"{', '.join(self.wait.still_missing)} had an IPv4 address: the "
                       "routes they will bring are unchecked")
        return out

    def lines(self) -> List[str]:
        """What a human should see first: the rule, pending routes, problems, the wait."""
        out = [self.rule]
        if self.anticipating:
            out.extend(f"IPoIB: pending {p.describe()} (address {p.address})"
                       for p in self.state.pending)
        out.extend(f"IPoIB: {line}" for line in (*self.pool.problems, *self.state.problems))
        if self.wait is not None:
            out.append(self.wait.line())
        return out  # the unchecked lines are findings: Report.lines() has them

    def to_dict(self) -> Dict[str, Any]:
        return {
            "anticipate_ipoib": self.setting,
            "anticipating": self.anticipating,
            "rule": self.rule,
            "kvp": self.pool.to_dict(),
            "links": [link._asdict() for link in self.state.links],
            "pending": [p.to_dict() for p in self.state.pending] if self.anticipating else [],
            "announced_not_anticipated": [] if self.anticipating else
            [p.to_dict() for p in self.state.pending],
            "problems": list(self.state.problems),
            "wait": self.wait.to_dict() if self.wait is not None else None,
            "unchecked": self.unchecked,
        }


def anticipation(setting: str, rdma: Tuple[Optional[bool], str],
                 state: Ipoib) -> Tuple[bool, str]:
    """Whether to count the announced IPoIB addresses as routes, and the line saying why.

    The host may publish ``IPoIB_Data`` where nothing applies it (AKS node
    images leave OS.EnableRDMA off): anticipating there would block a healthy
    node.  So ``auto`` anticipates only where the agent will assign them
    (``rdma``: its config turns RDMA on) or where an InfiniBand link already
    has an IPv4 address (something on this node does assign them).
    """
    if setting == "never":
        return False, "IPoIB: not anticipating (route_overlap.anticipate_ipoib: never)"
    if setting == "always":
        return True, ("IPoIB: anticipating the KVP IPoIB_Data addresses "
                      "(route_overlap.anticipate_ipoib: always)")
    enabled, why = rdma
    if enabled:
        return True, f"IPoIB: anticipating the KVP IPoIB_Data addresses (auto: {why})"
    if state.with_ipv4:  # which ones is in status.json; the line stays the same as more come
        return True, ("IPoIB: anticipating the KVP IPoIB_Data addresses (auto: an InfiniBand "
                      "link already has an IPv4 address)")
    return False, (f"IPoIB: not anticipating (auto: {why}, and no InfiniBand link has an "
                   "IPv4 address)")


def observe_ipoib(cfg: HostRouting, kernel: Kernel, waiter: Waiter,
                  pool_path: str = KVP_POOL_PATH, root: str = "/",
                  wait: bool = True) -> IpoibCheck:
    """Read the KVP pool, wait for IB addresses if configured, decide on anticipation.

    ``wait`` False (the guard, which re-judges on every address event) skips
    wait_for_ipoib: it is the boot check's promise, not a standing condition.
    """
    pool = kvp.read_ipoib(pool_path)

    def snapshot() -> Ipoib:
        return ipoib_state(kernel.links(), kernel.addresses(4), pool.pairs)

    state = snapshot()
    waited = None
    if cfg.wait_for_ipoib and wait:
        first = tuple(state.waiting_for())
        limit = min(float(cfg.wait_for_ipoib), waiter.remaining())
        start = waiter.clock()
        if first:
            latest = [state]

            def arrived() -> Optional[bool]:
                latest[0] = snapshot()
                return True if not latest[0].waiting_for() else None

            waiter.until(arrived, at_most=limit)
            state = latest[0]
        waited = IpoibWait(cfg.wait_for_ipoib, limit, waiter.clock() - start, first,
                           tuple(state.waiting_for()))
    rdma = kvp.rdma_enabled(root) if cfg.anticipate_ipoib == "auto" else (None, "")
    active, rule = anticipation(cfg.anticipate_ipoib, rdma, state)
    return IpoibCheck(cfg.anticipate_ipoib, active, rule, pool, state, waited)


class Report(NamedTuple):
    """Everything one check found; ``ok`` is the single verdict."""

    mode: str
    defaults: Dict[int, Optional[DefaultRoute]]  # by IP version, for the versions needed
    results: List[CidrResult]
    tables: Dict[int, Tables]  # the dumps the verdict was made from, for the guard to reuse
    ipoib: Optional[IpoibCheck] = None

    @property
    def unchecked(self) -> List[str]:
        return self.ipoib.unchecked if self.ipoib is not None else []

    @property
    def missing_defaults(self) -> List[int]:
        return [v for v, route in sorted(self.defaults.items()) if route is None]

    @property
    def ok(self) -> bool:
        # Over the findings, not each result's list of bad ones: asked several times
        # per run, of 4,096 results.
        return not self.missing_defaults and not self.unchecked and not any(
            f.status != "ok" for r in self.results for f in r.findings)

    @property
    def state(self) -> str:
        return "ok" if self.ok else "overlap"

    def lines(self) -> List[str]:
        """The ``.detected`` content (empty when ok)."""
        out = ["no-default-route" if v == 4 else "no-default-route-ipv6"
               for v in self.missing_defaults]
        for result in self.results:
            out.extend(result.lines())
        return out + self.unchecked

    def to_dict(self) -> Dict[str, Any]:
        v4 = self.defaults.get(4)
        return {
            "version": 2,
            "mode": self.mode,
            "ok": self.ok,
            "state": self.state,
            "reason": None,
            "checked_at": _now(),
            "default_interface": v4.ifname if v4 else None,
            "default_gateway": v4.gateway if v4 else None,
            "defaults": {f"ipv{v}": (r._asdict() if r else None)
                         for v, r in sorted(self.defaults.items())},
            "shadowed_ranges": sum(len(r.bad) for r in self.results),
            "cidrs": [r.to_dict() for r in self.results],
            "ipoib": self.ipoib.to_dict() if self.ipoib is not None else None,
        }


class Unknown(NamedTuple):
    """No verdict: the check could not decide (config unreadable, netlink failed, ...).

    Never ok.  ``mode`` is None when the config (which holds it) could not be read.
    """

    reason: str
    mode: Optional[str] = None

    @property
    def ok(self) -> bool:
        return False

    @property
    def state(self) -> str:
        return "unknown"

    def to_dict(self) -> Dict[str, Any]:
        """status.json with a decided verdict's keys, nothing claimed: no CIDR, no route."""
        return {
            "version": 2,
            "mode": self.mode,
            "ok": False,
            "state": self.state,
            "reason": self.reason,
            "checked_at": _now(),
            "default_interface": None,
            "default_gateway": None,
            "defaults": {},
            "shadowed_ranges": None,
            "cidrs": [],
            "ipoib": None,
        }


if TYPE_CHECKING:
    Verdict = Union[Report, Unknown]


def _now() -> str:
    return iso_utc(time.time_ns())


def iso_utc(ns: int) -> str:
    """What ``datetime.datetime.now(datetime.timezone.utc).isoformat()`` says when the
    clock (``time.time_ns()``) reads ``ns``: microseconds rounded down, and left out
    when zero.  ``datetime`` would cost the check unit ~1.3 ms to import."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    t = time.gmtime(seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            + (f".{micros:06d}" if micros else "") + "+00:00")


def check(cfg: HostRouting, kernel: Kernel, waiter: Waiter,
          pool_path: str = KVP_POOL_PATH, root: str = "/", ipoib_wait: bool = True) -> Report:
    """Analyse every expected CIDR against the kernel's tables and lookups.

    The IPv4 default route is always required (upstream's guard); the IPv6 one
    only when an IPv6 CIDR is expected.  Then the IPoIB side (``observe_ipoib``):
    after a wait for IB addresses the tables are dumped again, and when
    anticipating, the pending IPoIB routes join the IPv4 tables.
    """
    tables: Dict[int, Tables] = {}
    defaults: Dict[int, Optional[DefaultRoute]] = {}
    known = [*(route.destination for route in cfg.routes), *cfg.expected_cidrs]
    for version in sorted({c.version for c in cfg.expected_cidrs} | {4}):
        def dump(version: int = version) -> Optional[DefaultRoute]:
            # One dump serves both the default route and the analysis; the routes
            # apply-routes installed share the config's network objects.
            tables[version] = kernel.tables(version, known)
            return kernel.default_from(tables[version])

        defaults[version] = waiter.until(dump)
    ipoib = observe_ipoib(cfg, kernel, waiter, pool_path, root, ipoib_wait)
    if ipoib.wait is not None and ipoib.wait.waited_for:
        for version in tables:  # addresses arrived (or not): judge the table of now
            tables[version] = kernel.tables(version, known)
            defaults[version] = kernel.default_from(tables[version])
    if ipoib.anticipating and ipoib.state.pending:
        tables[4] = tables[4].with_pending(ipoib.state.pending)
    todo = []
    for cidr in cfg.expected_cidrs:
        default = defaults[cidr.version]
        if default is not None:
            todo.append((cidr, default.ifname, regions(cidr, tables[cidr.version])))
    # Every region's probe first, then one batched ask, not a round trip per region.
    answers = iter(kernel.answers([region.probe for _, _, found in todo for region in found]))
    results = [CidrResult(cidr, ifname, judge(found, [next(answers) for _ in found],
                                              tables[cidr.version], ifname))
               for cidr, ifname, found in todo]
    return Report(cfg.mode, defaults, results, tables, ipoib)


def action_hint(report: Report) -> str:
    """What to do about the findings (printed after them, like upstream)."""
    if report.missing_defaults:
        return ("Action: the host has no default route for "
                + " and ".join(f"IPv{v}" for v in report.missing_defaults)
                + "; fix DHCP or the network config before the checks can pass.")
    if not any(r.bad for r in report.results):  # only the IPoIB side is unchecked
        return ("Action: let the IPoIB routes to come be checked: make the KVP pool "
                "readable, raise host_routing.route_overlap.wait_for_ipoib, or (where "
                "nothing assigns the addresses) set anticipate_ipoib: never.")
    default_if = ", ".join(sorted({r.expected_if for r in report.results if r.bad}))
    return (f"Action: add more-specific static routes for the ranges above via {default_if} "
            "(host_routing.static_routes), or re-address the cluster so it does not "
            "overlap the InfiniBand network.")


def clear_verdict(run_dir: str, also: Iterable[str] = ()) -> None:
    """Remove every verdict file (markers, status.json, and ``also``, e.g. a textfile).

    Creates ``run_dir`` if needed.  Raises OSError when it cannot: then an old
    verdict may survive, and the caller must fail rather than carry on.
    """
    os.makedirs(run_dir, exist_ok=True)
    for path in [*(os.path.join(run_dir, name) for name in VERDICT_FILES), *also]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def write_markers(run_dir: str, verdict: Verdict) -> None:
    """status.json, then exactly one marker for the verdict (the others removed first).

    ``.ok`` is empty, ``.detected`` holds upstream's lines, ``.unknown`` the reason.
    The marker comes last, so whoever sees a marker finds the status.json behind it.
    """
    os.makedirs(run_dir, exist_ok=True)
    if isinstance(verdict, Unknown):
        name, text = UNKNOWN, verdict.reason + "\n"
    elif verdict.ok:
        name, text = OK, ""
    else:
        name, text = DETECTED, "\n".join(verdict.lines()) + "\n"
    for other in (DETECTED, OK, UNKNOWN):
        if other != name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, other))
    # One line: json's C encoder only writes without indent before Python 3.13, and an
    # indented status.json of 4,096 CIDRs cost check-overlap 20 ms more (--json still indents).
    write_atomic(os.path.join(run_dir, STATUS), jsonio.dumps_line(verdict.to_dict()) + "\n")
    write_atomic(os.path.join(run_dir, name), text)
