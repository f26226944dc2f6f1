"""Issue 11's targets as the benchmark judges them (benchmarks/hrbench/targets.py).

Expected statuses and "missed by" factors are worked out by hand from the inputs.
"""

from __future__ import annotations

from typing import List, Optional

from bench_support import proc, sides
from hrbench.pairs import Side
from hrbench.results import SizeResult
from hrbench.stats import Linearity
from hrbench.targets import (
    MISS,
    PASS,
    RATIO_TARGETS,
    UNMEASURED,
    judge,
    linear_outcome,
    ratio_outcome,
    rss_outcome,
)

SMALL, MID, BIG = RATIO_TARGETS


def test_the_issue_targets() -> None:
    assert [(t.n, t.min_ratio) for t in RATIO_TARGETS] == [(10, 1.0), (1000, 20.0),
                                                           (10000, 30.0)]


def test_slower_than_bash_at_ten_misses_and_says_by_how_much() -> None:
    out = ratio_outcome(SMALL, [0.5, 0.4, 0.6], [0.5], ours_s=0.12, base_s=0.06)
    assert out.status == MISS
    text = "\n".join(out.lines)
    assert out.lines[0].startswith("- MISS: N=M=10, both units: baseline/ours 0.50x")
    assert "[0.40x-0.60x]" in text
    # 1 / 0.5; the budget is the baseline's 0.060 s, which ours (0.120 s) exceeds by 0.060 s.
    assert "missed by a factor of 2.00" in text
    assert "at most 0.060 s, 0.060 s less" in text


def test_meeting_a_ratio_target_passes_without_a_miss_line() -> None:
    out = ratio_outcome(MID, [24.0, 25.0, 26.0], [30.0], ours_s=0.2, base_s=5.0,
                        alone=[("apply-routes", 20.5, 21.0)])
    assert out.status == PASS
    assert "baseline/ours 25.0x" in out.lines[0]
    assert "  - apply-routes alone: 20.5x wall, 21.0x CPU" in out.lines
    assert not any("missed" in line for line in out.lines)


def test_ratio_target_boundary() -> None:
    assert ratio_outcome(MID, [20.0], [20.0], 1.0, 20.0).status == PASS
    short = ratio_outcome(MID, [19.9], [19.9], 1.0, 19.9)
    assert short.status == MISS
    assert "missed by a factor of 1.01" in short.lines[-1]  # 20 / 19.9 = 1.005


def _lin(first: float, last: float, last_n: int = 10000) -> Linearity:
    return Linearity(100, first, last_n, last)


def test_linear_up_to_ten_thousand_passes() -> None:
    out = linear_outcome({"apply-routes": _lin(6.4e-4, 3.1e-4),
                          "check-overlap": _lin(4e-4, 4.4e-4)}, 10000)
    assert out.status == PASS
    assert "  - apply-routes: 640 us per route at 100, 310 us at 10,000: 0.48x " \
           "(quadratic would be 100x)" in out.lines


def test_quadratic_unit_misses_linearity_with_its_factor() -> None:
    """Negative control: one unit 100x dearer per item at 100x the size."""
    out = linear_outcome({"apply-routes": _lin(1e-4, 1e-4),
                          "check-overlap": _lin(1e-4, 1e-2)}, 10000)
    assert out.status == MISS
    assert out.lines[2].endswith("missed by a factor of 66.67")  # 100 / 1.5


def test_linearity_not_reaching_the_size_is_never_a_pass() -> None:
    out = linear_outcome({"apply-routes": _lin(1e-4, 1e-4, last_n=1000),
                          "check-overlap": None}, 10000)
    assert out.status == UNMEASURED
    assert "fewer than two sizes" in out.lines[2]
    assert out.lines[-1] == "  - the run did not reach 10,000 (run with --big 10000)"


def test_rss_within_the_limit_passes() -> None:
    out = rss_outcome("apply-routes", {10: 14.2, 1000: 19.9})
    assert out.lines == ["- PASS: apply-routes peak RSS at most 20 MiB: worst 19.9 MiB "
                         "(N=1,000)"]


def test_rss_over_the_limit_misses_and_names_every_size_over() -> None:
    out = rss_outcome("check-overlap", {10: 19.0, 100: 35.0, 10000: 45.0}, "M")
    assert out.status == MISS
    assert out.lines[0] == ("- MISS: check-overlap peak RSS at most 20 MiB: worst 45.0 MiB "
                            "(M=10,000), over by 25.0 MiB (a factor of 2.25); over the limit "
                            "at M=100 (35.0), M=10,000 (45.0)")


def _size(n: int, ours_total: float, base_total: float, rss_kb: int = 16384,
          inproc: Optional[List[dict]] = None) -> SizeResult:
    """Three identical run pairs; each unit takes half of the side's total."""
    o, b = ours_total / 2, base_total / 2
    return SizeResult(n, n, ours=[Side(proc(o, rss_kb=rss_kb), proc(o, rss_kb=rss_kb))] * 3,
                      base=sides([b] * 3, [b] * 3), inproc=inproc or [])


def test_judge_a_whole_run() -> None:
    per_item = 3e-4  # linear in-process cost: the same seconds per item at every size
    results = [
        _size(10, 0.08, 0.064),
        _size(100, 0.1, 0.6, inproc=[{"apply_s": 100 * per_item, "check_s": 100 * per_item}]),
        _size(1000, 0.2, 5.0, inproc=[{"apply_s": 1000 * per_item,
                                       "check_s": 1000 * per_item}]),
        _size(10000, 2.0, 50.0, rss_kb=30720,
              inproc=[{"apply_s": 10000 * per_item, "check_s": 10000 * per_item}]),
    ]
    got = [o.status for o in judge(results)]
    # 0.064/0.08 = 0.8x < 1; 5.0/0.2 = 25x >= 20; 50/2 = 25x < 30; linear; 30 MiB > 20 twice.
    assert got == [MISS, PASS, MISS, PASS, MISS, MISS]


def test_judge_reports_sizes_not_in_the_run_as_not_measured() -> None:
    got = judge([_size(10, 0.05, 0.064), _size(100, 0.1, 0.6)])
    assert [o.status for o in got] == [PASS, UNMEASURED, UNMEASURED, UNMEASURED, PASS, PASS]
    assert got[1].lines == ["- NOT MEASURED: N=M=1,000, both units at least 20x faster than "
                            "bash (target >= 20x): this size was not in the run"]
