"""Issue 11's targets, judged on one run's numbers, each line saying by how much it missed.

* N=M=10: both units together no slower than the two bash loops together;
* N=M=1000: both units at least 20x faster than bash;
* N=M=10,000: at least 30x, and linear (in-process cost per item up to that size);
* peak RSS per unit at most 20 MiB, at every size measured.

Ratios are medians of per-run-pair ratios (stats.py).  A target whose size was not in the
run is reported as NOT MEASURED, never as passed.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .results import UNIT_LABELS, SizeResult, inproc_points, items
from .stats import LINEAR_GROWTH, Linearity, linearity, median, spread
from .tables import fmt_ratio, fmt_s

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
                  alone: Sequence[Tuple[str, float, float]] = ()) -> Outcome:
    """Judge the median per-pair ratio; ``alone`` is (unit, wall ratio, CPU ratio) each."""
    ratio = median(ratios)
    low, high = spread(ratios)
    status = PASS if ratio >= target.min_ratio else MISS
    lines = [f"- {status}: N=M={target.n:,}, both units: baseline/ours {fmt_ratio(ratio)} "
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


def linear_outcome(judged: Dict[str, Optional[Linearity]], up_to: int) -> Outcome:
    """Linear up to ``up_to`` items: every unit's cost per item grows at most LINEAR_GROWTH."""
    reached = all(lin is not None and lin.last_n >= up_to for lin in judged.values())
    linear = all(lin is not None and lin.linear for lin in judged.values())
    status = (MISS if not linear and reached else PASS if reached else UNMEASURED)
    lines = [f"- {status}: linear up to N=M={up_to:,} (in-process cost per item, imports "
             f"excluded, may grow at most {LINEAR_GROWTH:g}x from N=100)"]
    for unit, lin in judged.items():
        item = "route" if unit == "apply-routes" else "CIDR"
        if lin is None:
            lines.append(f"  - {unit}: fewer than two sizes of at least 100 in this run")
            continue
        text = (f"  - {unit}: {lin.first_cost * 1e6:.0f} us per {item} at {lin.first_n:,}, "
                f"{lin.last_cost * 1e6:.0f} us at {lin.last_n:,}: {fmt_ratio(lin.growth)} "
                f"(quadratic would be {lin.size_ratio:.0f}x)")
        if not lin.linear:
            text += f"; missed by a factor of {lin.growth / LINEAR_GROWTH:.2f}"
        lines.append(text)
    if not reached:
        lines.append(f"  - the run did not reach {up_to:,} (run with --big {up_to})")
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
        res = by_size.get((target.n, target.n))
        if res is None:
            out.append(Outcome(UNMEASURED, [
                f"- {UNMEASURED}: N=M={target.n:,}, both units {target.meaning} "
                f"(target >= {target.min_ratio:g}x): this size was not in the run"]))
            continue
        alone = [(UNIT_LABELS[u], median(res.ratios(u)), median(res.ratios(u, "cpu")))
                 for u in ("apply", "check")]
        out.append(ratio_outcome(target, res.ratios("total"), res.ratios("total", "cpu"),
                                 res.med("ours", "total"), res.med("base", "total"), alone))
    out.append(linear_outcome(linearity_by_unit(results), LINEAR_UP_TO))
    for unit in ("apply", "check"):
        rss = {items(r, unit): r.rss_mib(unit) for r in results if items(r, unit)}
        if rss:
            out.append(rss_outcome(UNIT_LABELS[unit], rss, "N" if unit == "apply" else "M"))
    return out


def linearity_by_unit(results: Sequence[SizeResult]) -> Dict[str, Optional[Linearity]]:
    """The linearity verdict of each unit's in-process time over the run's sizes."""
    return {UNIT_LABELS[u]: linearity(inproc_points(list(results), u)) for u in ("apply", "check")}
