"""Signals fleets can watch: node_exporter textfile metrics and node-problem-detector.

Both are pure renderings of a verdict (a decided ``Report``, or ``Unknown``);
writing them is the caller's job (``atomic.write_atomic``), so node_exporter
never reads half a file.  Unknown is reported as unknown, never as a pass or a
finding: ``hostrouting_check_state{state="unknown"} 1`` (with
``hostrouting_check_ok 0``, so an ``== 0`` alert fires), and NPD's Unknown status.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Tuple

from .overlap import Unknown

if TYPE_CHECKING:
    from .overlap import Verdict

# node-problem-detector custom plugin protocol: exit status and one short line.
NPD_OK, NPD_NONOK, NPD_UNKNOWN = 0, 1, 2
NPD_MAX_MESSAGE = 80  # NPD's default max_output_length


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Exposition text for a sample: integers exactly, timestamps to the millisecond."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


STATES = ("ok", "overlap", "unknown")


def prometheus_text(report: Verdict, now: Optional[float] = None) -> str:
    """The textfile-collector exposition of one check."""
    stamp = time.time() if now is None else now
    lines: List[str] = []

    def metric(name: str, kind: str, help_text: str, samples: List[Tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    metric("hostrouting_check_ok", "gauge",
           "1 if every expected CIDR routes wholly via the default interface.",
           [("", 1 if report.ok else 0)])
    metric("hostrouting_check_state", "gauge",
           "1 for the check's state: ok, overlap, or unknown (the check could not decide).",
           [(f'{{state="{state}"}}', 1 if report.state == state else 0) for state in STATES])
    if report.mode is not None:
        metric("hostrouting_strict", "gauge", "1 if the check runs in STRICT mode.",
               [("", 1 if report.mode == "STRICT" else 0)])
    if not isinstance(report, Unknown):  # an unknown verdict looked at nothing
        metric("hostrouting_default_route_present", "gauge",
               "1 if the family's default route exists.",
               [(f'{{family="ipv{v}"}}', 0 if r is None else 1)
                for v, r in sorted(report.defaults.items())])
        per_cidr = [(f'{{cidr="{_label(str(r.cidr))}",family="ipv{r.cidr.version}"}}', r)
                    for r in report.results]
        metric("hostrouting_cidr_ok", "gauge",
               "1 if this expected CIDR routes wholly via the default interface.",
               [(labels, 0 if r.bad else 1) for labels, r in per_cidr])
        metric("hostrouting_cidr_shadowed_ranges", "gauge",
               "Sub-ranges of this expected CIDR that leave elsewhere.",
               [(labels, len(r.bad)) for labels, r in per_cidr])
        metric("hostrouting_shadowed_ranges", "gauge",
               "Sub-ranges of all expected CIDRs that leave elsewhere.",
               [("", sum(len(r.bad) for r in report.results))])
    metric("hostrouting_last_check_timestamp_seconds", "gauge",
           "When the check last ran (Unix time).", [("", round(stamp, 3))])
    return "\n".join(lines) + "\n"


def npd_result(report: Verdict) -> Tuple[int, str]:
    """(exit status, message) for NPD's custom plugin monitor, condition RouteOverlap."""
    if isinstance(report, Unknown):
        return NPD_UNKNOWN, f"unknown: {report.reason.splitlines()[0]}"[:NPD_MAX_MESSAGE]
    if report.ok:
        return NPD_OK, "routes OK"
    if report.missing_defaults:
        message = "no default route for " + ",".join(f"IPv{v}" for v in report.missing_defaults)
    else:
        first = next(r for r in report.results if r.bad)
        bad = first.bad[0]
        ranges = sum(len(r.bad) for r in report.results)
        message = (f"{bad.region.prefix} via {bad.answer.ifname or bad.answer.kind}, "
                   f"expected {first.expected_if} ({ranges} range(s))")
    return NPD_NONOK, message[:NPD_MAX_MESSAGE]
