"""One run of each side at one size, each in a fresh namespace, with what it did verified.

Both sides run under the same ``ip netns exec``, so its cost is on both sides.  A run that
did not do its job (routes missing, the check not ending OK) stops the benchmark: its time
would describe something else.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, NamedTuple, Optional

from .fixtures import Hosts, route_count
from .package import Package
from .procs import Proc, expect_ok, run_timed, timeout_for
from .workload import Workload

RTPROT_HOSTROUTING = "214"  # the rtnetlink protocol our routes carry
FIXTURE_ROUTES = 3  # default, ib0's /16 and eth0's /24 in the fresh namespace


class Side(NamedTuple):
    """One side's processes for one run at one size (``check`` is None when M is 0)."""

    apply: Proc
    check: Optional[Proc]


def _check_ended_ok(proc: Proc, run_dir: Path, what: str) -> None:
    expect_ok(proc, what)
    if not (run_dir / "route-overlap.ok").exists():
        raise RuntimeError(f"{what} did not end OK:\n{proc.stdout}")


def run_ours(hosts: Hosts, pkg: Package, wl: Workload, run_dir: Path) -> Side:
    """Our two units, as whole processes exactly as the units run them."""
    with hosts.fresh() as host:
        apply = run_timed(pkg.unit_argv(host.ns, "apply-routes", wl.config),
                          timeout_for(wl.n), cwd=pkg.root, env=pkg.env())
        expect_ok(apply, f"ours apply-routes N={wl.n}")
        got = route_count(host.ns, "proto", RTPROT_HOSTROUTING)
        if got != wl.n:
            raise RuntimeError(f"ours installed {got} routes, expected {wl.n}")
        check = None
        if wl.m:
            shutil.rmtree(run_dir, ignore_errors=True)
            check = run_timed(pkg.unit_argv(host.ns, "check-overlap", wl.config, run_dir),
                              timeout_for(wl.m), cwd=pkg.root, env=pkg.env())
            _check_ended_ok(check, run_dir, f"ours check-overlap M={wl.m}")
        return Side(apply, check)


def run_baseline(hosts: Hosts, pkg: Package, wl: Workload, run_dir: Path) -> Side:
    """Upstream's bash loops, under the same ``ip netns exec`` and environment."""
    with hosts.fresh() as host:
        base = ["ip", "netns", "exec", host.ns, "/bin/bash"]
        apply = run_timed([*base, str(wl.apply_sh)], timeout_for(wl.n), env=pkg.env())
        expect_ok(apply, f"baseline apply N={wl.n}")
        got = route_count(host.ns)
        if got != wl.n + FIXTURE_ROUTES:
            raise RuntimeError(f"baseline left {got} routes, expected {wl.n + FIXTURE_ROUTES}")
        check = None
        if wl.m:
            shutil.rmtree(run_dir, ignore_errors=True)
            check = run_timed([*base, str(wl.check_sh), str(run_dir)], timeout_for(wl.m),
                              env=pkg.env())
            _check_ended_ok(check, run_dir, f"baseline check M={wl.m}")
        return Side(apply, check)


def rss_probe(hosts: Hosts, pkg: Package, wl: Workload, run_dir: Path, scratch: Path
              ) -> Dict[str, int]:
    """Peak RSS (KiB) of each of our units, from GNU time, in runs that are not timed.

    The timed runs' ``wait4`` maxrss is not the unit's own: Popen starts the child with
    vfork, so its exec records the runner's RSS (~20 MiB) as the child's peak.  GNU time
    forks the unit from its own ~2 MiB, so what it reports is the unit's.
    """
    time_bin = shutil.which("time") or "/usr/bin/time"
    out: Dict[str, int] = {}
    with hosts.fresh() as host:
        for unit, command, count in (("apply", "apply-routes", wl.n),
                                     ("check", "check-overlap", wl.m)):
            if not count:
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            scratch.unlink(missing_ok=True)
            argv = pkg.unit_argv(host.ns, command, wl.config,
                                 run_dir if unit == "check" else None)
            proc = run_timed([time_bin, "-f", "%M", "-o", str(scratch), *argv],
                             timeout_for(count), cwd=pkg.root, env=pkg.env())
            expect_ok(proc, f"peak RSS of {command} at {count}")
            out[unit] = int(scratch.read_text(encoding="utf-8").split()[-1])
    return out
