"""The benchmark's own arithmetic (benchmarks/hrbench/stats.py and results.py).

Every expected value is worked out by hand in the test, never by the code under test.
"""

from __future__ import annotations

import math

import pytest
from bench_support import proc, sides
from hrbench.pairs import Side
from hrbench.results import SizeResult, inproc_points
from hrbench.stats import linearity, marginal, median, pair_ratios, per_item, spread


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


def test_linear_work_with_a_fixed_cost_is_linear() -> None:
    # t = 0.05 + 0.0003 n: 0.0008 s per item at 100, 0.000305 at 10,000.
    lin = linearity([(n, 0.05 + 0.0003 * n) for n in (100, 1000, 10000)])
    assert lin is not None
    assert (lin.first_n, lin.last_n) == (100, 10000)
    assert lin.first_cost == pytest.approx(0.0008)
    assert lin.last_cost == pytest.approx(0.000305)
    assert lin.growth == pytest.approx(0.38125)
    assert lin.linear


def test_quadratic_work_is_not_linear() -> None:
    """Negative control: t = 1e-6 n^2 grows 100x per item from 100 to 10,000."""
    lin = linearity([(n, 1e-6 * n * n) for n in (100, 1000, 10000)])
    assert lin is not None
    assert lin.growth == pytest.approx(100.0)
    assert lin.size_ratio == 100.0
    assert not lin.linear


def test_linearity_bound_is_inclusive_at_one_and_a_half() -> None:
    at_bound = linearity([(100, 0.01), (1000, 0.15)])  # 1e-4 then 1.5e-4 s per item
    just_over = linearity([(100, 0.01), (1000, 0.151)])
    assert at_bound is not None and at_bound.linear
    assert just_over is not None and not just_over.linear


def test_linearity_ignores_sizes_below_100() -> None:
    # The N=10 point (0.5 s per item of start-up) would make anything look linear.
    lin = linearity([(10, 5.0), (100, 0.01), (1000, 1.0)])
    assert lin is not None
    assert lin.first_n == 100
    assert lin.growth == pytest.approx(10.0)
    assert not lin.linear


def test_linearity_needs_two_sizes() -> None:
    assert linearity([(10, 0.1), (100, 0.2)]) is None
    assert linearity([]) is None


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


def test_inproc_points_use_routes_for_apply_and_cidrs_for_check() -> None:
    results = [SizeResult(1000, 10, inproc=[{"apply_s": 0.3, "check_s": 0.02},
                                            {"apply_s": 0.5, "check_s": 0.04}]),
               SizeResult(100, 0, inproc=[{"apply_s": 0.1}])]
    assert inproc_points(results, "apply") == [(100, 0.1), (1000, 0.4)]
    assert inproc_points(results, "check") == [(10, pytest.approx(0.03))]
