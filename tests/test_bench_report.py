"""The benchmark's whole report (benchmarks/hrbench/report.py) from chosen numbers, and the
``--json`` file read back by ``--report-from`` (hrbench/cli.py) printing the same report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from bench_support import proc
from hrbench.cli import _raw, load_raw
from hrbench.imports import ImportProfile
from hrbench.pairs import Side
from hrbench.report import report
from hrbench.results import SizeResult

INFO = {"nproc": "2", "cpu": "Test CPU 9000", "memory": "23.5 GiB",
        "distro": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-test",
        "python": "/usr/bin/python3 3.11.2", "pyroute2": "0.7.2",
        "iproute2": "ip utility, iproute2-6.1.0", "bash": "5.2.15(1)-release",
        "commit": "abc1234", "package": "commit abc1234 (package snapshot sha256 0123456789ab)",
        "loadavg_start": "0.50 0.40 0.30", "loadavg_end": "1.50 0.60 0.35", "unit_env": ""}


def _size(n: int, ours: float, base: float) -> SizeResult:
    """Two run pairs; ours per unit ``ours`` s wall, half of it CPU; 12 MiB."""
    run = Side(proc(ours, ours / 2, 12288), proc(ours, ours / 2, 12288))
    return SizeResult(n, n, ours=[run, run], base=[Side(proc(base), proc(base))] * 2,
                      inproc=[{"apply_s": ours / 4, "check_s": ours / 4, "load_s": 0.001}])


def _run() -> Dict[str, Any]:
    args = argparse.Namespace(runs=2, big=10000, big_check=10000, sizes="10,100,1000",
                              size_list=[10, 100, 1000], python="/usr/bin/python3")
    data: Dict[str, Any] = {
        "results": [_size(10, 0.03, 0.04), _size(100, 0.05, 0.3), _size(1000, 0.2, 3.0),
                    _size(10000, 1.7, 30.0)],
        "imports": {"apply-routes": ImportProfile("apply-routes", 40.0, [("json", 2.0)])},
        "breakdown": {"bare": [0.02], "package": [0.03], "pyroute2": [0.2],
                      "apply": [0.035], "check": [0.04]},
        "profiles": {}, "unit_modules": ["json"],
        "render": {"full_s": [0.01], "apply_plan_s": [0.005], "files": 7, "tmpdir": "/tmp",
                   "fstype": "tmpfs"},
        "handle": {"handle_s": [0.008], "systemctl_calls": 2},
        "units": {"measured_flags": [], "rendered_flags": []},
        "backend": {"apply-routes": "standard library only (pyroute2 not imported)"},
    }
    return {"args": args, "info": INFO, "data": data, "elapsed": 480.0,
            "command": "python3 benchmarks/run.py"}


def test_report_states_the_machine_the_baseline_and_every_target() -> None:
    run = _run()
    text = "\n".join(report(run["args"], run["info"], run["data"], run["elapsed"],
                            run["command"]))
    for fact in ("2 CPUs (Test CPU 9000)", "23.5 GiB", "Debian GNU/Linux 12", "kernel 6.1.0-test",
                 "/usr/bin/python3 3.11.2", "pyroute2 0.7.2", "commit abc1234",
                 "Load average 0.50 0.40 0.30 at start, 1.50 0.60 0.35 at end",
                 "measured in the same run", "apply-routes standard library only"):
        assert fact in text, fact
    # Per unit at 10: 0.04/0.03 = 1.33x; both: 0.08/0.06; 1000: 6/0.4 = 15x; 10000: 60/3.4.
    assert "- PASS: N=M=10, both units: baseline/ours 1.33x" in text
    assert "- MISS: N=M=1,000, both units: baseline/ours 15.0x" in text
    assert "- MISS: N=M=10,000, both units: baseline/ours 17.6x" in text
    assert "missed by a factor of 1.33" in text  # 20 / 15
    # CPU per unit 0.025, 0.1, 0.85 s: 75/900 us and 750/9000 us per extra item, 1.00x.
    assert "- PASS: linear up to N=M=10,000" in text
    assert "83 us of CPU per extra route from 100 to 1,000, 83 us from 1,000 to 10,000: " \
           "1.00x" in text
    assert "- PASS: apply-routes peak RSS at most 20 MiB: worst 12.0 MiB" in text
    assert "| 10,000 | 10,000 | both units | 3.400 | 60.0 | **17.6x** [17.6x-17.6x] |" in text
    assert "Whole benchmark: 8.0 min; `python3 benchmarks/run.py`." in text


def test_saved_run_prints_the_same_report(tmp_path: Path) -> None:
    run = _run()
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(_raw(run["args"], run["info"], run["data"], run["elapsed"],
                                     run["command"]), default=str), encoding="utf-8")
    again = load_raw(saved)
    assert report(*again) == report(run["args"], run["info"], run["data"], run["elapsed"],
                                    run["command"])
    assert again[2]["results"] == run["data"]["results"]
