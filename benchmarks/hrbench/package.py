"""The package under test: a frozen snapshot, and the exact command lines its units run.

The snapshot (``cloudinit_hostrouting/`` and ``cc_host_routing.py`` copied and byte-compiled
at the start, its sha256 printed) keeps edits made while a long run goes on from mixing two
versions into one table, and keeps the first measured process from paying for compiling
``.pyc`` files.  Its directory is the working directory of every unit and worker process,
so ``PY -m cloudinit_hostrouting`` finds it there, as it finds the installed package on a node;
the units' own form, ``PY -I -S <snapshot>/cloudinit_hostrouting/unit.py``, names it.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .fixtures import REPO
from .procs import sh

UNIT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's
MODULE = "cloudinit_hostrouting"
UNIT_COMMANDS = ("apply-routes", "check-overlap")
RUN_PY = REPO / "benchmarks" / "run.py"


def unit_entry(execstart: str, python: str, command: str
               ) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(interpreter flags, entry) of a unit's ``ExecStart=`` line.

    The entry is ``-m cloudinit_hostrouting`` or the path of a script named ``unit.py``
    (the form the package renders now).  Taken from the unit the package renders, so the
    benchmark runs what the units run even when ExecStart changes shape; any shape other
    than ``PY [flags] ENTRY COMMAND ...`` is an error, not a guess.
    """
    words = shlex.split(execstart.split("=", 1)[1] if execstart.startswith("ExecStart=")
                        else execstart)
    if words[:1] != [python]:
        raise ValueError(f"ExecStart does not start with {python}: {execstart!r}")
    for at, word in enumerate(words[1:], 1):
        if word == "-m":
            flags, entry, rest = words[1:at], words[at:at + 2], words[at + 2:]
            if entry[1:] != [MODULE]:
                break
        elif word.endswith("/unit.py"):
            flags, entry, rest = words[1:at], [word], words[at + 1:]
        else:
            continue
        if rest[:1] != [command]:
            break
        return tuple(flags), tuple(entry)
    raise ValueError(f"ExecStart is not `{python} [flags] -m {MODULE}|.../unit.py {command}`: "
                     f"{execstart!r}")


@dataclass
class Package:
    """Where the snapshot is, and how the units' interpreter is started on it."""

    root: Path
    digest: str
    python: str
    flags: Tuple[str, ...] = ()
    entry: Tuple[str, ...] = ("-m", MODULE)
    extra_env: Dict[str, str] = field(default_factory=dict)

    def env(self) -> Dict[str, str]:
        """A unit-like environment: systemd's PATH, no PYTHONPATH, C.UTF-8, plus ``--unit-env``."""
        return {"PATH": UNIT_PATH_ENV, "LANG": "C.UTF-8", **self.extra_env}

    def unit_argv(self, ns: str, command: str, config: Path, run_dir: Optional[Path] = None,
                  py_opts: Sequence[str] = ()) -> List[str]:
        """``ip netns exec NS PY [flags] ENTRY COMMAND --config F``, ENTRY as ExecStart has it.

        ``--run-dir`` keeps check-overlap's markers out of the real /run; ``py_opts`` adds
        measurement options such as ``-X importtime``.
        """
        argv = ["ip", "netns", "exec", ns, self.python, *self.flags, *py_opts, *self.entry,
                command, "--config", str(config)]
        return argv + (["--run-dir", str(run_dir)] if run_dir is not None else [])

    def helper_flags(self) -> Tuple[str, ...]:
        """The units' flags for the benchmark's own processes (``-c``, workers), less ``-I``:
        it would hide the working directory (the snapshot) and run.py's own directory, which
        those processes import from, while a unit finds the package from its script's path."""
        return tuple(f for f in self.flags if f != "-I")

    def python_argv(self, ns: str, *args: str) -> List[str]:
        """The units' interpreter with ``helper_flags``, running ``args``, in ``ns``."""
        return ["ip", "netns", "exec", ns, self.python, *self.helper_flags(), *args]

    def run_worker(self, args: Sequence[str], timeout: float, netns: Optional[str] = None,
                   wrap: Sequence[str] = (), as_unit: bool = True) -> str:
        """``PY [flags] benchmarks/run.py --worker ...``: a measurement inside the units'
        interpreter, which imports only the standard library and the package.  With
        ``as_unit=False`` no flags: the render path and ``handle()`` run inside cloud-init's
        own process, with ``site``, where ``cloudinit`` is importable."""
        flags = self.helper_flags() if as_unit else ()
        argv = [*wrap, self.python, *flags, str(RUN_PY), "--worker", *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        return sh(*argv, timeout=timeout, cwd=self.root, env=self.env())


def snapshot(python: str, work: Path, extra_env: Dict[str, str]) -> Package:
    """Copy the package into ``work/pkg``, byte-compile it there, and hash it."""
    dest = work / "pkg"
    shutil.copytree(REPO / MODULE, dest / MODULE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "cc_host_routing.py", dest / "cc_host_routing.py")
    sh(python, "-m", "compileall", "-q", str(dest), timeout=120)
    digest = hashlib.sha256()
    for path in sorted(dest.rglob("*.py")):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return Package(dest, digest.hexdigest()[:12], python, extra_env=dict(extra_env))


def check_importable(pkg: Package) -> None:
    """Stop early, and say why, when the units' command line cannot run the snapshot."""
    argv = [pkg.python, *pkg.flags, *pkg.entry, "--help"]
    try:
        sh(*argv, timeout=60, cwd=pkg.root, env=pkg.env())
    except RuntimeError as err:
        raise SystemExit(
            f"{' '.join(argv)} cannot run the package snapshot in {pkg.root}"
            + (f" (the flags {' '.join(pkg.flags)} may hide it; see --python-flags)"
               if pkg.flags else "") + f":\n{err}") from None
