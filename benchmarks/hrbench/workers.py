"""Measurements that run inside the units' interpreter: ``PY benchmarks/run.py --worker``.

They import only the standard library, the package (from the working directory, which is
the snapshot, as ``-m`` would) and these modules.  Results go to a file named on the
command line, as JSON or text.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import runpy
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

MODULE = "cloudinit_hostrouting"


def preimport(modules_file: str) -> List[str]:
    """Import what the units import (the list from ``-X importtime``), so in-process
    timings show the work, not imports; returns the names that failed to import."""
    failed = []
    for name in json.loads(Path(modules_file).read_text(encoding="utf-8")):
        try:
            importlib.import_module(name)
        except Exception:  # a name the unit imported conditionally; say so, go on
            failed.append(name)
    return failed


def run_unit(argv: List[str]) -> int:
    """One unit's command line in-process, through ``-m``'s own path (runpy), stdout muted."""
    saved = sys.argv
    sys.argv = [MODULE, *argv]
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            runpy.run_module(MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def timed(call: Callable[[], Any]) -> Tuple[Any, float]:
    t0 = time.perf_counter()
    value = call()
    return value, time.perf_counter() - t0


def inproc(config: str, run_dir: str, modules_file: str, with_check: bool) -> Dict[str, Any]:
    """Both units' work in-process, imports excluded: where the per-item cost shows."""
    failed = preimport(modules_file)
    from cloudinit_hostrouting.config import load_file

    out: Dict[str, Any] = {"preimport_failed": failed}
    _, out["load_s"] = timed(lambda: load_file(config))
    rc, out["apply_s"] = timed(lambda: run_unit(["apply-routes", "--config", config]))
    if with_check:
        check_rc, out["check_s"] = timed(lambda: run_unit(
            ["check-overlap", "--config", config, "--run-dir", run_dir]))
        rc |= check_rc
    if rc:
        raise SystemExit(f"in-process run failed ({rc})")
    return out


def profile(command: str, config: str, run_dir: str, modules_file: str) -> str:
    """cProfile one unit in-process (imports excluded); top entries by cumulative and own."""
    import cProfile
    import io
    import pstats

    preimport(modules_file)
    argv = [command, "--config", config]
    if command == "check-overlap":
        argv += ["--run-dir", run_dir]
    prof = cProfile.Profile()
    rc, wall = timed(lambda: prof.runcall(run_unit, argv))
    buf = io.StringIO()
    buf.write(f"{command} --config {Path(config).name}: rc {rc}, {wall:.3f} s under cProfile\n")
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    buf.write("-- by cumulative time --\n")
    stats.sort_stats("cumulative").print_stats(16)
    buf.write("-- by own time --\n")
    stats.sort_stats("tottime").print_stats(12)
    return re.sub(r"\n{3,}", "\n\n", buf.getvalue())


def normalize(raw_path: str, config: str, python: str, units_out: str) -> None:
    """Write the config as the module writes it, and the ExecStart= line of each unit."""
    from cloudinit_hostrouting.config import parse
    from cloudinit_hostrouting.render import plan

    raw = json.loads(Path(raw_path).read_text(encoding="utf-8"))
    cfg = parse(raw["host_routing"])
    Path(config).write_text(cfg.to_json(), encoding="utf-8")
    lines = [line for entry in plan(cfg, python) if entry.text
             for line in entry.text.splitlines() if line.startswith("ExecStart=")]
    units = {command: line for command in ("apply-routes", "check-overlap", "guard")
             for line in lines if f" {command} --config " in line}
    Path(units_out).write_text(json.dumps(units), encoding="utf-8")


def main(argv: List[str]) -> int:
    """Entry point of ``--worker KIND ...``."""
    sys.path.insert(0, os.getcwd())  # the snapshot, as ``-m`` puts it first
    kind, rest = argv[0], argv[1:]
    if kind == "normalize":
        normalize(*rest)
    elif kind == "inproc":
        result = inproc(rest[0], rest[1], rest[2], rest[3] == "check")
        Path(rest[4]).write_text(json.dumps(result), encoding="utf-8")
    elif kind == "profile":
        Path(rest[4]).write_text(profile(*rest[:4]), encoding="utf-8")
    elif kind in ("render", "handle"):
        from . import firstboot

        return firstboot.main(kind, rest)
    else:
        raise SystemExit(f"unknown worker {kind}")
    return 0
