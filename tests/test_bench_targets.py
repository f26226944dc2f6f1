"""Issue 11's targets as the benchmark judges them (benchmarks/hrbench/targets.py).

Expected statuses and "missed by" factors are worked out by hand from the inputs.
"""

from __future__ import annotations

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
    return Linearity((100, 1000), first, (1000, last_n), last)


def test_linear_up_to_ten_thousand_passes() -> None:
    out = linear_outcome({"apply-routes": _lin(6.4e-4, 3.1e-4),
                          "check-overlap": _lin(4e-4, 4.4e-4)}, 10000)
    assert out.status == PASS
    assert out.lines[1] == ("  - apply-routes: linear: 640 us of CPU per extra route from 100 "
                            "to 1,000, 310 us from 1,000 to 10,000: 0.48x (linear means about "
                            "1x, quadratic would be 10x)")
    assert out.lines[2].startswith("  - check-overlap: linear: 400 us of CPU per extra CIDR")


def test_quadratic_unit_misses_linearity_with_its_factor() -> None:
    """Negative control: one unit's marginal cost 10x at the last step, as quadratic work."""
    out = linear_outcome({"apply-routes": _lin(1e-4, 1e-4),
                          "check-overlap": _lin(1e-5, 1e-4)}, 10000)
    assert out.status == MISS
    assert out.lines[2].startswith("  - check-overlap: NOT linear:")
    assert out.lines[2].endswith("missed by a factor of 6.67")  # 10 / 1.5


def test_non_linear_below_the_size_is_a_miss_all_the_same() -> None:
    out = linear_outcome({"apply-routes": _lin(1e-5, 1e-4, last_n=5000),
                          "check-overlap": None}, 10000)
    assert out.status == MISS
    assert out.lines[-1] == "  - the run did not reach 10,000 (run with --big 10000)"


def test_linearity_not_reaching_the_size_is_never_a_pass() -> None:
    out = linear_outcome({"apply-routes": _lin(1e-4, 1e-4, last_n=5000),
                          "check-overlap": None}, 10000)
    assert out.status == UNMEASURED
    assert out.lines[2] == ("  - check-overlap: cannot judge: fewer than three sizes of at "
                            "least 100 in this run")
    assert out.lines[-1] == "  - the run did not reach 10,000 (run with --big 10000)"


def test_an_unmeasurable_first_step_is_never_a_pass() -> None:
    out = linear_outcome({"apply-routes": _lin(1e-4, 1e-4),
                          "check-overlap": _lin(-1e-6, 1e-4)}, 10000)
    assert out.status == UNMEASURED
    assert "no extra CPU time measured per CIDR" in out.lines[2]


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
          m: int = 0) -> SizeResult:
    """Three identical run pairs; each unit takes half of the side's total (CPU = wall)."""
    o, b = ours_total / 2, base_total / 2
    return SizeResult(n, m or n, ours=[Side(proc(o, rss_kb=rss_kb), proc(o, rss_kb=rss_kb))] * 3,
                      base=sides([b] * 3, [b] * 3))


def test_judge_a_whole_run() -> None:
    # Ours: 0.1 s at 100, then 2e-4 s per extra item (1e-4 per unit): linear.
    results = [_size(10, 0.08, 0.064), _size(100, 0.1, 0.6), _size(1000, 0.28, 7.0),
               _size(10000, 2.08, 52.0, rss_kb=30720)]
    got = [o.status for o in judge(results)]
    # 0.064/0.08 = 0.8x < 1; 7.0/0.28 = 25x >= 20; 52/2.08 = 25x < 30; linear; 30 MiB > 20
    # for each unit.
    assert got == [MISS, PASS, MISS, PASS, MISS, MISS]


def test_judge_a_quadratic_run() -> None:
    """Negative control: the same run but 10,000 costs 2.0 s more, quadratic-like: each unit's
    last step costs (2.04 - 0.14) / 9000 = 2.1e-4 s per item against 1e-4 before."""
    results = [_size(10, 0.08, 0.064), _size(100, 0.1, 0.6), _size(1000, 0.28, 7.0),
               _size(10000, 4.08, 200.0)]
    linear = judge(results)[3]
    assert linear.status == MISS
    assert "2.11x" in linear.lines[1]  # 1.9/9000 / (0.09/900) = 2.11


def test_judge_keeps_the_worst_rss_of_a_repeated_size() -> None:
    results = [_size(10, 0.05, 0.064), _size(100, 0.1, 0.6)]
    results.append(SizeResult(100, 10, ours=[Side(proc(0.1, rss_kb=40960),
                                                  proc(0.1, rss_kb=8192))],
                              base=sides([0.3], [0.3])))
    rss = [o for o in judge(results) if "peak RSS" in o.lines[0]]
    assert rss[0].status == MISS  # apply-routes: 40 MiB at N=100 (the N=100, M=10 run)
    assert "worst 40.0 MiB (N=100)" in rss[0].lines[0]
    assert rss[1].status == PASS  # check-overlap: 16 MiB at M=10 whichever run is kept


def test_judge_reports_sizes_not_in_the_run_as_not_measured() -> None:
    got = judge([_size(10, 0.05, 0.064), _size(100, 0.1, 0.6)])
    assert [o.status for o in got] == [PASS, UNMEASURED, UNMEASURED, UNMEASURED, PASS, PASS]
    assert got[1].lines == ["- NOT MEASURED: N=M=1,000, both units at least 20x faster than "
                            "bash (target >= 20x): this size was not in the run"]


def _cpu_size(n: int, wall: float, cpu: float) -> SizeResult:
    run = Side(proc(wall, cpu), proc(wall, cpu))
    return SizeResult(n, n, ours=[run], base=[Side(proc(9.0), proc(9.0))])


def test_linearity_is_judged_on_cpu_time_not_wall() -> None:
    """On a busy machine wall time also counts waiting for a core.  Here CPU per unit grows
    1e-4 s per item throughout (0.05, 0.14, 1.04 s) while wall jumps at 10,000 (waits)."""
    results = [_cpu_size(100, 0.06, 0.05), _cpu_size(1000, 0.16, 0.14),
               _cpu_size(10000, 5.0, 1.04)]
    assert judge(results)[3].status == PASS
    # Negative control: the same walls with CPU growing like the wall does.
    busy = [_cpu_size(100, 0.06, 0.05), _cpu_size(1000, 0.16, 0.14),
            _cpu_size(10000, 5.0, 4.9)]
    assert judge(busy)[3].status == MISS


def test_the_scale_point_checks_at_most_what_a_config_may_list() -> None:
    """N=10,000 runs with M capped at the package's own limit, and is judged as the 10,000
    point; the check's curve counts as reaching 10,000 at that cap."""
    from hrbench.cli import parse_args
    from hrbench.workload import MAX_CHECK

    from cloudinit_hostrouting.schema import MAX_EXPECTED_CIDRS

    assert MAX_CHECK == MAX_EXPECTED_CIDRS
    assert parse_args([], "").big_check == MAX_CHECK
    assert parse_args(["--big", "2000"], "").big_check == 2000
    results = [_size(10, 0.08, 0.064), _size(100, 0.1, 0.6), _size(1000, 0.28, 7.0),
               _size(10000, 1.08, 52.0, m=MAX_CHECK)]
    outcomes = judge(results)
    assert outcomes[2].status == PASS  # 52 / 1.08 = 48.1x
    assert outcomes[2].lines[0].startswith("- PASS: N=10,000, M=4,096, both units: "
                                           "baseline/ours 48.1x")
    assert outcomes[3].status == PASS
    assert "  - check-overlap up to M=4,096, the most expected CIDRs a config may list" \
        in outcomes[3].lines
    # negative control: a check curve that stops before the cap is not a pass
    short = judge(results[:3] + [_size(10000, 0.48, 52.0, m=2000)])
    assert short[2].status == UNMEASURED and short[3].status == UNMEASURED
