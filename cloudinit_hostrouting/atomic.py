"""Atomic file and symlink writes: a reader sees the old version or the new one, never half.

Kept to the standard library's ``os`` on purpose: the check unit writes its
markers through this on every boot, and must not pay for ``tempfile``,
``logging`` or ``subprocess`` (which ``effects`` needs and the boot path does
not).  Writing is split into *stage* (a complete temporary file next to the
target) and *commit* (one rename), so a caller writing several files can stage
them all first and commit only if every one staged: nothing partial is left.
"""

from __future__ import annotations

import errno
import itertools
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

_COUNTER = itertools.count()
# Longer than any file we write; a bigger target is "different" without reading it all.
_COMPARE_LIMIT = 1 << 20


def _temp_name(target: str) -> str:
    """A sibling name no other writer (process or thread) can pick at the same time."""
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}-{next(_COUNTER)}")


def _unchanged(target: str, data: bytes, mode: int) -> bool:
    """True if ``target`` is a regular file (not a symlink) with exactly ``data`` and ``mode``."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # missing, a symlink (ELOOP), unreadable: write it
    try:
        st = os.fstat(fd)
        if not _is_regular(st.st_mode) or (st.st_mode & 0o7777) != mode \
                or st.st_size != len(data) or st.st_size > _COMPARE_LIMIT:
            return False
        chunks = []
        while True:
            chunk = os.read(fd, _COMPARE_LIMIT + 1)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks) == data
    finally:
        os.close(fd)


def _is_regular(st_mode: int) -> bool:
    return (st_mode & 0o170000) == 0o100000


def stage_file(target: str, text: str, mode: int = 0o644) -> Optional[str]:
    """Write ``text`` to a new temporary file beside ``target``; return its path.

    Returns None when ``target`` already holds exactly this text and mode, so
    an unchanged file keeps its inode and mtime.  The parent directory must
    exist.  On any failure the temporary file is gone and the error raised.
    """
    data = text.encode("utf-8")
    if _unchanged(target, data, mode):
        return None
    tmp = _temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed os.open's mode
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        discard(tmp)
        raise
    return tmp


def stage_symlink(target: str, link_to: str) -> Optional[str]:
    """A temporary symlink beside ``target`` pointing at ``link_to``; None if already so."""
    try:
        if os.readlink(target) == link_to:
            return None
    except OSError:
        pass  # missing, or not a symlink: replace it
    tmp = _temp_name(target)
    os.symlink(link_to, tmp)
    return tmp


def commit(tmp: str, target: str) -> None:
    """Move a staged file or link into place in one rename (a symlink target is replaced,
    never followed); the temporary is removed if the rename fails."""
    try:
        os.replace(tmp, target)
    except BaseException:
        discard(tmp)
        raise


def discard(tmp: str) -> None:
    """Remove a staged temporary that will not be committed."""
    try:
        os.unlink(tmp)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise


def write_atomic(target: str, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``target`` via rename; return False if it was already identical.

    The parent directory is created if missing.
    """
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = stage_file(target, text, mode)
    if tmp is None:
        return False
    commit(tmp, target)
    return True
