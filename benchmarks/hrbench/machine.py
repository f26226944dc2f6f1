"""Where the numbers came from: CPU, memory, OS, kernel, interpreter, pyroute2, tools,
the commit, and the load average (taken at the start and again at the end)."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Dict

from .fixtures import REPO
from .package import MODULE, Package
from .procs import sh

VERSIONS_PROBE = """import sys
print(sys.version.split()[0])
try:
    import importlib.metadata as m
    print(m.version('pyroute2'))
except Exception as err:
    print('not-installed:' + type(err).__name__)
"""


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _first_value(path: str, prefix: str, sep: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(prefix):
                return line.split(sep, 1)[1].strip().strip('"')
    return "unknown"


def describe(pkg: Package) -> Dict[str, str]:
    """The machine and software, as the README states them under each table."""
    # pyroute2.__version__ is 'unknown' on Debian: ask the distribution metadata.
    py_version, pyroute2_version = sh(pkg.python, "-c", VERSIONS_PROBE, cwd=pkg.root,
                                      env=pkg.env()).split()
    commit = sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD").strip()
    dirty = sh("git", "-C", str(REPO), "status", "--porcelain", MODULE,
               "cc_host_routing.py").strip()
    mem_kb = int(_first_value("/proc/meminfo", "MemTotal:", ":").split()[0])
    return {
        "nproc": sh("nproc").strip(),
        "cpu": _first_value("/proc/cpuinfo", "model name", ":"),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "distro": _first_value("/etc/os-release", "PRETTY_NAME=", "="),
        "python": f"{pkg.python} {py_version}",
        "pyroute2": pyroute2_version,
        "iproute2": sh("ip", "-V").strip(),
        "bash": sh("/bin/bash", "-c", "echo $BASH_VERSION").strip(),
        "commit": commit,
        "package": f"commit {commit}" + (" + uncommitted package changes" if dirty else "")
                   + f" (package snapshot sha256 {pkg.digest})",
        "loadavg_start": loadavg(),
    }
