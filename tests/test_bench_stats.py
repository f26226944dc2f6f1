"""The benchmark's own arithmetic (benchmarks/hrbench/stats.py and results.py).

Every expected value is worked out by hand in the test, never by the code under test.
"""

from __future__ import annotations

import math

import pytest
from bench_support import proc, sides
from hrbench.pairs import Side
from hrbench.results import SizeResult, by_items, whole_points
from hrbench.stats import linearity, marginal, median, pair_ratios, per_item, slope, spread


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(median([]))


def test_pair_ratios_are_baseline_over_ours_in_run_order() -> None:
    assert pair_ratios([2.0, 3.0, 8.0], [1.0, 2.0, 2.0]) == [2.0, 1.5, 4.0]


def test_pair_ratios_refuse_unpaired_runs() -> None:
    with pytest.raises(ValueError, match="2 baseline runs against 3"):
        pair_ratios([1.0, 2.0], [1.0, 1.0, 1.0])


def test_median_of_pair_ratios_is_not_ratio_of_medians() -> None:
    """Negative control for the method: the two differ on these numbers (2.0 against 1.5),
    and SizeResult must report the per-pair one."""
    res = SizeResult(10, 0, ours=sides([1.0, 2.0, 2.0], [None] * 3),
                     base=sides([2.0, 3.0, 8.0], [None] * 3))
    assert median(res.ratios("apply")) == 2.0
    assert res.med("base", "apply") / res.med("ours", "apply") == 1.5


def test_spread() -> None:
    assert spread([2.0, 0.5, 1.0]) == (0.5, 2.0)
    assert all(math.isnan(v) for v in spread([]))


def test_per_item_and_marginal_cost() -> None:
    points = [(10, 0.30), (100, 0.39), (1000, 1.29)]
    assert per_item(points) == pytest.approx([0.030, 0.0039, 0.00129])
    # (0.39 - 0.30) / 90 and (1.29 - 0.39) / 900: one millisecond per extra item each time.
    got = marginal(points)
    assert got[0] is None
    assert got[1:] == pytest.approx([0.001, 0.001])


def test_marginal_refuses_sizes_out_of_order() -> None:
    with pytest.raises(ValueError, match="sizes must increase"):
        marginal([(100, 1.0), (10, 0.5)])
    with pytest.raises(ValueError, match="sizes must increase: 1000 then 1000"):
        slope((1000, 1.0), (1000, 2.0))


def test_linear_work_with_a_fixed_cost_is_linear() -> None:
    # t = 0.05 + 0.0003 n: 0.08, 0.35 and 3.05 s; 0.27/900 and 2.7/9000 s per extra item.
    lin = linearity([(n, 0.05 + 0.0003 * n) for n in (100, 1000, 10000)])
    assert lin is not None
    assert (lin.first, lin.last) == ((100, 1000), (1000, 10000))
    assert lin.first_cost == pytest.approx(3e-4)
    assert lin.last_cost == pytest.approx(3e-4)
    assert lin.growth == pytest.approx(1.0)
    assert lin.quadratic_growth == 10.0  # (1,000 + 10,000) / (100 + 1,000)
    assert lin.linear


def test_quadratic_work_is_not_linear() -> None:
    """Negative control: t = 1e-6 n^2; (1.0 - 0.01)/900 = 1.1e-3, (100 - 1)/9000 = 1.1e-2."""
    lin = linearity([(n, 1e-6 * n * n) for n in (100, 1000, 10000)])
    assert lin is not None
    assert lin.first_cost == pytest.approx(1.1e-3)
    assert lin.last_cost == pytest.approx(1.1e-2)
    assert lin.growth == pytest.approx(10.0)
    assert not lin.linear


def test_a_fixed_cost_does_not_hide_a_quadratic_term() -> None:
    """Negative control: t = 0.05 + 1e-8 n^2 is 95% quadratic at 10,000 (1.0 of 1.05 s).

    Its average cost per item falls (5.01e-4 s at 100, 1.05e-4 s at 10,000), which an
    average-cost rule reads as linear; the marginal cost, 1e-8 (n + n') per item, grows
    from 1.1e-5 to 1.1e-4 s, as for any quadratic work."""
    points = [(n, 0.05 + 1e-8 * n * n) for n in (100, 1000, 10000)]
    assert per_item(points)[-1] < per_item(points)[0]
    lin = linearity(points)
    assert lin is not None
    assert lin.first_cost == pytest.approx(1.1e-5)
    assert lin.last_cost == pytest.approx(1.1e-4)
    assert lin.growth == pytest.approx(10.0)
    assert not lin.linear


def test_linearity_bound_is_inclusive_at_one_and_a_half() -> None:
    # Steps of 1,024 then 8,192 items (exact in binary): 1/1,024 s per item, then 1.5/1,024.
    at_bound = linearity([(128, 0.0), (1152, 1.0), (9344, 13.0)])
    just_over = linearity([(128, 0.0), (1152, 1.0), (9344, 13.01)])
    assert at_bound is not None and at_bound.growth == 1.5 and at_bound.linear
    assert just_over is not None and not just_over.linear


def test_linearity_ignores_sizes_below_100() -> None:
    # From N=10 (0.5 s of start-up per item) the first step would cost less than nothing.
    lin = linearity([(10, 5.0), (100, 0.01), (1000, 0.1), (10000, 1.0)])
    assert lin is not None
    assert lin.first == (100, 1000)
    assert lin.growth == pytest.approx(1.0)
    assert lin.linear


def test_linearity_uses_the_first_and_the_last_step() -> None:
    # Steps of 1e-4, 5e-4 (ignored: only the ends are compared) and 2e-4 s per item.
    lin = linearity([(100, 0.0), (200, 0.01), (300, 0.06), (400, 0.08)])
    assert lin is not None
    assert (lin.first, lin.last) == ((100, 200), (300, 400))
    assert lin.growth == pytest.approx(2.0)
    assert lin.quadratic_growth == pytest.approx(7 / 3)  # (300 + 400) / (100 + 200)


def test_linearity_needs_three_sizes_of_at_least_100() -> None:
    assert linearity([(100, 0.1), (1000, 0.2)]) is None
    assert linearity([(10, 0.1), (100, 0.2), (1000, 0.3)]) is None
    assert linearity([]) is None


def test_no_measurable_extra_cost_cannot_be_judged() -> None:
    """Noise can make the first step cost nothing or less; that is neither verdict."""
    lin = linearity([(100, 0.20), (1000, 0.19), (10000, 2.0)])
    assert lin is not None
    assert not lin.judgeable
    assert math.isnan(lin.growth)
    assert not lin.linear


def test_size_result_totals_cpu_and_rss() -> None:
    res = SizeResult(10, 10,
                     ours=[Side(proc(0.2, 0.1, 20480), proc(0.1, 0.05, 10240)),
                           Side(proc(0.3, 0.2, 15360), proc(0.1, 0.05, 12288))],
                     base=sides([0.4, 0.9], [0.2, 0.3]))
    assert res.samples("ours", "total") == pytest.approx([0.3, 0.4])
    assert res.samples("ours", "total", "cpu") == pytest.approx([0.15, 0.25])
    assert res.ratios("total") == pytest.approx([2.0, 3.0])  # 0.6/0.3, 1.2/0.4
    assert res.ratios("check", "cpu") == pytest.approx([4.0, 6.0])  # 0.2/0.05, 0.3/0.05
    assert res.rss_mib("apply") == 20.0  # the worst run: 20480 KiB
    assert res.rss_mib("check") == 12.0
    assert res.units() == ["apply", "check", "total"]
    assert SizeResult(10, 0).units() == ["apply"]


def test_size_result_survives_the_json_round_trip() -> None:
    res = SizeResult(100, 100, ours=sides([0.2], [0.1]), base=sides([0.4], [None]),
                     inproc=[{"apply_s": 0.01, "load_s": 0.001}])
    again = SizeResult.from_dict(res.to_dict())
    assert again == res


def _at(n: int, m: int, seconds: float) -> SizeResult:
    return SizeResult(n, m, ours=sides([seconds], [seconds if m else None]),
                      base=sides([2 * seconds], [2 * seconds if m else None]))


def test_a_units_curve_has_one_point_per_item_count() -> None:
    """--big-check 1000 repeats M=1,000: the check's curve keeps the N=M=1,000 run."""
    results = [_at(10, 10, 0.1), _at(10000, 1000, 9.0), _at(1000, 1000, 0.3), _at(100, 0, 0.2)]
    assert [(r.n, r.m) for r in by_items(results, "check")] == [(10, 10), (1000, 1000)]
    assert [(r.n, r.m) for r in by_items(results, "apply")] == [
        (10, 10), (100, 0), (1000, 1000), (10000, 1000)]
    assert whole_points(results, "check") == [(10, 0.1), (1000, 0.3)]
    assert whole_points(results, "check", "base", "cpu") == [(10, 0.2), (1000, 0.6)]
    assert whole_points(results, "total") == [(10, 0.2), (100, 0.2), (1000, 0.6),
                                              (10000, 18.0)]


def test_rss_probe_wins_over_the_timed_runs_maxrss() -> None:
    """The timed runs' maxrss counts the runner's RSS; the probe's number is the unit's."""
    res = SizeResult(10, 10, [Side(proc(1.0, 1.0, 20480), proc(1.0, 1.0, 12288))], [],
                     rss_kb={"apply": 13312})
    assert res.rss_mib("apply") == 13.0
    assert res.rss_mib("check") == 12.0  # no probe for it: the timed runs' worst
    assert SizeResult.from_dict(res.to_dict()).rss_kb == {"apply": 13312}
