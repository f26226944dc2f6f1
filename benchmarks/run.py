#!/usr/bin/env python3
"""Benchmarks for cloudinit-hostrouting: boot critical path and scale, against upstream's approach.

Why this exists (issue 7): our two oneshot units sit on the boot critical path of every GPU
node, so what they cost must be measured, side by side with what upstream does, and the numbers
kept in the README.  Not part of the test run; nothing here is imported by the package or tests.

Usage, as root, from the repo root (the units' interpreter needs pyroute2; it is started with
the package snapshot, see below, as its working directory, so ``-m`` finds the package)::

    python3 benchmarks/run.py                       # everything: 5 runs, 10/100/1000 + 10,000
    python3 benchmarks/run.py --quick               # smoke run (about a minute)
    python3 benchmarks/run.py --runs 7 --sizes 10,100,1000 --big 10000 --big-check 1000 \
        --json /tmp/bench.json                      # raw numbers as well
    python3 benchmarks/run.py --report-from /tmp/bench.json   # re-print a saved run

Options: ``--runs N`` (default 5, each run on fresh namespaces), ``--sizes`` (N = M values),
``--big N`` (routes at the scale point, 0 skips it), ``--big-check M`` (expected
CIDRs checked at the big point, 0 skips), ``--python PATH`` (the units' interpreter, default
/usr/bin/python3, the one cloud-init runs on Debian), ``--render-reps``, ``--json FILE``,
``--report-from FILE``.  A full run took 13-23 minutes on a busy 2-core machine (most of it
the baseline's 10,000 ``ip route get | awk`` calls); ``--big-check 1000`` shortens it.

What is measured, and how:

* The package measured is a snapshot of ``cloudinit_hostrouting/`` and ``cc_host_routing.py``
  copied and byte-compiled at the start (its sha256 is printed), so that edits made while
  the run goes on cannot mix versions, and no process pays for compiling ``.pyc`` files.
* Every measurement runs in a fresh pair of network namespaces built like an ND-isr host by
  ``tests/netns.py`` (``eth0`` 10.1.0.4/24 with the default route, ``ib0`` 10.0.200.5/16);
  building and deleting them is not timed.  Namespaces are deleted on exit, Ctrl-C and errors.
* **Ours**: whole processes exactly as the units run them,
  ``ip netns exec NS PY -m cloudinit_hostrouting apply-routes --config F`` and
  ``... check-overlap --config F --run-dir D``, with F the normalised JSON the module writes.
* **Baseline** (upstream's approach, written here): a generated bash script looping over
  ``ip -4 route replace DEST via GW dev DEV``, and a bash loop of ``ip -4 route get PROBE``
  parsed with awk (default interface from ``ip -4 route show default | awk``, probe =
  network+1 with host bits masked, the address itself for a /32), with upstream's markers.
  Both run under the same ``ip netns exec`` so its cost is on both sides.
* Routes: N distinct destinations, alternately /32s inside the IB /16 10.0.0.0/16 (shadowed
  by ``ib0``) and /24s in 10.128.0.0/9 (elsewhere), all via 10.1.0.1 dev eth0.  Expected
  CIDRs: the first M destinations, so every check ends OK (verified after each run).
* Wall time is ``time.perf_counter`` around the process; CPU time and peak RSS come from
  ``os.wait4``'s rusage of that process (``ip netns exec`` execs the command in place, so this
  is the unit's own interpreter; for bash it includes the reaped ``ip``/``awk`` children).
* Medians over ``--runs`` runs; the ratio baseline/ours is computed per run pair (same run,
  same size, order alternating), then the median of those ratios is reported.
* Render path: ``config.parse`` + ``render.plan`` + ``effects.apply_plan(root, ...)``
  in-process into a fresh temporary root per repetition (what ``handle()`` does minus
  systemctl), plus ``cc_host_routing.handle()`` itself inside a private mount namespace
  (``unshare -m``) whose ``/etc`` is an overlay on a tmpfs and with a stand-in ``systemctl``
  on PATH; the real ``/etc`` is never written (the worker refuses to run otherwise).
* Imports: ``PY -X importtime -m cloudinit_hostrouting ...`` per unit; time breakdown of a
  small run into bare interpreter start, package import and pyroute2 import.
* Where time goes at scale: in-process runs of the CLI (imports excluded) at every size, and
  cProfile of apply-routes/check-overlap at the big size, all inside ``ip netns exec``.

Network safety: the only kernel changes are links, addresses and routes inside namespaces
this script creates, and the only lookups are ``route get``; no packet is sent.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
# Where the units' interpreter finds the package: the working directory of every unit and
# worker process.  main() points it at a snapshot copy taken at the start, so edits made to
# the repo while a long run is going cannot mix two versions of the code into one table.
PKG_ROOT = REPO
UNIT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's
ETH_GW, DEV = "10.1.0.1", "eth0"
TARGET_RATIO, TARGET_SMALL_S = 10.0, 0.3


# --------------------------------------------------------------------------- processes


class Proc(NamedTuple):
    """One finished process: wall and CPU seconds, peak RSS in KiB, exit code, output."""

    wall: float
    cpu: float
    maxrss_kb: int
    rc: int
    stdout: str
    stderr: str


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_timed(argv: Sequence[str], timeout: float, cwd: Optional[Path] = None,
              env: Optional[Dict[str, str]] = None) -> Proc:
    """Run ``argv``; time it and take its rusage from ``wait4`` (not a shared CHILDREN total).

    Output goes to files, not pipes, so a chatty process never blocks on a full pipe and
    the parent does no reading while the clock runs.  A timer kills the process group.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        fired = threading.Event()
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, cwd=cwd, env=env,
                                start_new_session=True)

        def expire() -> None:
            fired.set()
            _killpg(proc.pid)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        except BaseException:
            _killpg(proc.pid)
            proc.wait(timeout=10)
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if fired.is_set():
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(argv)}")
        out.seek(0)
        err.seek(0)
        return Proc(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, proc.returncode,
                    out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def sh(*argv: str, timeout: float = 30, cwd: Optional[Path] = None) -> str:
    """Run a helper command (untimed); raise with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def unit_env() -> Dict[str, str]:
    """A unit-like environment: systemd's PATH, no PYTHONPATH, C.UTF-8."""
    return {"PATH": UNIT_PATH_ENV, "LANG": "C.UTF-8"}


# --------------------------------------------------------------------------- namespaces


class Hosts:
    """Every namespace pair this run created, so all are deleted however the run ends."""

    def __init__(self) -> None:
        self.live: List[Any] = []
        self.created: List[str] = []
        sys.path.insert(0, str(REPO / "tests"))
        from netns import NDHost  # the tests' ND-isr namespace pair; reused, not copied

        self._factory: Callable[[], Any] = NDHost

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


def route_count(ns: str, *selector: str) -> int:
    out = sh("ip", "-n", ns, "-4", "route", "show", "table", "main", *selector, timeout=60)
    return len([line for line in out.splitlines() if line and not line.startswith(" ")])


# --------------------------------------------------------------------------- workload


def destinations(n: int) -> List[str]:
    """N distinct destinations: even i a /32 inside the IB /16, odd i a /24 in 10.128/9."""
    out = []
    shadowed = elsewhere = 0
    for i in range(n):
        if i % 2 == 0:
            k = shadowed + 256  # skip 10.0.0.x; never 10.0.200.x (ib0's own addresses)
            shadowed += 1
            third, fourth = divmod(k, 256)
            if third >= 200:
                third += 1
            if third > 255:
                raise ValueError("too many /32s for 10.0.0.0/16")
            out.append(f"10.0.{third}.{fourth}/32")
        else:
            second, third = divmod(elsewhere, 256)
            elsewhere += 1
            out.append(f"10.{128 + second}.{third}.0/24")
    return out


@dataclass
class Workload:
    """Files for one size: our config, and upstream-style apply/check scripts."""

    n: int
    m: int
    config: Path
    apply_sh: Path
    check_sh: Path


APPLY_SH = """#!/bin/bash
# Baseline reproducing upstream's static-routes unit: one `ip -4 route replace` per route.
set -u
rc=0
while read -r dest gw dev; do
    ip -4 route replace "$dest" via "$gw" dev "$dev" || rc=1
done <<'ROUTES'
{routes}
ROUTES
exit $rc
"""

CHECK_SH = r"""#!/bin/bash
# Baseline reproducing upstream's overlap check: `ip -4 route get PROBE | awk` per CIDR.
set -u
RUN_DIR="$1"
MODE=WARN
rm -f "$RUN_DIR/route-overlap.detected" "$RUN_DIR/route-overlap.ok"
mkdir -p "$RUN_DIR"
DEV_AWK='{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
DEFIF=$(ip -4 route show default | awk "/^default/ $DEV_AWK")
if [ -z "$DEFIF" ]; then
    echo no-default-route > "$RUN_DIR/route-overlap.detected"
    [ "$MODE" = STRICT ] && exit 1
    exit 0
fi
probe_for() {  # network+1 with host bits masked; the address itself for a /32
    local a b c d len n mask
    len=${1#*/}
    IFS=. read -r a b c d <<< "${1%/*}"
    n=$(( (a << 24) | (b << 16) | (c << 8) | d ))
    mask=$(( len == 0 ? 0 : (0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF ))
    n=$(( n & mask ))
    if [ "$len" -lt 32 ]; then n=$(( n + 1 )); fi
    PROBE="$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))"
}
found=0
while read -r cidr; do
    probe_for "$cidr"
    dev=$(ip -4 route get "$PROBE" 2>/dev/null | awk "$DEV_AWK")
    if [ -z "$dev" ]; then
        line="NO-ROUTE: expected CIDR $cidr (probe $PROBE) has no IPv4 route; expected via $DEFIF"
    elif [ "$dev" != "$DEFIF" ]; then
        line="OVERLAP: expected CIDR $cidr (probe $PROBE) routes via $dev, expected $DEFIF"
    else
        continue
    fi
    echo "$line"
    echo "$line" >> "$RUN_DIR/route-overlap.detected"
    found=1
done <<'CIDRS'
{cidrs}
CIDRS
if [ "$found" = 1 ]; then
    echo "Action: add more-specific static routes via $DEFIF, or re-address the cluster."
    [ "$MODE" = STRICT ] && exit 1
    exit 0
fi
touch "$RUN_DIR/route-overlap.ok"
"""


def make_workload(work: Path, py: str, n: int, m: int) -> Workload:
    """Write the files for N routes and M expected CIDRs; the config as the module writes it."""
    dests = destinations(max(n, m))
    raw = {"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": d, "gateway": ETH_GW, "dev": DEV} for d in dests[:n]]},
        "route_overlap": {"mode": "WARN", "expected_cidrs": dests[:m]},
    }}
    base = work / f"n{n}-m{m}"
    base.mkdir(parents=True, exist_ok=True)
    raw_path, config = base / "user-data.json", base / "host-routing.json"
    raw_path.write_text(json.dumps(raw), encoding="utf-8")
    # The units read what the module wrote: normalise with the package itself.
    run_worker(py, ["normalize", str(raw_path), str(config)], timeout=120)
    apply_sh, check_sh = base / "apply.sh", base / "check.sh"
    apply_sh.write_text(APPLY_SH.replace(
        "{routes}", "\n".join(f"{d} {ETH_GW} {DEV}" for d in dests[:n])), encoding="utf-8")
    check_sh.write_text(CHECK_SH.replace("{cidrs}", "\n".join(dests[:m])), encoding="utf-8")
    return Workload(n, m, config, apply_sh, check_sh)


# --------------------------------------------------------------------------- one run


@dataclass
class Side:
    """One side's numbers for one run at one size."""

    apply: Proc
    check: Optional[Proc]

    @property
    def total(self) -> float:
        return self.apply.wall + (self.check.wall if self.check else 0.0)


def timeout_for(n: int) -> float:
    return 120 + 0.1 * n


def run_ours(hosts: Hosts, py: str, wl: Workload, run_dir: Path) -> Side:
    """Our two units, as whole processes, in a fresh namespace; verify what they did."""
    with hosts.fresh() as host:
        base = ["ip", "netns", "exec", host.ns, py, "-m", "cloudinit_hostrouting"]
        apply = run_timed([*base, "apply-routes", "--config", str(wl.config)],
                          timeout_for(wl.n), cwd=PKG_ROOT, env=unit_env())
        expect_ok(apply, f"ours apply-routes N={wl.n}")
        got = route_count(host.ns, "proto", "214")
        if got != wl.n:
            raise RuntimeError(f"ours installed {got} routes, expected {wl.n}")
        check = None
        if wl.m:
            shutil.rmtree(run_dir, ignore_errors=True)
            check = run_timed([*base, "check-overlap", "--config", str(wl.config),
                               "--run-dir", str(run_dir)],
                              timeout_for(wl.m), cwd=PKG_ROOT, env=unit_env())
            expect_ok(check, f"ours check-overlap M={wl.m}")
            if not (run_dir / "route-overlap.ok").exists():
                raise RuntimeError(f"ours check did not end OK:\n{check.stdout}")
        return Side(apply, check)


def run_baseline(hosts: Hosts, wl: Workload, run_dir: Path) -> Side:
    """Upstream's bash loops, under the same ``ip netns exec``, in a fresh namespace."""
    with hosts.fresh() as host:
        base = ["ip", "netns", "exec", host.ns, "/bin/bash"]
        apply = run_timed([*base, str(wl.apply_sh)], timeout_for(wl.n), env=unit_env())
        expect_ok(apply, f"baseline apply N={wl.n}")
        got = route_count(host.ns)
        if got != wl.n + 3:  # default, ib0's /16, eth0's /24
            raise RuntimeError(f"baseline left {got} routes, expected {wl.n + 3}")
        check = None
        if wl.m:
            shutil.rmtree(run_dir, ignore_errors=True)
            check = run_timed([*base, str(wl.check_sh), str(run_dir)], timeout_for(wl.m),
                              env=unit_env())
            expect_ok(check, f"baseline check M={wl.m}")
            if not (run_dir / "route-overlap.ok").exists():
                raise RuntimeError(f"baseline check did not end OK:\n{check.stdout}")
        return Side(apply, check)


def expect_ok(proc: Proc, what: str) -> None:
    if proc.rc != 0:
        raise RuntimeError(f"{what} exited {proc.rc}\n{proc.stdout}\n{proc.stderr}")


# --------------------------------------------------------------------------- workers

# The parts that must run inside the units' interpreter (pyroute2, cloud-init) run as
# ``PY benchmarks/run.py --worker KIND ...``; they import only the stdlib and the package.


def run_worker(py: str, args: List[str], timeout: float, netns: Optional[str] = None,
               wrap: Sequence[str] = ()) -> str:
    argv = [*wrap, py, str(Path(__file__).resolve()), "--worker", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return sh(*argv, timeout=timeout, cwd=PKG_ROOT)


def _package_on_path() -> None:
    """Workers import the package from their working directory (the snapshot), like ``-m``."""
    sys.path.insert(0, os.getcwd())


def worker_main(argv: List[str]) -> int:
    """Entry point of ``--worker``: run one in-process measurement, write JSON or text."""
    _package_on_path()
    kind, rest = argv[0], argv[1:]
    if kind == "normalize":
        from cloudinit_hostrouting.config import parse

        raw = json.loads(Path(rest[0]).read_text(encoding="utf-8"))
        Path(rest[1]).write_text(parse(raw["host_routing"]).to_json(), encoding="utf-8")
    elif kind == "inproc":
        Path(rest[2]).write_text(json.dumps(worker_inproc(rest[0], rest[1])), encoding="utf-8")
    elif kind == "profile":
        Path(rest[3]).write_text(worker_profile(rest[0], rest[1], rest[2]), encoding="utf-8")
    elif kind == "render":
        Path(rest[2]).write_text(json.dumps(worker_render(rest[0], int(rest[1]))),
                                 encoding="utf-8")
    elif kind == "handle":
        return worker_handle(rest[0], int(rest[1]), rest[2], rest[3], rest[4])
    else:
        raise SystemExit(f"unknown worker {kind}")
    return 0


def _preimport() -> Any:
    """Import everything the units import, so in-process timings show work, not imports."""
    import pyroute2.netlink.exceptions  # noqa: F401

    from cloudinit_hostrouting import cli, netlink, overlap, routes  # noqa: F401

    return cli


def worker_inproc(config: str, run_dir: str) -> Dict[str, float]:
    """Both units' work in-process, imports excluded: where the per-route cost shows."""
    cli = _preimport()
    from cloudinit_hostrouting.config import load_file

    out: Dict[str, float] = {}
    t0 = time.perf_counter()
    cfg = load_file(config)
    out["load_s"] = time.perf_counter() - t0
    sink = open(os.devnull, "w")  # noqa: SIM115
    with contextlib.redirect_stdout(sink):
        t0 = time.perf_counter()
        rc = cli.main(["apply-routes", "--config", config])
        out["apply_s"] = time.perf_counter() - t0
        if cfg.expected_cidrs:
            t0 = time.perf_counter()
            rc |= cli.main(["check-overlap", "--config", config, "--run-dir", run_dir])
            out["check_s"] = time.perf_counter() - t0
    sink.close()
    if rc:
        raise SystemExit(f"in-process run failed ({rc})")
    return out


def worker_profile(command: str, config: str, run_dir: str) -> str:
    """cProfile one unit in-process (imports excluded); top entries by cumulative and own."""
    import cProfile
    import io
    import pstats

    cli = _preimport()
    argv = [command, "--config", config]
    if command == "check-overlap":
        argv += ["--run-dir", run_dir]
    prof = cProfile.Profile()
    sink = open(os.devnull, "w")  # noqa: SIM115
    with contextlib.redirect_stdout(sink):
        t0 = time.perf_counter()
        rc = prof.runcall(cli.main, argv)
        wall = time.perf_counter() - t0
    sink.close()
    buf = io.StringIO()
    buf.write(f"{command} --config {Path(config).name}: rc {rc}, {wall:.3f} s under cProfile\n")
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    buf.write("-- by cumulative time --\n")
    stats.sort_stats("cumulative").print_stats(16)
    buf.write("-- by own time --\n")
    stats.sort_stats("tottime").print_stats(12)
    text = buf.getvalue()
    return re.sub(r"\n{3,}", "\n\n", text)


def _user_data(n: int) -> Dict[str, Any]:
    dests = destinations(n)
    return {"static_routes": {"enabled": True, "routes": [
        {"destination": d, "dev": DEV} for d in dests]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": dests}}


def worker_render(n_text: str, reps: int) -> Dict[str, Any]:
    """parse + plan + apply_plan into a fresh temporary root per repetition."""
    from cloudinit_hostrouting.config import parse
    from cloudinit_hostrouting.effects import apply_plan
    from cloudinit_hostrouting.render import plan

    raw = _user_data(int(n_text))
    full, write_only = [], []
    base = Path(tempfile.mkdtemp(prefix="hr-bench-render-"))
    try:
        for i in range(reps):
            root = base / str(i)
            root.mkdir()
            t0 = time.perf_counter()
            host = parse(raw)
            entries = plan(host, "/usr/bin/python3")
            t1 = time.perf_counter()
            apply_plan(str(root), entries)
            t2 = time.perf_counter()
            full.append(t2 - t0)
            write_only.append(t2 - t1)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"full_s": full, "apply_plan_s": write_only, "files": len(entries),
            "tmpdir": tempfile.gettempdir(), "fstype": fstype}


def _mount_point_fstype(path: str) -> Optional[str]:
    """fstype of the topmost mount at ``path`` in this mount namespace."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, right = line.split(" - ", 1)
            if left.split()[4] == path:
                found = right.split()[0]
    return found


def worker_handle(n_text: str, reps: int, out: str, scratch: str, parent_mnt_ns: str) -> int:
    """``cc_host_routing.handle()`` for real, into an overlay ``/etc`` in a private mount ns.

    Runs only under ``unshare -m``; refuses (exit 3) unless this mount namespace differs
    from the harness's and ``/etc`` is an overlay whose upper layer is a tmpfs we mounted,
    so the real ``/etc`` cannot be written.  ``systemctl`` is a stand-in script on PATH.
    """
    if os.readlink("/proc/self/ns/mnt") == parent_mnt_ns:
        print("refusing: not in a private mount namespace", file=sys.stderr)
        return 3
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", scratch], check=True)
    for sub in ("upper", "work", "bin"):
        os.makedirs(f"{scratch}/{sub}")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work", "/etc"],
                   check=True)
    if _mount_point_fstype("/etc") != "overlay":
        print("refusing: /etc is not an overlay in this namespace", file=sys.stderr)
        return 3
    stub = Path(scratch, "bin", "systemctl")
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {scratch}/systemctl.log\n", encoding="utf-8")
    stub.chmod(0o755)
    os.environ["PATH"] = f"{scratch}/bin:{os.environ.get('PATH', UNIT_PATH_ENV)}"

    import logging

    logging.basicConfig(level=logging.ERROR)
    from cc_host_routing import handle  # type: ignore[import-not-found,unused-ignore]
    from cloudinit_hostrouting.config import parse
    from cloudinit_hostrouting.constants import MANIFEST_PATH
    from cloudinit_hostrouting.render import plan

    raw = _user_data(int(n_text))
    paths = [e.path for e in plan(parse(raw))] + [MANIFEST_PATH]
    times = []
    for _ in range(reps):
        for path in paths:  # fresh: as on a first boot (removes only from the tmpfs upper)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        t0 = time.perf_counter()
        handle("host_routing", {"host_routing": raw}, None, logging.getLogger("bench"), [])
        times.append(time.perf_counter() - t0)
    calls = Path(scratch, "systemctl.log").read_text(encoding="utf-8").splitlines()
    Path(out).write_text(json.dumps({"handle_s": times, "systemctl_calls": len(calls),
                                     "first_calls": calls[:2]}), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- imports


def parse_importtime(stderr: str) -> List[Tuple[str, int, int, int]]:
    """(name, depth, self_us, cumulative_us) per ``-X importtime`` line, in output order."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        field_name = name[1:]  # the format is "| " then two spaces per nesting level
        depth = (len(field_name) - len(field_name.lstrip(" "))) // 2
        rows.append((field_name.strip(), depth, int(self_us), int(cum_us)))
    return rows


@dataclass
class ImportProfile:
    """Median import costs for one unit's command line over several runs."""

    command: str
    total_ms: float
    top: List[Tuple[str, float]]
    children: Dict[str, List[Tuple[str, float]]] = field(default_factory=dict)


def import_profile(samples: List[str], command: str) -> ImportProfile:
    """Medians per top-level import, and the heaviest direct children of the big ones."""
    tops: Dict[str, List[int]] = {}
    kids: Dict[str, Dict[str, List[int]]] = {}
    totals = []
    for stderr in samples:
        rows = parse_importtime(stderr)
        pending: List[Tuple[str, int, int, int]] = []
        total = 0
        for row in rows:
            name, depth, _, cum = row
            if depth == 0:
                tops.setdefault(name, []).append(cum)
                total += cum
                for child in pending:
                    if child[1] == 1:
                        kids.setdefault(name, {}).setdefault(child[0], []).append(child[3])
                pending = []
            else:
                pending.append(row)
        totals.append(total)
    top = sorted(((n, statistics.median(v) / 1000) for n, v in tops.items()),
                 key=lambda item: -item[1])
    children = {}
    for name, _ in top[:4]:
        ranked = sorted(((c, statistics.median(v) / 1000) for c, v in kids.get(name, {}).items()),
                        key=lambda item: -item[1])
        children[name] = ranked[:6]
    return ImportProfile(command, statistics.median(totals) / 1000, top[:12], children)


# --------------------------------------------------------------------------- reporting


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine(py: str, digest: str) -> Dict[str, str]:
    """What the README needs to say about where the numbers came from."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    distro = "unknown"
    with contextlib.suppress(OSError), open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    probe = ("import sys, importlib.metadata as m; print(sys.version.split()[0]); "
             "print(m.version('pyroute2'))")
    py_version, pyroute2_version = sh(py, "-c", probe, cwd=PKG_ROOT).split()
    commit = sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD").strip()
    dirty = sh("git", "-C", str(REPO), "status", "--porcelain", "cloudinit_hostrouting",
               "cc_host_routing.py").strip()
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "nproc": sh("nproc").strip(),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "distro": distro,
        "python": f"{py} {py_version}",
        "pyroute2": pyroute2_version,
        "iproute2": sh("ip", "-V").strip(),
        "bash": sh("/bin/bash", "-c", "echo $BASH_VERSION").strip(),
        "package": f"commit {commit}" + (" + uncommitted package changes" if dirty else "")
                   + f" (package snapshot sha256 {digest})",
        "loadavg_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def fmt_s(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


@dataclass
class SizeResult:
    """All runs at one size."""

    n: int
    m: int
    ours: List[Side] = field(default_factory=list)
    base: List[Side] = field(default_factory=list)
    inproc: List[Dict[str, float]] = field(default_factory=list)

    def _sides(self, side: str) -> List[Side]:
        return self.ours if side == "ours" else self.base

    def walls(self, side: str, unit: str) -> List[float]:
        if unit == "total":
            return [s.total for s in self._sides(side)]
        return [getattr(s, unit).wall for s in self._sides(side) if getattr(s, unit) is not None]

    def cpus(self, side: str, unit: str) -> List[float]:
        """CPU seconds (user+sys, children included): less sensitive to a busy machine."""
        if unit == "total":
            return [s.apply.cpu + (s.check.cpu if s.check else 0.0) for s in self._sides(side)]
        return [getattr(s, unit).cpu for s in self._sides(side) if getattr(s, unit) is not None]

    def ratios(self, unit: str, kind: str = "wall") -> List[float]:
        """baseline/ours per run pair (same run, same size), not a ratio of medians."""
        get = self.walls if kind == "wall" else self.cpus
        return [b / o for b, o in zip(get("base", unit), get("ours", unit))]

    def rss_mb(self, unit: str) -> float:
        procs = [getattr(s, unit) for s in self.ours]
        return max(p.maxrss_kb for p in procs if p is not None) / 1024

    def cpu(self, unit: str) -> float:
        return med(self.cpus("ours", unit))


def _ratio_cell(ratios: List[float], bold: bool) -> str:
    mid = f"{med(ratios):.1f}x"
    return f"{'**' + mid + '**' if bold else mid} [{min(ratios):.1f}-{max(ratios):.1f}]"


def main_table(results: List[SizeResult], runs: int) -> List[str]:
    lines = [
        "| N routes | M CIDRs | unit | ours wall (s) | baseline wall (s) "
        f"| baseline/ours wall (median of {runs} per-run ratios) [min-max] "
        "| ours CPU (s) | baseline CPU (s) | baseline/ours CPU | ours peak RSS (MiB) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        units = ["apply", "check", "total"] if res.m else ["apply"]
        for unit in units:
            bold = unit == "total" or not res.m
            label = {"apply": "apply-routes", "check": "check-overlap",
                     "total": "both units"}[unit]
            rss = f"{res.rss_mb(unit):.1f}" if unit != "total" else ""
            lines.append(
                f"| {res.n:,} | {res.m:,} | {label} | {fmt_s(med(res.walls('ours', unit)))} "
                f"| {fmt_s(med(res.walls('base', unit)))} "
                f"| {_ratio_cell(res.ratios(unit), bold)} "
                f"| {fmt_s(med(res.cpus('ours', unit)))} | {fmt_s(med(res.cpus('base', unit)))} "
                f"| {_ratio_cell(res.ratios(unit, 'cpu'), False)} | {rss} |")
    return lines


def scaling_table(results: List[SizeResult]) -> Tuple[List[str], str]:
    """Time per route at every N; a verdict on linearity from the in-process per-route cost.

    Whole-process ms/route at small N is mostly interpreter start, so the marginal columns
    (extra time per extra route since the previous size) show the per-route cost on its own.
    """
    lines = [
        "| N routes | ours apply wall (s) | ours ms/route | ours marginal ms/route "
        "| ours in-process apply (s) | in-process us/route | config load+validate (ms) "
        "| baseline apply (s) | baseline ms/route | baseline marginal ms/route |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    points = []
    prev: Optional[Tuple[int, float, float]] = None
    for res in sorted(results, key=lambda r: r.n):
        wall, base = med(res.walls("ours", "apply")), med(res.walls("base", "apply"))
        inproc = med([x["apply_s"] for x in res.inproc])
        load = med([x["load_s"] for x in res.inproc])
        points.append((res.n, inproc, wall))
        if prev is None:
            m_ours = m_base = "-"
        else:
            step = res.n - prev[0]
            m_ours = f"{(wall - prev[1]) / step * 1000:.3f}"
            m_base = f"{(base - prev[2]) / step * 1000:.2f}"
        prev = (res.n, wall, base)
        lines.append(f"| {res.n:,} | {fmt_s(wall)} | {wall / res.n * 1000:.3f} | {m_ours} "
                     f"| {fmt_s(inproc)} | {inproc / res.n * 1e6:.0f} | {load * 1000:.1f} "
                     f"| {fmt_s(base)} | {base / res.n * 1000:.2f} | {m_base} |")
    verdict = "not enough sizes to judge"
    big = [p for p in points if p[0] >= 100]
    if len(big) >= 2:
        per_route = [p[1] / p[0] for p in big]
        growth = per_route[-1] / per_route[0]
        ok = growth <= 1.5
        verdict = (f"{'linear' if ok else 'NOT linear'}: in-process cost per route goes from "
                   f"{per_route[0] * 1e6:.0f} us at N={big[0][0]:,} to "
                   f"{per_route[-1] * 1e6:.0f} us at N={big[-1][0]:,} "
                   f"({growth:.2f}x; linear means about 1x, quadratic would be "
                   f"{big[-1][0] / big[0][0]:.0f}x)")
    return lines, verdict


def targets(results: List[SizeResult], big: int) -> List[str]:
    out = []
    by_n = {(r.n, r.m): r for r in results}
    r1000 = by_n.get((1000, 1000))
    if r1000:
        ratio = med(r1000.ratios("total"))
        out.append(f"- {'PASS' if ratio >= TARGET_RATIO else 'MISS'}: N=M=1000, both units "
                   f"{ratio:.1f}x faster than the baseline (target >= {TARGET_RATIO:.0f}x; "
                   f"ours {fmt_s(med(r1000.walls('ours', 'total')))} s, baseline "
                   f"{fmt_s(med(r1000.walls('base', 'total')))} s; in CPU time "
                   f"{med(r1000.ratios('total', 'cpu')):.1f}x)")
        for unit, label in (("apply", "apply-routes"), ("check", "check-overlap")):
            out.append(f"  - {label} alone: {med(r1000.ratios(unit)):.1f}x wall, "
                       f"{med(r1000.ratios(unit, 'cpu')):.1f}x CPU")
        if ratio < TARGET_RATIO:
            out.append(f"  - missed by a factor of {TARGET_RATIO / ratio:.2f}")
    r10 = by_n.get((10, 10))
    if r10:
        for unit, label in (("apply", "apply-routes"), ("check", "check-overlap")):
            wall = med(r10.walls("ours", unit))
            verdict = "PASS" if wall <= TARGET_SMALL_S else "MISS"
            extra = "" if wall <= TARGET_SMALL_S else \
                f", over by {wall - TARGET_SMALL_S:.3f} s ({wall / TARGET_SMALL_S:.2f}x)"
            out.append(f"- {verdict}: N=M=10, {label} {wall:.3f} s wall incl. interpreter "
                       f"start (target <= {TARGET_SMALL_S} s; CPU {r10.cpu(unit):.3f} s){extra}")
    rbig = [r for r in results if r.n == big]
    if big and rbig:
        res = rbig[0]
        ok = len(res.ours) > 0 and all(s.apply.rc == 0 for s in res.ours)
        out.append(f"- {'PASS' if ok else 'MISS'}: {big:,} routes: apply completed in every "
                   f"run ({len(res.ours)} runs, median {fmt_s(med(res.walls('ours', 'apply')))}"
                   f" s, all {big:,} routes verified in the kernel table)")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per size (default 5)")
    parser.add_argument("--sizes", default="10,100,1000", help="N = M values (default "
                        "10,100,1000)")
    parser.add_argument("--big", type=int, default=10000,
                        help="routes for the scale point (default 10000; 0 skips it)")
    parser.add_argument("--big-check", type=int, default=10000,
                        help="expected CIDRs checked at the scale point (default 10000; 0 skips)")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="the units' interpreter (default /usr/bin/python3)")
    parser.add_argument("--render-reps", type=int, default=200,
                        help="repetitions of the render path (default 200)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 runs, sizes 10,100, no scale point, few reps")
    parser.add_argument("--json", metavar="FILE", help="also save every raw number here")
    parser.add_argument("--report-from", metavar="FILE",
                        help="measure nothing: print the report of a run saved with --json")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sizes, args.big, args.render_reps = 2, "10,100", 0, 20
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.runs < 1 or any(s < 1 for s in args.size_list):
        parser.error("--runs and --sizes must be positive")
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def snapshot(py: str, work: Path) -> str:
    """Copy the package into ``work/pkg``, byte-compile it there, and return its sha256.

    Byte-compiling now (as pip does at install time) keeps the first measured process from
    paying for compilation; the digest says exactly which code the table describes.
    """
    import hashlib

    global PKG_ROOT
    dest = work / "pkg"
    shutil.copytree(REPO / "cloudinit_hostrouting", dest / "cloudinit_hostrouting",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "cc_host_routing.py", dest / "cc_host_routing.py")
    sh(py, "-m", "compileall", "-q", str(dest), timeout=120)
    digest = hashlib.sha256()
    for path in sorted(dest.rglob("*.py")):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    PKG_ROOT = dest
    return digest.hexdigest()[:12]


def preflight(py: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces need it")
    for tool in ("ip", "bash", "awk", "unshare", "mount"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    probe = subprocess.run([py, "-c", "import cloudinit_hostrouting.cli, pyroute2"],
                           capture_output=True, text=True, cwd=PKG_ROOT, env=unit_env(),
                           check=False)
    if probe.returncode != 0:
        raise SystemExit(f"{py} cannot import cloudinit_hostrouting and pyroute2 from "
                         f"{PKG_ROOT}:\n{probe.stderr}")


def measure(args: argparse.Namespace, hosts: Hosts, work: Path) -> Dict[str, Any]:
    """Everything, in order; returns the raw numbers."""
    py = args.python
    points = [(n, n) for n in args.size_list]
    if args.big:
        points.append((args.big, args.big_check))
    results: List[SizeResult] = []
    for n, m in points:
        log(f"workload N={n} M={m}")
        wl = make_workload(work, py, n, m)
        res = SizeResult(n, m)
        for run in range(args.runs):
            sides: Dict[str, Side] = {}
            order = ["ours", "base"] if run % 2 == 0 else ["base", "ours"]
            for side in order:
                run_dir = work / f"run-{side}"
                sides[side] = (run_ours(hosts, py, wl, run_dir) if side == "ours"
                               else run_baseline(hosts, wl, run_dir))
            res.ours.append(sides["ours"])
            res.base.append(sides["base"])
            log(f"  run {run + 1}/{args.runs}: ours {sides['ours'].total:.3f} s, "
                f"baseline {sides['base'].total:.3f} s")
        for _ in range(min(args.runs, 3)):
            with hosts.fresh() as host:
                out = work / "inproc.json"
                run_worker(py, ["inproc", str(wl.config), str(work / "run-inproc"), str(out)],
                           timeout=timeout_for(n + m), netns=host.ns)
                res.inproc.append(json.loads(out.read_text(encoding="utf-8")))
        results.append(res)

    log("import profiles")
    small = make_workload(work, py, 10, 10)
    imports = {}
    # Interleaved, so the four steps see the same machine load.
    breakdown: Dict[str, List[float]] = {"bare": [], "package": [], "pyroute2": [], "apply": []}
    with hosts.fresh() as host:
        for command in ("apply-routes", "check-overlap"):
            extra = ["--run-dir", str(work / "run-imp")] if command == "check-overlap" else []
            samples = []
            for _ in range(max(args.runs, 3)):
                proc = run_timed(["ip", "netns", "exec", host.ns, py, "-X", "importtime", "-m",
                                  "cloudinit_hostrouting", command, "--config",
                                  str(small.config), *extra], 60, cwd=PKG_ROOT,
                                 env=unit_env())
                expect_ok(proc, f"importtime {command}")
                samples.append(proc.stderr)
            imports[command] = import_profile(samples, command)
        for _ in range(max(args.runs, 5)):
            for key, code in (("bare", "pass"), ("package", "import cloudinit_hostrouting.cli"),
                              ("pyroute2", "import cloudinit_hostrouting.cli; "
                                           "from pyroute2 import IPRoute")):
                proc = run_timed(["ip", "netns", "exec", host.ns, py, "-c", code], 60,
                                 cwd=PKG_ROOT, env=unit_env())
                breakdown[key].append(proc.wall)
            proc = run_timed(["ip", "netns", "exec", host.ns, py, "-m", "cloudinit_hostrouting",
                              "apply-routes", "--config", str(small.config)], 60,
                             cwd=PKG_ROOT, env=unit_env())
            expect_ok(proc, "apply-routes N=10")
            breakdown["apply"].append(proc.wall)

    profiles = {}
    if args.big:
        log("cProfile at the scale point")
        wl = make_workload(work, py, args.big, args.big_check)
        with hosts.fresh() as host:
            for command in ("apply-routes", "check-overlap"):
                if command == "check-overlap" and not args.big_check:
                    continue
                out = work / f"profile-{command}.txt"
                run_worker(py, ["profile", command, str(wl.config), str(work / "run-prof"),
                                str(out)], timeout=timeout_for(args.big * 2), netns=host.ns)
                profiles[command] = out.read_text(encoding="utf-8")

    log("render path and handle()")
    out = work / "render.json"
    run_worker(py, ["render", "100", str(args.render_reps), str(out)], timeout=600)
    render = json.loads(out.read_text(encoding="utf-8"))
    handle: Dict[str, Any] = {}
    out = work / "handle.json"
    try:
        scratch = work / "handle-mnt"  # a tmpfs is mounted here only inside the namespace
        scratch.mkdir()
        run_worker(py, ["handle", "100", str(max(args.render_reps // 2, 10)), str(out),
                        str(scratch), os.readlink("/proc/self/ns/mnt")],
                   timeout=600, wrap=("unshare", "-m", "--propagation", "private"))
        handle = json.loads(out.read_text(encoding="utf-8"))
    except RuntimeError as err:
        handle = {"error": str(err).splitlines()[-1]}
    return {"results": results, "imports": imports, "breakdown": breakdown,
            "profiles": profiles, "render": render, "handle": handle}


def report(args: argparse.Namespace, info: Dict[str, str], data: Dict[str, Any],
           elapsed: float, command: str) -> List[str]:
    results: List[SizeResult] = data["results"]
    lines = ["## Benchmarks", ""]
    lines.append(
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, {info['distro']}, "
        f"kernel {info['kernel']}; units' interpreter {info['python']}, pyroute2 "
        f"{info['pyroute2']}; {info['iproute2']}; bash {info['bash']}; {info['package']}. "
        f"Load average {info['loadavg_start']} at start, {info['loadavg_end']} at end.")
    load1 = float(info["loadavg_start"].split()[0])
    if load1 > float(info["nproc"]):
        lines += ["", f"Note: the machine was busy (1-minute load {load1:.1f} on {info['nproc']} "
                  "CPUs at the start), so absolute wall times are inflated; the per-run ratios "
                  "and the CPU columns are the more robust numbers."]
    lines += ["", f"Medians of {args.runs} runs, each on fresh ND-isr-shaped namespaces; "
              "wall times of whole processes under `ip netns exec` (interpreter start "
              "included); CPU and peak RSS from the process's `wait4` rusage. Baseline = "
              "upstream's bash loops (`ip -4 route replace` per route; `ip -4 route get | awk`"
              " per CIDR).", ""]
    lines += main_table(results, args.runs)
    lines += ["", "### Targets", "", *targets(results, args.big)]
    scale, verdict = scaling_table(results)
    lines += ["", "### Scaling of apply-routes", "", *scale, "", f"Verdict: {verdict}."]
    r, h = data["render"], data["handle"]
    lines += ["", "### First-boot render path (100 routes, 100 expected CIDRs)", ""]
    lines.append(f"- `parse` + `render.plan` + `effects.apply_plan` in-process, fresh root per "
                 f"repetition ({len(r['full_s'])} reps, {r['files']} entries, "
                 f"{r['tmpdir']} on {r['fstype']}): median {med(r['full_s']) * 1000:.2f} ms, "
                 f"of which apply_plan {med(r['apply_plan_s']) * 1000:.2f} ms; max "
                 f"{max(r['full_s']) * 1000:.2f} ms")
    if "handle_s" in h:
        lines.append(f"- `cc_host_routing.handle()` ({len(h['handle_s'])} reps, overlay /etc in "
                     f"a private mount namespace, stand-in systemctl: "
                     f"{h['systemctl_calls'] // max(len(h['handle_s']), 1)} calls per rep): "
                     f"median {med(h['handle_s']) * 1000:.2f} ms, max "
                     f"{max(h['handle_s']) * 1000:.2f} ms (the real `systemctl daemon-reload` "
                     "is not included)")
    else:
        lines.append(f"- `handle()` not measured: {h.get('error')}")
    bd = data["breakdown"]
    bare, pkg, pr2 = med(bd["bare"]), med(bd["package"]), med(bd["pyroute2"])
    lines += ["", "### Where a small unit's time goes (N=M=10)", ""]
    whole = med(bd.get("apply", []))
    lines.append(f"Medians of {len(bd['bare'])} interleaved runs of each step under ip netns "
                 f"exec: bare interpreter start (`python3 -c pass`) {bare:.3f} s; "
                 f"+ `import cloudinit_hostrouting.cli` {pkg - bare:+.3f} s; "
                 f"+ `from pyroute2 import IPRoute` {pr2 - pkg:+.3f} s"
                 + (f"; whole apply-routes (10 routes) {fmt_s(whole)} s, so the work itself "
                    f"is {whole - pr2:+.3f} s." if whole == whole else "."))
    for unit_cmd, prof in data["imports"].items():
        lines += ["", f"Imports of `{unit_cmd}` (`-X importtime`, median of runs; total "
                  f"{prof.total_ms:.0f} ms, inflated by importtime's own overhead):", "",
                  "| top-level import | cumulative (ms) | heaviest direct children (ms) |",
                  "|---|---:|---|"]
        for name, ms in prof.top:
            kids = ", ".join(f"{c} {v:.0f}" for c, v in prof.children.get(name, []))
            lines.append(f"| {name} | {ms:.1f} | {kids} |")
    for unit_cmd, text in data["profiles"].items():
        lines += ["", f"cProfile, in-process `{unit_cmd}` at N={args.big:,} "
                  "(imports excluded):", "", "```text", text.rstrip(), "```"]
    lines += ["", f"Whole benchmark: {elapsed / 60:.1f} min; `{command}`."]
    return lines


def load_raw(path: Path) -> Tuple[argparse.Namespace, Dict[str, str], Dict[str, Any], float,
                                  str]:
    """A run saved with ``--json``, back in the shapes ``report`` takes."""
    raw = json.loads(path.read_text(encoding="utf-8"))

    def side(d: Dict[str, Any]) -> Side:
        return Side(Proc(**d["apply"]), Proc(**d["check"]) if d["check"] else None)

    results = [SizeResult(r["n"], r["m"], [side(s) for s in r["ours"]],
                          [side(s) for s in r["baseline"]], r["inproc"])
               for r in raw["results"]]
    imports = {k: ImportProfile(v["command"], v["total_ms"], [tuple(x) for x in v["top"]],
                                {c: [tuple(x) for x in kids]
                                 for c, kids in v["children"].items()})
               for k, v in raw["imports"].items()}
    data = {"results": results, "imports": imports, "breakdown": raw["breakdown"],
            "profiles": raw["profiles"], "render": raw["render"], "handle": raw["handle"]}
    command = raw.get("command") or f"python3 benchmarks/run.py --json {path}"
    return (argparse.Namespace(**raw["args"]), raw["machine"], data, raw["elapsed_s"],
            command)


def _result_dict(res: SizeResult) -> Dict[str, Any]:
    """Raw samples of one size, with field names kept (asdict would keep NamedTuples)."""
    def side(s: Side) -> Dict[str, Any]:
        return {"apply": s.apply._asdict(), "check": s.check._asdict() if s.check else None}

    return {"n": res.n, "m": res.m, "ours": [side(s) for s in res.ours],
            "baseline": [side(s) for s in res.base], "inproc": res.inproc}


def main(argv: Optional[List[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        return worker_main(argv[1:])
    args = parse_args(argv)
    if args.report_from:
        saved, info, data, elapsed, command = load_raw(Path(args.report_from))
        print("\n".join(report(saved, info, data, elapsed, command)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces need it")
    command = " ".join(["python3", "benchmarks/run.py", *argv])
    start = time.perf_counter()

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Even when started in the background (SIGINT inherited as ignored), Ctrl-C/INT,
    # TERM and HUP must unwind through the finally below that deletes the namespaces.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    hosts = Hosts()
    atexit.register(hosts.close_all)
    work = Path(tempfile.mkdtemp(prefix="hr-bench-"))
    try:
        digest = snapshot(args.python, work)
        preflight(args.python)
        info = machine(args.python, digest)
        data = measure(args, hosts, work)
    finally:
        hosts.close_all()
        shutil.rmtree(work, ignore_errors=True)
        left = hosts.leftovers()
        if left:
            print(f"WARNING: namespaces left behind: {left}", file=sys.stderr)
    info["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    elapsed = time.perf_counter() - start
    print("\n".join(report(args, info, data, elapsed, command)))
    if args.json:
        raw = {"machine": info, "args": dict(vars(args)), "command": command,
               "elapsed_s": elapsed,
               "results": [_result_dict(r) for r in data["results"]],
               "imports": {k: asdict(v) for k, v in data["imports"].items()},
               "breakdown": data["breakdown"], "profiles": data["profiles"],
               "render": data["render"], "handle": data["handle"]}
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
        log(f"raw numbers in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
