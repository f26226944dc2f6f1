"""Run a command where some directories are really read-only, or really full.

Root ignores permission bits, so ``chmod`` cannot make a directory read-only
for these tests.  ``run`` starts the command in a private mount namespace
(``unshare -m``, propagation private) where each given directory is bind-mounted
onto itself read-only, or a tiny tmpfs is mounted on it, and proves each mount
refuses writes before the command runs (exit 99 otherwise).  The mounts vanish
with the namespace; the host's mount table is never changed.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Dict, Optional, Sequence

NOT_READ_ONLY = 99


def run(argv: Sequence[str], read_only: Sequence[str] = (), full: Sequence[str] = (),
        cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """``argv`` with ``read_only`` dirs bound read-only and ``full`` dirs on a 4 KiB tmpfs."""
    script = ["set -e"]
    for directory in read_only:
        d = shlex.quote(directory)
        script += [f"mount --bind {d} {d}", f"mount -o remount,bind,ro {d}",
                   f"if touch {d}/.rw-probe 2>/dev/null; then echo 'not read-only: '{d} >&2; "
                   f"exit {NOT_READ_ONLY}; fi"]
    for directory in full:
        d = shlex.quote(directory)
        script += [f"mount -t tmpfs -o size=4k,nr_inodes=64 hostile-full {d}"]
    script.append("exec " + " ".join(shlex.quote(a) for a in argv))
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "\n".join(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode != NOT_READ_ONLY, proc.stderr
    return proc

