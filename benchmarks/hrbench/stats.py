"""The benchmark's arithmetic, on plain numbers: medians, per-pair ratios, ranges,
cost per item, marginal cost, and the linearity verdict.

Ratios are taken per run pair (the same run, the same size, one side right after the other)
and then their median: a pair shares the machine's state at that moment, so a busy second
hurts both sides of one ratio rather than one side of a ratio of medians.
"""

from __future__ import annotations

import statistics
from typing import List, NamedTuple, Optional, Sequence, Tuple

# The linearity verdict compares the marginal cost per item (extra seconds per extra item)
# of the first and the last segment between judged sizes: a fixed cost cancels out, linear
# work gives about 1x, and quadratic work gives (a + b) / (c + d) for segments [c, d] and
# [a, b], 10x for 100 -> 1,000 against 1,000 -> 10,000.  Average cost per item would not do:
# a fixed cost spread over more items hides a quadratic term that is most of the time at
# the largest size.
LINEAR_GROWTH = 1.5
LINEAR_MIN_N = 100  # below this, a segment adds too few items to rise above the noise

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


def slope(a: Point, b: Point) -> float:
    """Extra seconds per extra item from point ``a`` to the larger point ``b``."""
    if b[0] <= a[0]:
        raise ValueError(f"sizes must increase: {a[0]} then {b[0]}")
    return (b[1] - a[1]) / (b[0] - a[0])


def marginal(points: Sequence[Point]) -> List[Optional[float]]:
    """Extra seconds per extra item since the previous point (None for the first).

    At small N a whole process's time is mostly interpreter start; the marginal cost shows
    what each further route or CIDR costs on its own.
    """
    return [None if i == 0 else slope(points[i - 1], point) for i, point in enumerate(points)]


class Linearity(NamedTuple):
    """Marginal cost per item over the first and the last segment between judged sizes."""

    first: Tuple[int, int]  # (from items, to items)
    first_cost: float  # extra seconds per extra item over ``first``
    last: Tuple[int, int]
    last_cost: float

    @property
    def judgeable(self) -> bool:
        """Whether the first segment measured any extra cost at all (noise can hide it)."""
        return self.first_cost > 0

    @property
    def growth(self) -> float:
        """last/first marginal cost; NaN when the first segment measured none."""
        return self.last_cost / self.first_cost if self.judgeable else float("nan")

    @property
    def quadratic_growth(self) -> float:
        """What ``growth`` would be for purely quadratic work."""
        return sum(self.last) / sum(self.first)

    @property
    def linear(self) -> bool:
        return self.judgeable and self.growth <= LINEAR_GROWTH


def linearity(points: Sequence[Point], min_n: int = LINEAR_MIN_N) -> Optional[Linearity]:
    """Judge ``points`` at sizes >= ``min_n``; None when fewer than three such sizes exist
    (two segments are the least that can show a marginal cost growing)."""
    judged = sorted(p for p in points if p[0] >= min_n)
    if len(judged) < 3:
        return None
    return Linearity((judged[0][0], judged[1][0]), slope(judged[0], judged[1]),
                     (judged[-2][0], judged[-1][0]), slope(judged[-2], judged[-1]))
