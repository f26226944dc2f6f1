"""Puts benchmarks/ on sys.path so tests can import the benchmark's parts (hrbench), and
builds measured processes with chosen numbers for the arithmetic tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from hrbench.pairs import Side  # noqa: E402
from hrbench.procs import Proc  # noqa: E402


def proc(wall: float, cpu: Optional[float] = None, rss_kb: int = 10240) -> Proc:
    return Proc(wall, wall if cpu is None else cpu, rss_kb, 0, "", "")


def sides(apply: Sequence[float], check: Sequence[Optional[float]]) -> list:
    """One Side per run from wall times (CPU = wall); None for no check."""
    return [Side(proc(a), None if c is None else proc(c)) for a, c in zip(apply, check)]
