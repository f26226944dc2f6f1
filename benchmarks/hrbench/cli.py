"""``benchmarks/run.py``'s command line: options, the run's lifetime, the raw-number file."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .fixtures import Hosts, tmpfs_run_dirs
from .imports import ImportProfile
from .machine import describe, loadavg
from .measure import log, measure
from .package import check_importable, snapshot
from .report import report
from .results import SizeResult
from .workload import MAX_CHECK

FULL = {"runs": 5, "sizes": "10,100,1000", "big": 10000, "render_reps": 200}
QUICK = {"runs": 2, "sizes": "10,100", "big": 0, "render_reps": 20}


def _env_pair(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected VAR=VALUE, got {text!r}")
    return name, value


def parse_args(argv: List[str], description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="runs per size (default 5)")
    parser.add_argument("--sizes", help="N = M values (default 10,100,1000)")
    parser.add_argument("--big", type=int,
                        help="routes for the scale point (default 10000; 0 skips it)")
    parser.add_argument("--big-check", type=int, default=None,
                        help="expected CIDRs checked at the scale point (default: as --big, "
                        f"at most {MAX_CHECK:,}, the most a config may list; 0 skips)")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="the units' interpreter (default /usr/bin/python3)")
    parser.add_argument("--python-flags", metavar="FLAGS",
                        help="interpreter flags for every measured process (default: those "
                        "of the ExecStart= the package renders; '' for none)")
    parser.add_argument("--unit-env", metavar="VAR=VALUE", action="append", default=[],
                        type=_env_pair, help="add to the units' environment, e.g. to pick a "
                        "kernel backend where the package offers a choice (repeatable)")
    parser.add_argument("--render-reps", type=int,
                        help="repetitions of the render path (default 200)")
    parser.add_argument("--quick", action="store_true", help="smoke run: defaults become 2 "
                        "runs, sizes 10,100, no scale point, 20 render reps")
    parser.add_argument("--json", metavar="FILE", help="also save every raw number here")
    parser.add_argument("--report-from", metavar="FILE",
                        help="measure nothing: print the report of a run saved with --json")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.big_check is None:
        args.big_check = min(args.big, MAX_CHECK)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.runs < 1 or not args.size_list or any(s < 1 for s in args.size_list):
        parser.error("--runs and --sizes must be positive")
    if args.big in args.size_list or len(set(args.size_list)) != len(args.size_list):
        parser.error("--sizes and --big must name every size once: a repeated size would "
                     "be two points of one curve")
    return args


def _raw(args: argparse.Namespace, info: Dict[str, str], data: Dict[str, Any], elapsed: float,
         command: str) -> Dict[str, Any]:
    """Everything measured, as JSON-able values (field names kept)."""
    return {"machine": info, "args": dict(vars(args)),
            "command": command, "elapsed_s": elapsed,
            **{k: v for k, v in data.items() if k not in ("results", "imports")},
            "results": [r.to_dict() for r in data["results"]],
            "imports": {k: asdict(v) for k, v in data["imports"].items()}}


def load_raw(path: Path) -> Tuple[argparse.Namespace, Dict[str, str], Dict[str, Any], float,
                                  str]:
    """A run saved with ``--json``, back in the shapes ``report`` takes."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    data = {k: v for k, v in raw.items()
            if k not in ("machine", "args", "command", "elapsed_s", "results", "imports")}
    data["results"] = [SizeResult.from_dict(r) for r in raw["results"]]
    data["imports"] = {
        k: ImportProfile(v["command"], v["total_ms"], [tuple(x) for x in v["top"]],
                         {c: [tuple(x) for x in kids] for c, kids in v["children"].items()})
        for k, v in raw["imports"].items()}
    command = raw.get("command") or f"python3 benchmarks/run.py --json {path}"
    return argparse.Namespace(**raw["args"]), raw["machine"], data, raw["elapsed_s"], command


def _unwind_on_signals() -> None:
    """Even when started in the background (SIGINT inherited as ignored), INT, TERM and HUP
    must unwind through the ``finally`` that deletes the namespaces."""
    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)


def main(argv: Optional[List[str]] = None, description: str = "") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        from .workers import main as worker_main

        return worker_main(argv[1:])
    args = parse_args(argv, description)
    if args.report_from:
        print("\n".join(report(*load_raw(Path(args.report_from)))))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces need it")
    for tool in ("ip", "bash", "awk", "unshare", "mount", "git", "time"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    command = " ".join(["python3", "benchmarks/run.py", *argv])
    start = time.perf_counter()
    _unwind_on_signals()
    hosts = Hosts()
    atexit.register(hosts.close_all)
    work = Path(tempfile.mkdtemp(prefix="hr-bench-"))
    try:
        run_dirs = tmpfs_run_dirs(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        pkg = snapshot(args.python, work, dict(args.unit_env))
        check_importable(pkg)
        info = describe(pkg)
        info["unit_env"] = " ".join(f"{k}={v}" for k, v in args.unit_env)
        data = measure(args, hosts, pkg, work)
    finally:
        hosts.close_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dirs, ignore_errors=True)
        left = hosts.leftovers()
        if left:
            print(f"WARNING: namespaces left behind: {left}", file=sys.stderr)
    info["loadavg_end"] = loadavg()
    elapsed = time.perf_counter() - start
    print("\n".join(report(args, info, data, elapsed, command)))
    if args.json:
        raw = _raw(args, info, data, elapsed, command)
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
        log(f"raw numbers in {args.json}")
    return 0
