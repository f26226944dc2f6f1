"""The run, in order: the units' command lines and imports, the small-unit breakdown, every
size (run pairs and in-process timings), cProfile at the scale point, the first-boot path.

Returns raw numbers only; report.py turns them into Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from .fixtures import RUN, Hosts
from .imports import backend_of, import_profile, imported_modules
from .package import UNIT_COMMANDS, Package, check_importable, unit_entry
from .pairs import Side, rss_probe, run_baseline, run_ours
from .procs import expect_ok, run_timed, timeout_for
from .results import SizeResult
from .workload import Workload, make_workload


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read_output(path: Path, what: str) -> str:
    """A worker's result file; its absence means the worker died before writing it."""
    if not path.exists():
        raise RuntimeError(f"{what}: the worker wrote no result to {path}")
    return path.read_text(encoding="utf-8")


def unit_flags(pkg: Package, wl: Workload, override: Any) -> Dict[str, Any]:
    """Adopt the flags of the rendered ExecStart= (or ``--python-flags``) for every process."""
    missing = [c for c in UNIT_COMMANDS if c not in wl.execstart]
    if missing:
        raise SystemExit(f"the package renders no unit running {', '.join(missing)}")
    rendered = {c: unit_entry(wl.execstart[c], pkg.python, c) for c in UNIT_COMMANDS}
    if rendered["apply-routes"] != rendered["check-overlap"]:
        raise SystemExit(f"the two units start the interpreter differently: {rendered}")
    flags, pkg.entry = rendered["apply-routes"]
    pkg.flags = tuple(override.split()) if override is not None else flags
    return {"execstart": wl.execstart, "rendered_flags": list(flags),
            "measured_flags": list(pkg.flags), "entry": list(pkg.entry)}


def import_step(hosts: Hosts, pkg: Package, small: Workload, runs: int, work: Path
                ) -> Dict[str, Any]:
    """``-X importtime`` of both units: costs, the modules they import, the backend used."""
    profiles, modules, backends = {}, [], {}
    with hosts.fresh() as host:
        for command in UNIT_COMMANDS:
            run_dir = work / RUN / "imp" if command == "check-overlap" else None
            samples = []
            for _ in range(max(runs, 3)):
                proc = run_timed(pkg.unit_argv(host.ns, command, small.config, run_dir,
                                               ("-X", "importtime")),
                                 60, cwd=pkg.root, env=pkg.env())
                expect_ok(proc, f"importtime {command}")
                samples.append(proc.stderr)
            profiles[command] = import_profile(samples, command)
            names = imported_modules(samples)
            backends[command] = backend_of(names)
            modules += [n for n in names if n not in modules]
    return {"imports": profiles, "unit_modules": modules, "backend": backends}


def breakdown_step(hosts: Hosts, pkg: Package, small: Workload, runs: int, work: Path
                   ) -> Dict[str, List[float]]:
    """Interleaved (so every step sees the same load): bare start, the package's CLI import,
    pyroute2's import on its own, and both whole units at N=M=10.

    The bare start has the units' flags, and is measured once more with none (``site``);
    the CLI import ``helper_flags`` (the snapshot is in
    the working directory); pyroute2 no flags, since without ``site`` it cannot be found:
    it shows what importing it would add to a unit, as the guard pays it.
    """
    steps = {"bare": (pkg.flags, "pass"), "site": ((), "pass"),
             "package": (pkg.helper_flags(), "import cloudinit_hostrouting.cli"),
             "pyroute2": ((), "import pyroute2")}
    out: Dict[str, List[float]] = {k: [] for k in (*steps, "apply", "check")}
    with hosts.fresh() as host:
        for _ in range(max(runs, 5)):
            for key, (flags, code) in steps.items():
                argv = ["ip", "netns", "exec", host.ns, pkg.python, *flags, "-c", code]
                proc = run_timed(argv, 60, cwd=pkg.root, env=pkg.env())
                expect_ok(proc, f"python -c {code!r}")
                out[key].append(proc.wall)
            for key, command in (("apply", "apply-routes"), ("check", "check-overlap")):
                run_dir = work / RUN / "bd" if key == "check" else None
                proc = run_timed(pkg.unit_argv(host.ns, command, small.config, run_dir), 60,
                                 cwd=pkg.root, env=pkg.env())
                expect_ok(proc, f"{command} N=M=10")
                out[key].append(proc.wall)
    return out


def size_step(hosts: Hosts, pkg: Package, wl: Workload, runs: int, work: Path,
              modules_file: Path) -> SizeResult:
    """Run pairs (order alternating per run), then in-process timings, at one size."""
    res = SizeResult(wl.n, wl.m)
    for run in range(runs):
        sides: Dict[str, Side] = {}
        for side in (["ours", "base"] if run % 2 == 0 else ["base", "ours"]):
            run_dir = work / RUN / side
            sides[side] = (run_ours(hosts, pkg, wl, run_dir) if side == "ours"
                           else run_baseline(hosts, pkg, wl, run_dir))
        res.ours.append(sides["ours"])
        res.base.append(sides["base"])
        log(f"  run {run + 1}/{runs}: ours {res.samples('ours', 'total')[-1]:.3f} s, "
            f"baseline {res.samples('base', 'total')[-1]:.3f} s")
    for _ in range(min(runs, 3)):
        with hosts.fresh() as host:
            out = work / "inproc.json"
            out.unlink(missing_ok=True)
            pkg.run_worker(["inproc", str(wl.config), str(work / RUN / "inproc"),
                            str(modules_file), "check" if wl.m else "apply", str(out)],
                           timeout=timeout_for(wl.n + wl.m), netns=host.ns)
            res.inproc.append(json.loads(read_output(out, "in-process timing")))
    res.rss_kb = rss_probe(hosts, pkg, wl, work / RUN / "rss", work / "rss.txt")
    return res


def profile_step(hosts: Hosts, pkg: Package, wl: Workload, work: Path, modules_file: Path
                 ) -> Dict[str, str]:
    """cProfile of each unit in-process at the scale point."""
    profiles = {}
    with hosts.fresh() as host:
        for command in UNIT_COMMANDS:
            if command == "check-overlap" and not wl.m:
                continue
            out = work / f"profile-{command}.txt"
            pkg.run_worker(["profile", command, str(wl.config), str(work / RUN / "prof"),
                            str(modules_file), str(out)],
                           timeout=timeout_for(2 * (wl.n + wl.m)), netns=host.ns)
            profiles[command] = read_output(out, f"cProfile {command}")
    return profiles


def firstboot_step(pkg: Package, reps: int, work: Path) -> Dict[str, Any]:
    """The render path in-process, and ``handle()`` in a private mount namespace."""
    out = work / "render.json"
    pkg.run_worker(["render", "100", str(reps), str(out)], timeout=600, as_unit=False)
    render = json.loads(read_output(out, "render path"))
    out = work / "handle.json"
    try:
        scratch = work / "handle-mnt"  # a tmpfs is mounted here only inside the namespace
        scratch.mkdir()
        pkg.run_worker(["handle", "100", str(max(reps // 2, 10)), str(out), str(scratch),
                        os.readlink("/proc/self/ns/mnt")],
                       timeout=600, wrap=("unshare", "-m", "--propagation", "private"),
                       as_unit=False)
        handle: Dict[str, Any] = json.loads(read_output(out, "handle()"))
    except RuntimeError as err:
        handle = {"error": str(err).splitlines()[-1]}
    return {"render": render, "handle": handle}


def measure(args: argparse.Namespace, hosts: Hosts, pkg: Package, work: Path
            ) -> Dict[str, Any]:
    """Everything, in order; returns the raw numbers."""
    log("the units' command lines and imports")
    small = make_workload(work, pkg, 10, 10)
    data: Dict[str, Any] = {"units": unit_flags(pkg, small, args.python_flags)}
    check_importable(pkg)
    data.update(import_step(hosts, pkg, small, args.runs, work))
    modules_file = work / "unit-modules.json"
    modules_file.write_text(json.dumps(data["unit_modules"]), encoding="utf-8")
    log("small-unit breakdown")
    data["breakdown"] = breakdown_step(hosts, pkg, small, args.runs, work)

    points = [(n, n) for n in args.size_list]
    if args.big:
        points.append((args.big, args.big_check))
    data["results"] = []
    for n, m in points:
        log(f"workload N={n} M={m}")
        wl = make_workload(work, pkg, n, m)
        data["results"].append(size_step(hosts, pkg, wl, args.runs, work, modules_file))

    data["profiles"] = {}
    if args.big:
        log("cProfile at the scale point")
        wl = make_workload(work, pkg, args.big, args.big_check)
        data["profiles"] = profile_step(hosts, pkg, wl, work, modules_file)
    log("render path and handle()")
    data.update(firstboot_step(pkg, args.render_reps, work))
    return data
