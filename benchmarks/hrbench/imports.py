"""What the units import, from ``-X importtime``: costs, the module list, and the backend.

The module list serves twice: the in-process timings pre-import exactly these modules (so
they show the work and nothing else, with the same objects alive for the garbage collector
as in the unit), and whether ``pyroute2`` is among them tells which kernel backend the unit
really used, whatever the package calls its backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, NamedTuple, Tuple

from .stats import median


class ImportRow(NamedTuple):
    """One ``-X importtime`` line: module, nesting depth, own and cumulative microseconds."""

    name: str
    depth: int
    self_us: int
    cum_us: int


def parse_importtime(stderr: str) -> List[ImportRow]:
    """Every ``import time:`` line of ``stderr``, in output order (children before parents)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        text = name[1:]  # the format is "| " then two spaces per nesting level
        depth = (len(text) - len(text.lstrip(" "))) // 2
        rows.append(ImportRow(text.strip(), depth, int(self_us), int(cum_us)))
    return rows


def imported_modules(stderrs: Iterable[str]) -> List[str]:
    """Every module imported in any of the runs, in first-seen order; ``__main__`` excluded."""
    seen: Dict[str, None] = {}
    for stderr in stderrs:
        for row in parse_importtime(stderr):
            if row.name != "__main__" and not row.name.endswith(".__main__"):
                seen.setdefault(row.name)
    return list(seen)


def backend_of(modules: Iterable[str]) -> str:
    """The kernel backend a unit used, judged by whether it imported pyroute2 at all."""
    if any(m == "pyroute2" or m.startswith("pyroute2.") for m in modules):
        return "pyroute2"
    return "standard library only (pyroute2 not imported)"


@dataclass
class ImportProfile:
    """Median import costs for one unit's command line over several runs."""

    command: str
    total_ms: float
    top: List[Tuple[str, float]]
    children: Dict[str, List[Tuple[str, float]]] = field(default_factory=dict)


def import_profile(samples: List[str], command: str, top_n: int = 12, expand: int = 4,
                   kids_n: int = 6) -> ImportProfile:
    """Medians per top-level import, and the heaviest direct children of the ``expand``
    heaviest; the total is the sum of the top-level cumulative times."""
    tops: Dict[str, List[int]] = {}
    kids: Dict[str, Dict[str, List[int]]] = {}
    totals = []
    for stderr in samples:
        pending: List[ImportRow] = []
        total = 0
        for row in parse_importtime(stderr):
            if row.depth == 0:
                tops.setdefault(row.name, []).append(row.cum_us)
                total += row.cum_us
                for child in pending:
                    if child.depth == 1:
                        kids.setdefault(row.name, {}).setdefault(child.name, []).append(
                            child.cum_us)
                pending = []
            else:
                pending.append(row)
        totals.append(total)
    top = sorted(((n, median(v) / 1000) for n, v in tops.items()), key=lambda item: -item[1])
    children = {}
    for name, _ in top[:expand]:
        ranked = sorted(((c, median(v) / 1000) for c, v in kids.get(name, {}).items()),
                        key=lambda item: -item[1])
        children[name] = ranked[:kids_n]
    return ImportProfile(command, median(totals) / 1000, top[:top_n], children)
