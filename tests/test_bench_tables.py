"""The benchmark's Markdown (benchmarks/hrbench/tables.py): formats and whole tables, with
the expected text written out by hand."""

from __future__ import annotations

import pytest
from bench_support import proc, sides
from hrbench.pairs import Side
from hrbench.results import SizeResult
from hrbench.stats import Linearity
from hrbench.tables import (
    fmt_ratio,
    fmt_s,
    import_table,
    linearity_verdict,
    main_table,
    markdown_table,
    ratio_cell,
    scaling_table,
)


def test_number_formats() -> None:
    assert fmt_s(0.0414) == "0.041"
    assert fmt_s(12.34) == "12.3"
    assert fmt_s(float("nan")) == "-"
    assert fmt_ratio(0.954) == "0.95x"
    assert fmt_ratio(1.04) == "1.04x"
    assert fmt_ratio(24.56) == "24.6x"


def test_ratio_cell() -> None:
    assert ratio_cell([2.0, 3.0, 2.5], bold=True) == "**2.50x** [2.00x-3.00x]"
    assert ratio_cell([0.14, 0.12]) == "0.13x [0.12x-0.14x]"
    assert ratio_cell([24.0, 26.0]) == "25.0x [24.0x-26.0x]"


def test_ratio_cell_keeps_a_miss_below_one_visible() -> None:
    """Negative control: with one decimal, 0.96x (a MISS of "no slower") read 1.0x."""
    assert ratio_cell([0.96]) == "0.96x [0.96x-0.96x]"


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], "lr", [["x", "1"], ["y", "22"]]) == [
        "| a | b |", "|---|---:|", "| x | 1 |", "| y | 22 |"]


def test_markdown_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError, match="one cell per column"):
        markdown_table(["a", "b"], "lr", [["x"]])


def test_main_table_rows() -> None:
    res = SizeResult(10, 10,
                     ours=[Side(proc(0.04, rss_kb=15360), proc(0.05, rss_kb=16384)),
                           Side(proc(0.06, rss_kb=14336), proc(0.05, rss_kb=15360))],
                     base=sides([0.02, 0.03], [0.04, 0.05]))
    lines = main_table([res], 2)
    assert lines[0].startswith("| N routes | M CIDRs | unit | ours wall (s) |")
    assert "median of 2 per-run ratios" in lines[0]
    assert lines[1] == "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    # apply: ratios 0.02/0.04 = 0.5, 0.03/0.06 = 0.5; worst RSS 15360 KiB = 15.0 MiB.
    assert lines[2] == ("| 10 | 10 | apply-routes | 0.050 | 0.025 | 0.50x [0.50x-0.50x] "
                        "| 0.050 | 0.025 | 0.50x [0.50x-0.50x] | 15.0 |")
    # both: ours 0.09 and 0.11, baseline 0.06 and 0.08: ratios 0.667 and 0.727, median 0.697.
    assert lines[4] == ("| 10 | 10 | both units | 0.100 | 0.070 | **0.70x** [0.67x-0.73x] "
                        "| 0.100 | 0.070 | 0.70x [0.67x-0.73x] |  |")


def test_scaling_table_per_item_and_marginal_columns() -> None:
    results = [SizeResult(n, n, ours=[Side(proc(wall, cpu), proc(wall, cpu))],
                          base=sides([base], [base]),
                          inproc=[{"apply_s": inproc, "load_s": 0.002, "check_s": inproc}])
               for n, wall, cpu, base, inproc in ((10, 0.04, 0.03, 0.02, 0.001),
                                                  (100, 0.13, 0.075, 0.2, 0.01))]
    lines = scaling_table(results, "apply")
    assert lines[0] == (
        "| N routes | ours wall (s) | ours ms/route | ours marginal ms/route | ours CPU (s) "
        "| ours marginal CPU us/route | ours in-process (s) | in-process us/route "
        "| config load+validate (ms) | baseline wall (s) | baseline ms/route "
        "| baseline marginal ms/route |")
    # 0.13 s / 100 = 1.300 ms per route; (0.13 - 0.04) / 90 = 1.000 ms per extra route;
    # CPU (0.075 - 0.03) / 90 = 500 us; in-process 0.01 s / 100 = 100 us; baseline
    # (0.2 - 0.02) / 90 = 2.00 ms.
    assert lines[3] == ("| 100 | 0.130 | 1.300 | 1.000 | 0.075 | 500 | 0.010 | 100 | 2.0 "
                        "| 0.200 | 2.00 | 2.00 |")
    assert lines[2].split(" | ")[3] == "-"  # no marginal cost at the first size
    check = scaling_table(results, "check")
    assert check[0].startswith("| M CIDRs | ours wall (s) | ours ms/CIDR |")
    assert "config load" not in check[0]


def test_scaling_table_of_a_repeated_item_count() -> None:
    """--big 10000 --big-check 1000 repeats M=1,000; that once crashed the report with
    "sizes must increase".  The check's table keeps the N=M run's numbers."""
    results = [SizeResult(n, m, ours=sides([wall], [wall]), base=sides([1.0], [1.0]))
               for n, m, wall in ((10, 10, 0.1), (1000, 1000, 0.3), (10000, 1000, 9.0))]
    rows = scaling_table(results, "check")[2:]
    assert [row.split(" | ")[:2] for row in rows] == [["| 10", "0.100"], ["| 1,000", "0.300"]]
    assert len(scaling_table(results, "apply")) == 5


def test_linearity_verdict_lines() -> None:
    assert linearity_verdict("apply-routes", Linearity((100, 1000), 9.5e-5, (1000, 10000),
                                                       1.02e-4)) == (
        "Verdict (apply-routes): linear: 95 us of CPU per extra route from 100 to 1,000, "
        "102 us from 1,000 to 10,000: 1.07x (linear means about 1x, quadratic would be 10x).")
    assert linearity_verdict("check-overlap", Linearity((100, 1000), 1e-5, (1000, 10000),
                                                        1e-4)) == (
        "Verdict (check-overlap): NOT linear: 10 us of CPU per extra CIDR from 100 to 1,000, "
        "100 us from 1,000 to 10,000: 10.0x (linear means about 1x, quadratic would be 10x).")
    assert linearity_verdict("apply-routes", None) == (
        "Verdict (apply-routes): cannot judge: fewer than three sizes of at least 100 in this "
        "run.")
    assert linearity_verdict("apply-routes", Linearity((100, 1000), -2e-6, (1000, 10000),
                                                       1e-4)) == (
        "Verdict (apply-routes): cannot judge: no extra CPU time measured per route from 100 "
        "to 1,000 (-2 us), so its growth is unknown.")


def test_import_table() -> None:
    assert import_table([("pyroute2", 152.34), ("json", 2.0)],
                        {"pyroute2": [("pyroute2.ndb", 40.4), ("asyncio", 30.0)]}) == [
        "| top-level import | cumulative (ms) | heaviest direct children (ms) |",
        "|---|---:|---|",
        "| pyroute2 | 152.3 | pyroute2.ndb 40, asyncio 30 |",
        "| json | 2.0 |  |"]
