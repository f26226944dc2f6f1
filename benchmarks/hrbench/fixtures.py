"""Fresh ND-isr-shaped namespace pairs, from the tests' own fixture (tests/netns.py).

Every pair a benchmark creates is recorded, so all are deleted however the run ends
(normal exit, an error, Ctrl-C or TERM), and any left behind can be named.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List

from .procs import sh

REPO = Path(__file__).resolve().parent.parent.parent
RUN = "run"  # in the work directory: a link to the units' run directories, on a tmpfs
SHM = "/dev/shm"


def tmpfs_run_dirs(work: Path) -> Path:
    """A new directory on a tmpfs, linked as ``work/RUN``, for check-overlap's ``--run-dir``.

    On a node the run directory is under /run, a tmpfs, where the fsync of each marker
    costs nothing; on the disk under /tmp here four of them cost ~17 ms, which would be
    measured as ours although no node pays it.
    """
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        if not any(line.split()[1:3] == [SHM, "tmpfs"] for line in mounts):
            raise SystemExit(f"{SHM} is not a tmpfs: the run directories need one")
    shm = Path(tempfile.mkdtemp(prefix="hr-bench-run-", dir=SHM))
    (work / RUN).symlink_to(shm)
    return shm


def _tests_netns() -> Any:
    """tests/netns.py, reused rather than copied: the same shape the tests use."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import netns

    return netns


class Hosts:
    """Every namespace pair this run created, so all are deleted however the run ends."""

    def __init__(self) -> None:
        self.live: List[Any] = []
        self.created: List[str] = []
        self._factory: Callable[[], Any] = _tests_netns().NDHost

    @contextlib.contextmanager
    def fresh(self) -> Iterator[Any]:
        """A new ND-isr-shaped namespace pair, deleted (bounded timeouts) on the way out."""
        host = self._factory()
        self.live.append(host)
        self.created += [host.ns, host.peer]
        try:
            yield host
        finally:
            self.close(host)

    def close(self, host: Any) -> None:
        with contextlib.suppress(ValueError):
            self.live.remove(host)
        host.close()

    def close_all(self) -> None:
        for host in list(self.live):
            with contextlib.suppress(Exception):
                self.close(host)

    def leftovers(self) -> List[str]:
        listed = sh("ip", "netns", "list", timeout=10)
        names = {line.split()[0] for line in listed.splitlines() if line.strip()}
        return sorted(names & set(self.created))


def cluster_cidr() -> str:
    """The cluster CIDR the ND-isr fixture's ib0 /16 shadows."""
    return str(_tests_netns().CLUSTER_CIDR)


def route_count(ns: str, *selector: str) -> int:
    """IPv4 routes in the main table of ``ns`` (multipath nexthop lines not counted)."""
    out = sh("ip", "-n", ns, "-4", "route", "show", "table", "main", *selector, timeout=60)
    return len([line for line in out.splitlines() if line and not line.startswith(" ")])
