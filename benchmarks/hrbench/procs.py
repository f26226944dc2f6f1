"""Running processes: timed with their own ``wait4`` rusage, or untimed helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence


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

    ``ip netns exec`` execs the command in place, so the rusage is the unit's own
    interpreter's; for bash it includes the ``ip``/``awk`` children it reaped.  Output goes
    to files, not pipes, so a chatty process never blocks on a full pipe and the parent does
    no reading while the clock runs.  A timer kills the process group.
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


def sh(*argv: str, timeout: float = 30, cwd: Optional[Path] = None,
       env: Optional[Dict[str, str]] = None) -> str:
    """Run a helper command (untimed); raise with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def expect_ok(proc: Proc, what: str) -> None:
    """A measured process that failed makes its numbers meaningless: stop the run."""
    if proc.rc != 0:
        raise RuntimeError(f"{what} exited {proc.rc}\n{proc.stdout}\n{proc.stderr}")


def timeout_for(items: int) -> float:
    """A generous bound for one process handling ``items`` routes or CIDRs."""
    return 120 + 0.1 * items
