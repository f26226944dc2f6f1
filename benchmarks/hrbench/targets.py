"""Issue 11's targets, judged on one run's numbers, each line saying by how much it missed.

* N=M=10: both units together no slower than the two bash loops together;
* N=M=1000: both units at least 20x faster than bash;
* N=M=10,000: at least 30x, and linear (each unit's marginal CPU time per item, up to that
  size, grows at most LINEAR_GROWTH from the first segment to the last);
* peak RSS per unit at most 20 MiB, at every size measured.

Ratios are medians of per-run-pair ratios (stats.py).  A target whose size was not in the
run is reported as NOT MEASURED, never as passed.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .results import UNIT_LABELS, SizeResult, items, whole_points
from .stats import LINEAR_GROWTH, LINEAR_MIN_N, Linearity, linearity, median, spread
from .tables import fmt_ratio, fmt_s, linearity_status, linearity_text
from .workload import MAX_CHECK

PASS, MISS, UNMEASURED = "PASS", "MISS", "NOT MEASURED"
RSS_LIMIT_MIB = 20.0
LINEAR_UP_TO = 10000


class RatioTarget(NamedTuple):
    """Both units together, baseline/ours at N=M=n, at least ``min_ratio``."""

    n: int
    min_ratio: float
    meaning: str


RATIO_TARGETS = (
    RatioTarget(10, 1.0, "no slower than the two bash loops together"),
    RatioTarget(1000, 20.0, "at least 20x faster than bash"),
    RatioTarget(10000, 30.0, "at least 30x faster than bash"),
)


class Outcome(NamedTuple):
    """A target's status and its lines: a Markdown list item, then indented details."""

    status: str
    lines: List[str]


def ratio_outcome(target: RatioTarget, ratios: Sequence[float], cpu_ratios: Sequence[float],
                  ours_s: float, base_s: float,
                  alone: Sequence[Tuple[str, float, float]] = (), m: Optional[int] = None
                  ) -> Outcome:
    """Judge the median per-pair ratio; ``alone`` is (unit, wall ratio, CPU ratio) each;
    ``m`` the CIDRs checked where that is not N (capped at MAX_CHECK)."""
    ratio = median(ratios)
    low, high = spread(ratios)
    status = PASS if ratio >= target.min_ratio else MISS
    size = f"N=M={target.n:,}" if m in (None, target.n) else f"N={target.n:,}, M={m:,}"
    lines = [f"- {status}: {size}, both units: baseline/ours {fmt_ratio(ratio)} "
             f"(target >= {target.min_ratio:g}x, {target.meaning}; median of {len(ratios)} "
             f"per-run ratios [{fmt_ratio(low)}-{fmt_ratio(high)}]; ours {fmt_s(ours_s)} s, "
             f"baseline {fmt_s(base_s)} s; in CPU time {fmt_ratio(median(cpu_ratios))})"]
    lines += [f"  - {unit} alone: {fmt_ratio(wall)} wall, {fmt_ratio(cpu)} CPU"
              for unit, wall, cpu in alone]
    if status == MISS:
        budget = base_s / target.min_ratio
        lines.append(f"  - missed by a factor of {target.min_ratio / ratio:.2f}: at the medians, "
                     f"both units would have to take at most {fmt_s(budget)} s, "
                     f"{ours_s - budget:.3f} s less than they did")
    return Outcome(status, lines)


def reach(unit: str, up_to: int) -> int:
    """How far ``unit``'s curve can go: the check's stops at MAX_CHECK CIDRs."""
    return min(up_to, MAX_CHECK) if unit == "check-overlap" else up_to


def linear_outcome(judged: Dict[str, Optional[Linearity]], up_to: int) -> Outcome:
    """Linear up to ``up_to`` items: every unit's marginal cost grows at most LINEAR_GROWTH.

    A unit found not linear at any size is a MISS; PASS needs every unit judged linear on a
    curve that reaches ``up_to``; anything else (too few sizes, a curve that stops short, no
    extra cost measurable) is NOT MEASURED, never a pass.
    """
    found = [lin for lin in judged.values() if lin is not None and lin.judgeable]
    reached = all(lin is not None and lin.last[1] >= reach(unit, up_to)
                  for unit, lin in judged.items())
    if any(not lin.linear for lin in found):
        status = MISS
    elif reached and len(found) == len(judged):
        status = PASS
    else:
        status = UNMEASURED
    lines = [f"- {status}: linear up to N=M={up_to:,} (each unit's CPU time per extra item, "
             f"whole processes, may grow at most {LINEAR_GROWTH:g}x from the first to the last "
             f"step between sizes of at least {LINEAR_MIN_N})"]
    for unit, lin in judged.items():
        text = (f"  - {unit}: {linearity_status(lin)}: "
                f"{linearity_text(lin, 'route' if unit == 'apply-routes' else 'CIDR')}")
        if lin is not None and lin.judgeable and not lin.linear:
            text += f"; missed by a factor of {lin.growth / LINEAR_GROWTH:.2f}"
        lines.append(text)
    if not reached:
        lines.append(f"  - the run did not reach {up_to:,} (run with --big {up_to})")
    elif reach("check-overlap", up_to) < up_to:
        lines.append(f"  - check-overlap up to M={reach('check-overlap', up_to):,}, the most "
                     "expected CIDRs a config may list")
    return Outcome(status, lines)


def rss_outcome(unit: str, rss_by_size: Dict[int, float], size: str = "N",
                limit: float = RSS_LIMIT_MIB) -> Outcome:
    """The worst peak RSS of one unit over every size (``size`` names it), against ``limit``."""
    worst_n = max(rss_by_size, key=lambda n: rss_by_size[n])
    worst = rss_by_size[worst_n]
    status = PASS if worst <= limit else MISS
    line = (f"- {status}: {unit} peak RSS at most {limit:g} MiB: worst {worst:.1f} MiB "
            f"({size}={worst_n:,})")
    if status == MISS:
        over = ", ".join(f"{size}={n:,} ({mib:.1f})" for n, mib in sorted(rss_by_size.items())
                         if mib > limit)
        line += (f", over by {worst - limit:.1f} MiB (a factor of {worst / limit:.2f}); "
                 f"over the limit at {over}")
    return Outcome(status, [line])


def judge(results: Sequence[SizeResult]) -> List[Outcome]:
    """Every target, in the issue's order, from one run's results."""
    out = []
    by_size = {(r.n, r.m): r for r in results}
    for target in RATIO_TARGETS:
        res = by_size.get((target.n, target.n)) or by_size.get(
            (target.n, min(target.n, MAX_CHECK)))
        if res is None:
            out.append(Outcome(UNMEASURED, [
                f"- {UNMEASURED}: N=M={target.n:,}, both units {target.meaning} "
                f"(target >= {target.min_ratio:g}x): this size was not in the run"]))
            continue
        alone = [(UNIT_LABELS[u], median(res.ratios(u)), median(res.ratios(u, "cpu")))
                 for u in ("apply", "check")]
        out.append(ratio_outcome(target, res.ratios("total"), res.ratios("total", "cpu"),
                                 res.med("ours", "total"), res.med("base", "total"), alone,
                                 res.m))
    out.append(linear_outcome(linearity_by_unit(results), LINEAR_UP_TO))
    for unit in ("apply", "check"):
        rss: Dict[int, float] = {}
        for r in results:  # the worst where --big-check repeats a size
            if items(r, unit):
                rss[items(r, unit)] = max(r.rss_mib(unit), rss.get(items(r, unit), 0.0))
        if rss:
            out.append(rss_outcome(UNIT_LABELS[unit], rss, "N" if unit == "apply" else "M"))
    return out


def linearity_by_unit(results: Sequence[SizeResult]) -> Dict[str, Optional[Linearity]]:
    """The linearity verdict of each unit: its whole processes' median CPU time by size.

    CPU time, not wall: on a busy machine a process's wall time also counts the time it
    waited for a core, which a marginal cost would read as work.
    """
    return {UNIT_LABELS[u]: linearity(whole_points(results, u, kind="cpu"))
            for u in ("apply", "check")}
