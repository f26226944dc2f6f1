"""Paths inside an image root, resolved the way a chroot would: never outside it.

``render``, ``uninstall`` and ``enable-module`` work on a root directory that
may be an unpacked image.  Its ``/etc/...`` may hold absolute symlinks meant
for the image (``/etc/cloud -> /usr/share/cloud``): followed naively, they lead
onto the build host, where we would read its config and write or delete its
files.  ``resolve`` follows every symlink with the root as ``/`` (an absolute
target restarts at the root, ``..`` stops at it), so the answer is always a
path under the root.  Standard library ``os`` only, like ``atomic``.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_SYMLINKS = 40  # the kernel's own limit before ELOOP


class RootError(ValueError):
    """A root or a path under it that cannot be used; the message says which and why."""


def check_root(root: str, must_exist: bool = True) -> str:
    """``root`` made canonical, or RootError: empty, relative, not a directory, missing.

    A relative root is refused: ``render --root ""`` would write our units into
    the working directory.  With ``must_exist`` False a missing root is accepted
    (render creates it), but not one under a file.
    """
    if not root:
        raise RootError("--root is empty. Fix: give the image's root directory as an "
                        "absolute path, e.g. --root /mnt/image (or / for this system)")
    if not os.path.isabs(root):
        raise RootError(f"--root {root!r} is relative. Fix: give an absolute path, e.g. "
                        f"--root {os.path.abspath(root)}")
    real = os.path.realpath(root)
    probe = real
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError) as err:
            if must_exist and probe == real and isinstance(err, FileNotFoundError):
                raise RootError(f"--root {root}: no such directory. Fix: give an existing "
                                "image root") from None
            probe = os.path.dirname(probe)
            continue
        except OSError as err:
            raise RootError(f"--root {root}: cannot use {probe}: {err.strerror}. Fix: give "
                            "a root directory you can read") from err
        if not stat.S_ISDIR(st.st_mode):
            what = "is" if probe == real else f"is under {probe}, which is"
            raise RootError(f"--root {root} {what} not a directory. Fix: give the image's "
                            "root directory")
        return real


def resolve(root: str, path: str, follow_last: bool = True) -> str:
    """The real location of absolute ``path`` inside ``root`` (canonical, from check_root).

    Symlinks are followed as inside a chroot at ``root``.  Components that do
    not exist yet are kept as they are (they will be created as directories).
    With ``follow_last`` False the final component is not followed, so a
    symlink there is itself replaced or removed, never what it points to.
    Raises RootError on a symlink loop or a component that is not a directory.
    """
    if not path.startswith("/"):
        raise RootError(f"{path!r} is not an absolute path")
    done = ""  # resolved part, relative to root, "" or "/a/b"
    # "." stays in, so "file/." fails as in the kernel (a non-directory followed by more).
    todo = [c for c in path.split("/") if c]
    links = 0
    missing = False  # has a component been absent? Then so is everything below it
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            if missing:  # the kernel cannot climb out of what does not exist: nor do we
                raise RootError(f"{root.rstrip('/')}{path}: climbs with '..' out of a "
                                "directory that does not exist. Fix: create it or fix the "
                                "symlink")
            done = done.rsplit("/", 1)[0]  # ".." at the root stays at the root
            continue
        candidate = f"{done}/{name}"
        if not todo and not follow_last:
            done = candidate
            break
        try:
            st = os.lstat(root.rstrip("/") + candidate)
        except FileNotFoundError:
            done, missing = candidate, True
            continue
        except OSError as err:
            raise RootError(f"{root.rstrip('/')}{candidate}: {err.strerror}. Fix: make it "
                            "readable") from err
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise RootError(f"{root.rstrip('/')}{path}: {os.strerror(errno.ELOOP)}. "
                                "Fix: repair the symlinks on that path")
            target = os.readlink(root.rstrip("/") + candidate)
            if target.startswith("/"):
                done = ""
            todo = [c for c in target.split("/") if c] + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise RootError(f"{root.rstrip('/')}{candidate} is not a directory, but {path} "
                            "needs it to be one. Fix: move it away")
        done = candidate
    return (root.rstrip("/") + done) or "/"
