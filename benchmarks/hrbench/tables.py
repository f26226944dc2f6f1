"""Markdown for the README: number formats, a table renderer, and the benchmark's tables."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .results import UNIT_LABELS, SizeResult, by_items, items, whole_points
from .stats import LINEAR_MIN_N, Linearity, marginal, median, per_item, spread


def fmt_s(value: float) -> str:
    """Seconds: three decimals below 10 s, one above; ``-`` for no value (NaN)."""
    if value != value:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def fmt_ratio(value: float) -> str:
    """A ratio: two decimals below 10x, where 0.95x and 1.04x must not both read 1.0x."""
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def ratio_cell(ratios: Sequence[float], bold: bool = False) -> str:
    """``median [min-max]`` of per-run ratios, formatted as the targets print them (a 0.96x
    MISS must not read 1.0x in the table); the median in bold for the headline rows."""
    mid = fmt_ratio(median(ratios))
    low, high = spread(ratios)
    return f"{'**' + mid + '**' if bold else mid} [{fmt_ratio(low)}-{fmt_ratio(high)}]"


def markdown_table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table; ``align`` has one letter per column: ``l`` left, ``r`` right."""
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("every row needs one cell per column")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule,
            *("| " + " | ".join(row) + " |" for row in rows)]


def main_table(results: Sequence[SizeResult], runs: int) -> List[str]:
    """Per size and unit: both sides' wall and CPU medians, per-pair ratios, our peak RSS."""
    header = ["N routes", "M CIDRs", "unit", "ours wall (s)", "baseline wall (s)",
              f"baseline/ours wall (median of {runs} per-run ratios) [min-max]",
              "ours CPU (s)", "baseline CPU (s)", "baseline/ours CPU", "ours peak RSS (MiB)"]
    rows = []
    for res in results:
        for unit in res.units():
            bold = unit == "total" or not res.m
            rows.append([
                f"{res.n:,}", f"{res.m:,}", UNIT_LABELS[unit],
                fmt_s(res.med("ours", unit)), fmt_s(res.med("base", unit)),
                ratio_cell(res.ratios(unit), bold),
                fmt_s(res.med("ours", unit, "cpu")), fmt_s(res.med("base", unit, "cpu")),
                ratio_cell(res.ratios(unit, "cpu")),
                f"{res.rss_mib(unit):.1f}" if unit != "total" else ""])
    return markdown_table(header, "rrlrrrrrrr", rows)


def _marginal_cells(points: List[Tuple[int, float]], scale: float, digits: int) -> List[str]:
    return ["-" if v is None else f"{v * scale:.{digits}f}" for v in marginal(points)]


def scaling_table(results: Sequence[SizeResult], unit: str) -> List[str]:
    """Time per item at every size for one unit: whole processes (wall and CPU), in-process,
    and the baseline.

    Whole-process time per item at small N is mostly interpreter start, so the marginal
    columns (extra time per extra item since the previous size) show the per-item cost; the
    marginal CPU column is what the linearity verdict judges.
    """
    item = "route" if unit == "apply" else "CIDR"
    sized = by_items(results, unit)
    ours, base = whole_points(sized, unit), whole_points(sized, unit, "base")
    cpu = whole_points(sized, unit, kind="cpu")
    m_ours, m_base = _marginal_cells(ours, 1e3, 3), _marginal_cells(base, 1e3, 2)
    m_cpu = _marginal_cells(cpu, 1e6, 0)
    each_ours, each_base = per_item(ours), per_item(base)
    header = [f"{'N routes' if unit == 'apply' else 'M CIDRs'}", "ours wall (s)",
              f"ours ms/{item}", f"ours marginal ms/{item}", "ours CPU (s)",
              f"ours marginal CPU us/{item}", "ours in-process (s)", f"in-process us/{item}",
              "baseline wall (s)", f"baseline ms/{item}", f"baseline marginal ms/{item}"]
    if unit == "apply":
        header.insert(8, "config load+validate (ms)")
    rows = []
    for i, res in enumerate(sized):
        k = items(res, unit)
        inproc = res.inproc_med(f"{unit}_s")
        row = [f"{k:,}", fmt_s(ours[i][1]), f"{each_ours[i] * 1e3:.3f}", m_ours[i],
               fmt_s(cpu[i][1]), m_cpu[i],
               fmt_s(inproc), "-" if inproc != inproc else f"{inproc / k * 1e6:.0f}",
               fmt_s(base[i][1]), f"{each_base[i] * 1e3:.2f}", m_base[i]]
        if unit == "apply":
            load = res.inproc_med("load_s")
            row.insert(8, "-" if load != load else f"{load * 1e3:.1f}")
        rows.append(row)
    return markdown_table(header, "r" * len(header), rows)


def import_table(top: Sequence[Tuple[str, float]],
                 children: Optional[dict] = None) -> List[str]:
    """Top-level imports by cumulative time, with their heaviest direct children."""
    kids = children or {}
    rows = [[name, f"{ms:.1f}", ", ".join(f"{c} {v:.0f}" for c, v in kids.get(name, []))]
            for name, ms in top]
    return markdown_table(["top-level import", "cumulative (ms)",
                           "heaviest direct children (ms)"], "lrl", rows)


def linearity_status(lin: Optional[Linearity]) -> str:
    """``linear``, ``NOT linear``, or ``cannot judge`` (too few sizes, or no extra cost seen)."""
    if lin is None or not lin.judgeable:
        return "cannot judge"
    return "linear" if lin.linear else "NOT linear"


def linearity_text(lin: Optional[Linearity], item: str) -> str:
    """What the marginal CPU costs were, and what linear and quadratic work would give."""
    if lin is None:
        return f"fewer than three sizes of at least {LINEAR_MIN_N} in this run"
    (a, b), (c, d) = lin.first, lin.last
    if not lin.judgeable:
        return (f"no extra CPU time measured per {item} from {a:,} to {b:,} "
                f"({lin.first_cost * 1e6:.0f} us), so its growth is unknown")
    return (f"{lin.first_cost * 1e6:.0f} us of CPU per extra {item} from {a:,} to {b:,}, "
            f"{lin.last_cost * 1e6:.0f} us from {c:,} to {d:,}: {fmt_ratio(lin.growth)} "
            f"(linear means about 1x, quadratic would be {lin.quadratic_growth:.0f}x)")


def linearity_verdict(unit: str, lin: Optional[Linearity]) -> str:
    """The verdict line under a scaling table."""
    item = "route" if unit == "apply-routes" else "CIDR"
    return f"Verdict ({unit}): {linearity_status(lin)}: {linearity_text(lin, item)}."
