"""The few choke points through which this package changes the system.

Files and symlinks go through ``apply_plan``: under a root directory (so tests
and image bakers can point it anywhere, and symlinks in an image never lead out
of it), only when content changed, and all or nothing: every file is staged
before the first one is put in place.  Removal, of stale files and by
``uninstall``, is limited to the paths this package writes (``owned``), whatever
a manifest on disk says.  Commands go through ``run``.  Keeping side effects
here makes the rest pure.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import posixpath
import re
import stat
import subprocess
from typing import Callable, List, Optional, Sequence, Tuple

from .atomic import commit, discard, stage_file, stage_symlink
from .atomic import write_atomic as write_atomic  # for callers that write one file
from .constants import (
    CHECK_UNIT,
    CONFIG_DIR,
    DROPIN_NAME,
    GUARD_UNIT,
    MANIFEST_PATH,
    PROTOS_PATH,
    STATIC_UNIT,
    UNIT_DIR,
)
from .render import Entry
from .rootfs import RootError, check_root, resolve

LOG = logging.getLogger(__name__)

ALL_UNITS = (STATIC_UNIT, CHECK_UNIT, GUARD_UNIT)
WANTS_DIR = f"{UNIT_DIR}/multi-user.target.wants"
# The directory of a drop-in for any unit name systemd accepts (templates included).
_DROPIN_DIR = re.compile(r"[A-Za-z0-9:_.\\@-]+\.[a-z]+\.d")
MAX_MANIFEST_BYTES = 1 << 20  # a real one is a few hundred bytes


class ManifestError(ValueError):
    """Our manifest cannot be trusted; the message names the file, the problem and the fix."""


def owned(path: str) -> bool:
    """Is ``path`` one this package writes?  The only paths it ever removes.

    Derived from the same constants ``render.plan`` builds its paths from
    (a test holds the two together): our config directory, our units, our
    drop-in name inside a unit's ``.d`` directory, our iproute2 protocol names,
    and our units' ``multi-user.target.wants`` links.
    """
    if not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    directory, name = posixpath.split(path)
    if path.startswith(CONFIG_DIR + "/"):
        return True
    if path == PROTOS_PATH:
        return True
    if directory == UNIT_DIR:
        return name in ALL_UNITS
    if directory == WANTS_DIR:
        return name in ALL_UNITS
    parent, unit_d = posixpath.split(directory)
    return parent == UNIT_DIR and name == DROPIN_NAME and bool(_DROPIN_DIR.fullmatch(unit_d))


def _manifest_problem(where: str, problem: str) -> ManifestError:
    return ManifestError(
        f"{where} {problem}: refusing to trust it. Fix: delete it and run render again "
        f"(or remove our files by hand: {CONFIG_DIR}/, {UNIT_DIR}/hostrouting-*.service, "
        f"{UNIT_DIR}/*.d/{DROPIN_NAME}, {PROTOS_PATH})")


def read_manifest(root: str) -> List[str]:
    """Paths written last time under ``root`` (canonical); empty when there was no last time.

    Raises ManifestError when the file is not what we write: not a regular file,
    too big, not UTF-8 JSON, not a list, or listing any path we never write (a
    manifest naming /etc/passwd is not ours, so none of it is believed).
    """
    path = resolve(root, MANIFEST_PATH, follow_last=False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as err:
        if not os.path.islink(path):
            raise _manifest_problem(path, f"cannot be read ({err.strerror})") from err
        raise _manifest_problem(path, "is a symlink") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise _manifest_problem(path, f"is {kind}")
        raw = os.read(fd, MAX_MANIFEST_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _manifest_problem(path, f"is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        paths = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _manifest_problem(path, "is not a JSON list") from None
    if not isinstance(paths, list):
        kind = "null" if paths is None else type(paths).__name__
        raise _manifest_problem(path, f"holds {kind}, not a list of paths")
    for item in paths:
        if not isinstance(item, str):
            raise _manifest_problem(path, f"lists {item!r}, which is not a path")
        if not owned(item):
            raise _manifest_problem(path, f"lists {item}, which this package never writes")
    return list(dict.fromkeys(paths))


def _not_a_directory(target: str) -> bool:
    """False if nothing is at ``target``; raise if a directory is where our file goes."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise RootError(f"{target} is a directory where this package keeps a file: "
                        "refusing to touch it. Fix: move it away and run again")
    return True


def _removable(root: str, path: str) -> Optional[str]:
    """Where ``path`` (owned) is under ``root``, if there is a file or symlink to remove.

    The final component is never followed: a symlink is removed, not its target.
    """
    target = resolve(root, path, follow_last=False)
    if not _not_a_directory(target):
        return None
    _writable(os.path.dirname(target))
    return target


def _writable(directory: str) -> None:
    """Raise the error a removal in ``directory`` would meet, before anything is removed."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), directory)
    if not os.access(directory, os.W_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), directory)


def _makedirs(directory: str, created: List[str]) -> None:
    """``os.makedirs`` that records every directory it made, so a failure can undo them."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        created.append(path)


def apply_plan(root: str, entries: Sequence[Entry],
               warn: Callable[[str], None] = LOG.warning) -> List[str]:
    """Make the tree under ``root`` match ``entries``; return the paths changed.

    Every changed file and link is staged first (a complete temporary beside
    its target, parent directories created); only when all staged are they
    renamed into place, so a read-only or full file system leaves nothing
    half-written.  Files of ours from an earlier plan that this one no longer
    has (listed in our manifest) are removed.  An empty plan is ``uninstall``:
    it needs a trustworthy manifest and raises ManifestError without one; a
    non-empty plan (first boot) still writes, with ``warn`` saying the stale
    files could not be identified.  Raises RootError or OSError with the path.
    """
    root = check_root(root, must_exist=bool(not entries))
    for entry in entries:
        if not owned(entry.path):
            raise ValueError(f"refusing to write {entry.path}: not a path this package owns")
    try:
        old = read_manifest(root)
    except ManifestError as err:
        if not entries:
            raise
        warn(f"{err}; files an earlier config wrote may be left behind")
        old = []
    wanted = sorted(e.path for e in entries)
    manifest = [Entry(MANIFEST_PATH, json.dumps(wanted, indent=1) + "\n")] if wanted else []
    staged: List[Tuple[str, str, str]] = []  # (tmp, target, path)
    created: List[str] = []
    try:
        for entry in [*entries, *manifest]:
            target = resolve(root, entry.path, follow_last=False)
            _not_a_directory(target)
            _makedirs(os.path.dirname(target), created)
            if entry.link_to is not None:
                tmp = stage_symlink(target, entry.link_to)
            else:
                tmp = stage_file(target, entry.text or "", entry.mode)
            if tmp is not None:
                staged.append((tmp, target, entry.path))
        # The manifest goes last of all when nothing of ours is left.
        drop = [p for p in sorted(set(old) - set(wanted)) if p != MANIFEST_PATH]
        if not wanted:
            drop.append(MANIFEST_PATH)
        stale = [(p, t) for p, t in ((p, _removable(root, p)) for p in drop) if t]
    except BaseException:
        for tmp, _, _ in staged:
            discard(tmp)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    changed = []
    for tmp, target, path in staged:
        commit(tmp, target)
        if path != MANIFEST_PATH:
            changed.append(path)
    for path, target in stale:
        os.unlink(target)
        if path != MANIFEST_PATH:
            changed.append(path)
    if not wanted:
        _rmdir_if_empty(resolve(root, CONFIG_DIR, follow_last=False))
    return changed


def _rmdir_if_empty(directory: str) -> None:
    """Our config directory goes with its last file; anything else in it keeps it."""
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def run(argv: Sequence[str]) -> None:
    """Run a command (never through a shell); raise with its output on failure."""
    LOG.debug("running %s", " ".join(argv))
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout.strip()}")
