"""The benchmark's arithmetic, on plain numbers: medians, per-pair ratios, ranges,
cost per item, marginal cost, and the linearity verdict.

Ratios are taken per run pair (the same run, the same size, one side right after the other)
and then their median: a pair shares the machine's state at that moment, so a busy second
hurts both sides of one ratio rather than one side of a ratio of medians.
"""

from __future__ import annotations

import statistics
from typing import List, NamedTuple, Optional, Sequence, Tuple

# The linearity verdict: cost per item may grow at most this much from the smallest to the
# largest size judged.  Linear work gives about 1x (less when a fixed cost is spread over
# more items); quadratic work gives the size ratio itself (100x from N=100 to N=10,000).
LINEAR_GROWTH = 1.5
LINEAR_MIN_N = 100  # below this, fixed start-up costs hide the per-item cost

Point = Tuple[int, float]  # (items, seconds)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (printed as ``-``)."""
    return statistics.median(values) if values else float("nan")


def pair_ratios(baseline: Sequence[float], ours: Sequence[float]) -> List[float]:
    """baseline/ours for each run pair, in run order (above 1: ours is faster)."""
    if len(baseline) != len(ours):
        raise ValueError(f"{len(baseline)} baseline runs against {len(ours)} of ours")
    return [b / o for b, o in zip(baseline, ours)]


def spread(values: Sequence[float]) -> Tuple[float, float]:
    """(min, max), or NaNs for no values."""
    if not values:
        return float("nan"), float("nan")
    return min(values), max(values)


def per_item(points: Sequence[Point]) -> List[float]:
    """Seconds per item at each point."""
    return [seconds / items for items, seconds in points]


def marginal(points: Sequence[Point]) -> List[Optional[float]]:
    """Extra seconds per extra item since the previous point (None for the first).

    At small N a whole process's time is mostly interpreter start; the marginal cost shows
    what each further route or CIDR costs on its own.
    """
    out: List[Optional[float]] = []
    for i, (items, seconds) in enumerate(points):
        if i == 0:
            out.append(None)
            continue
        prev_items, prev_seconds = points[i - 1]
        if items <= prev_items:
            raise ValueError(f"sizes must increase: {prev_items} then {items}")
        out.append((seconds - prev_seconds) / (items - prev_items))
    return out


class Linearity(NamedTuple):
    """Cost per item at the smallest and largest judged size, and what that says."""

    first_n: int
    first_cost: float  # seconds per item
    last_n: int
    last_cost: float

    @property
    def growth(self) -> float:
        return self.last_cost / self.first_cost

    @property
    def size_ratio(self) -> float:
        """What ``growth`` would be for quadratic work."""
        return self.last_n / self.first_n

    @property
    def linear(self) -> bool:
        return self.growth <= LINEAR_GROWTH


def linearity(points: Sequence[Point], min_n: int = LINEAR_MIN_N) -> Optional[Linearity]:
    """Judge ``points`` at sizes >= ``min_n``; None when fewer than two such sizes exist."""
    judged = sorted(p for p in points if p[0] >= min_n)
    if len(judged) < 2:
        return None
    (first_n, first_s), (last_n, last_s) = judged[0], judged[-1]
    return Linearity(first_n, first_s / first_n, last_n, last_s / last_n)
