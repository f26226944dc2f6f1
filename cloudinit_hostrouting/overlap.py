"""check-overlap: does every part of every expected CIDR leave through the default interface?

Keeps upstream's contract so existing tooling keeps working: the marker files
``route-overlap.detected`` and ``route-overlap.ok`` in the run directory, WARN
exits 0, STRICT exits 1 on any finding, and the first line per CIDR in
upstream's exact format.  Unlike upstream, the verdict covers the whole CIDR
(``analysis.py``): every further bad range gets its own ``RANGE:`` line naming
the route that causes it, and ``status.json`` carries all of it.  IPv6 expected
CIDRs are compared with the interface of the IPv6 default route.

A verdict is one of three states: ``ok``, ``overlap`` (a decided ``Report``) or
``unknown`` (``Unknown``: the check could not decide, and says why).  No
verdict file may outlive the run that wrote it, so a run starts by clearing
them all and recording ``unknown``; only a decided check replaces that.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Union

from .analysis import Finding, Tables, analyze
from .atomic import write_atomic
from .config import HostRouting, IPNetwork
from .netlink import DefaultRoute, Kernel
from .routes import Waiter

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
        head = self.bad[0] if self.bad else (self.findings[0] if self.findings else None)
        return {
            "cidr": str(self.cidr),
            "family": f"ipv{self.cidr.version}",
            "probe": str(head.region.probe) if head else None,
            "interface": head.answer.ifname if head else None,
            "route_type": head.answer.kind if head else None,
            "expected_interface": self.expected_if,
            "status": self.status,
            "shadowed": [{
                "range": f.region.describe(),
                "cidrs": [str(n) for n in f.region.networks()],
                "probe": str(f.region.probe),
                "interface": f.answer.ifname,
                "route_type": f.answer.kind,
                "status": f.status,
                "culprit": f.culprit,
            } for f in self.bad],
        }


class Report(NamedTuple):
    """Everything one check found; ``ok`` is the single verdict."""

    mode: str
    defaults: Dict[int, Optional[DefaultRoute]]  # by IP version, for the versions needed
    results: List[CidrResult]
    tables: Dict[int, Tables]  # the dumps the verdict was made from, for the guard to reuse

    @property
    def missing_defaults(self) -> List[int]:
        return [v for v, route in sorted(self.defaults.items()) if route is None]

    @property
    def ok(self) -> bool:
        return not self.missing_defaults and not any(r.bad for r in self.results)

    @property
    def state(self) -> str:
        return "ok" if self.ok else "overlap"

    def lines(self) -> List[str]:
        """The ``.detected`` content (empty when ok)."""
        out = ["no-default-route" if v == 4 else "no-default-route-ipv6"
               for v in self.missing_defaults]
        for result in self.results:
            out.extend(result.lines())
        return out

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
        }


Verdict = Union[Report, Unknown]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def check(cfg: HostRouting, kernel: Kernel, waiter: Waiter) -> Report:
    """Analyse every expected CIDR against the kernel's tables and lookups.

    The IPv4 default route is always required (upstream's guard); the IPv6 one
    only when an IPv6 CIDR is expected.
    """
    tables: Dict[int, Tables] = {}
    defaults: Dict[int, Optional[DefaultRoute]] = {}
    for version in sorted({c.version for c in cfg.expected_cidrs} | {4}):
        def dump(version: int = version) -> Optional[DefaultRoute]:
            # One dump serves both the default route and the analysis.
            tables[version] = kernel.tables(version)
            return kernel.default_from(tables[version])

        defaults[version] = waiter.until(dump)
    results = []
    for cidr in cfg.expected_cidrs:
        default = defaults[cidr.version]
        if default is None:
            continue
        findings = analyze(cidr, tables[cidr.version], kernel.answer, default.ifname)
        results.append(CidrResult(cidr, default.ifname, findings))
    return Report(cfg.mode, defaults, results, tables)


def action_hint(report: Report) -> str:
    """What to do about the findings (printed after them, like upstream)."""
    if report.missing_defaults:
        return ("Action: the host has no default route for "
                + " and ".join(f"IPv{v}" for v in report.missing_defaults)
                + "; fix DHCP or the network config before the checks can pass.")
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
    write_atomic(os.path.join(run_dir, STATUS),
                 json.dumps(verdict.to_dict(), indent=2, sort_keys=True) + "\n")
    write_atomic(os.path.join(run_dir, name), text)
