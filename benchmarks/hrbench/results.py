"""Every number measured at one size, and the views the report takes of them.

``unit`` is ``apply``, ``check`` or ``total`` (both units of one run added up); ``side`` is
``ours`` or ``base``.  Saved with ``--json`` and read back by ``--report-from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .pairs import Side
from .procs import Proc
from .stats import median, pair_ratios

UNIT_LABELS = {"apply": "apply-routes", "check": "check-overlap", "total": "both units"}


def _field(proc: Optional[Proc], kind: str) -> Optional[float]:
    if proc is None:
        return None
    return proc.wall if kind == "wall" else proc.cpu


@dataclass
class SizeResult:
    """All runs at one size: whole processes of both sides, and in-process timings of ours."""

    n: int
    m: int
    ours: List[Side] = field(default_factory=list)
    base: List[Side] = field(default_factory=list)
    inproc: List[Dict[str, float]] = field(default_factory=list)
    rss_kb: Dict[str, int] = field(default_factory=dict)  # unit -> peak RSS, from rss_probe

    def units(self) -> List[str]:
        return ["apply", "check", "total"] if self.m else ["apply"]

    def samples(self, side: str, unit: str, kind: str = "wall") -> List[float]:
        """Wall or CPU seconds (user+sys, reaped children included) per run, in run order."""
        out = []
        for run in self.ours if side == "ours" else self.base:
            if unit == "total":
                parts = [_field(run.apply, kind), _field(run.check, kind)]
                out.append(sum(p for p in parts if p is not None))
            else:
                value = _field(getattr(run, unit), kind)
                if value is not None:
                    out.append(value)
        return out

    def ratios(self, unit: str, kind: str = "wall") -> List[float]:
        """baseline/ours per run pair (same run, same size), not a ratio of medians."""
        return pair_ratios(self.samples("base", unit, kind), self.samples("ours", unit, kind))

    def med(self, side: str, unit: str, kind: str = "wall") -> float:
        return median(self.samples(side, unit, kind))

    def rss_mib(self, unit: str) -> float:
        """Our unit's peak RSS in MiB (``ru_maxrss`` is in KiB): the probe's when there is one,
        else the worst of the timed runs, whose ``wait4`` maxrss also counts the runner's own
        RSS (Popen's vfork child execs with the runner's memory; see pairs.rss_probe)."""
        if unit in self.rss_kb:
            return self.rss_kb[unit] / 1024
        procs = [getattr(run, unit) for run in self.ours]
        return max(p.maxrss_kb for p in procs if p is not None) / 1024

    def inproc_med(self, key: str) -> float:
        return median([x[key] for x in self.inproc if key in x])

    def to_dict(self) -> Dict[str, Any]:
        def side(s: Side) -> Dict[str, Any]:
            return {"apply": s.apply._asdict(), "check": s.check._asdict() if s.check else None}

        return {"n": self.n, "m": self.m, "ours": [side(s) for s in self.ours],
                "baseline": [side(s) for s in self.base], "inproc": self.inproc,
                "rss_kb": self.rss_kb}

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> SizeResult:
        def side(d: Dict[str, Any]) -> Side:
            return Side(Proc(**d["apply"]), Proc(**d["check"]) if d["check"] else None)

        return cls(raw["n"], raw["m"], [side(s) for s in raw["ours"]],
                   [side(s) for s in raw["baseline"]], raw["inproc"], raw.get("rss_kb", {}))


def items(res: SizeResult, unit: str) -> int:
    """What a unit's time is divided by: routes for apply-routes, CIDRs for check-overlap."""
    return res.m if unit == "check" else res.n


def by_items(results: Sequence[SizeResult], unit: str) -> List[SizeResult]:
    """One result per item count of ``unit``, by size: a unit's curve.

    ``--big-check`` can repeat a count (N=M=1,000 and N=10,000 with M=1,000); the N=M one
    is kept, so the check's curve runs over tables that grow with it.
    """
    chosen: Dict[int, SizeResult] = {}
    for res in results:
        k = items(res, unit)
        if k and (k not in chosen or res.n == res.m):
            chosen[k] = res
    return [chosen[k] for k in sorted(chosen)]


def whole_points(results: Sequence[SizeResult], unit: str, side: str = "ours",
                 kind: str = "wall") -> List[Tuple[int, float]]:
    """(items, median wall or CPU seconds of ``side``'s whole processes) along the curve."""
    return [(items(r, unit), r.med(side, unit, kind)) for r in by_items(results, unit)]
