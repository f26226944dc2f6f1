"""The few choke points through which this package changes the system.

Files and symlinks go through ``apply_plan`` (atomic, only when content changed,
under a root directory so tests and image bakers can point it anywhere);
commands go through ``run``.  Keeping side effects here makes the rest pure.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from typing import List, Sequence

from .constants import MANIFEST_PATH
from .render import Entry

LOG = logging.getLogger(__name__)


def under(root: str, path: str) -> str:
    """``path`` (absolute) re-rooted under ``root``."""
    return os.path.join(root, path.lstrip("/"))


def write_atomic(target: str, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``target`` via rename; return False if already identical.

    A reader (systemd, a unit, a crash mid-boot) sees the old file or the new
    one, never half of one.
    """
    try:
        with open(target, encoding="utf-8") as handle:
            if handle.read() == text and (os.stat(target).st_mode & 0o777) == mode:
                return False
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def _symlink_atomic(target: str, link_to: str) -> bool:
    if os.path.islink(target) and os.readlink(target) == link_to:
        return False
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    os.symlink(link_to, tmp)
    os.replace(tmp, target)
    return True


def apply_plan(root: str, entries: Sequence[Entry]) -> List[str]:
    """Make the tree under ``root`` match ``entries``; return the paths changed.

    Files we wrote for an earlier config and no longer need (listed in our
    manifest) are removed; nothing outside the manifest is ever removed.
    """
    changed = []
    for entry in entries:
        target = under(root, entry.path)
        if entry.link_to is not None:
            done = _symlink_atomic(target, entry.link_to)
        else:
            done = write_atomic(target, entry.text or "", entry.mode)
        if done:
            changed.append(entry.path)
    wanted = sorted(e.path for e in entries)
    for stale in sorted(set(read_manifest(root)) - set(wanted)):
        target = under(root, stale)
        if os.path.lexists(target):
            os.unlink(target)
            changed.append(stale)
    if wanted:
        write_atomic(under(root, MANIFEST_PATH), json.dumps(wanted, indent=1) + "\n")
    elif os.path.exists(under(root, MANIFEST_PATH)):
        os.unlink(under(root, MANIFEST_PATH))  # an empty plan: nothing of ours is left
    return changed


def read_manifest(root: str) -> List[str]:
    """Paths written last time; empty when there was no last time."""
    try:
        with open(under(root, MANIFEST_PATH), encoding="utf-8") as handle:
            paths = json.load(handle)
    except (FileNotFoundError, ValueError):
        return []
    return [p for p in paths if isinstance(p, str) and p.startswith("/") and ".." not in p]


def run(argv: Sequence[str]) -> None:
    """Run a command (never through a shell); raise with its output on failure."""
    LOG.debug("running %s", " ".join(argv))
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout.strip()}")
