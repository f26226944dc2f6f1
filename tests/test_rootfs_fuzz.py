"""rootfs.resolve against the kernel's own chroot-style lookup, on random symlink trees.

The oracle is ``openat2(2)`` with ``RESOLVE_IN_ROOT`` (Linux 5.6+), which
resolves a path exactly as if the process were chrooted at the root: absolute
link targets restart at the root and ``..`` cannot climb out.  Each example
builds a random tree of directories, files and symlinks (absolute and
relative targets, ``..`` included) and compares ``resolve`` with the kernel for
random paths.  Whatever the tree, ``resolve`` must stay under the root.

Deterministic in CI (derandomized, 150 examples); for a longer local run set
``HR_FUZZ_EXAMPLES=5000``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import tempfile
from typing import ClassVar, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudinit_hostrouting.rootfs import RootError, resolve

SYS_OPENAT2 = 437  # x86_64 and aarch64 alike
RESOLVE_IN_ROOT = 0x10
EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", "150"))
_LIBC = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_: ClassVar = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def kernel_resolve(root: str, path: str, follow_last: bool) -> Tuple[Optional[str], int]:
    """(real path, 0) as the kernel resolves ``path`` chrooted at ``root``, or (None, errno)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        flags = os.O_PATH | (0 if follow_last else os.O_NOFOLLOW)
        how = _OpenHow(flags, 0, RESOLVE_IN_ROOT)
        for _ in range(1000):
            fd = _LIBC.syscall(SYS_OPENAT2, root_fd, path.lstrip("/").encode() or b".",
                               ctypes.byref(how), ctypes.sizeof(how))
            # EAGAIN: a rename or mount anywhere on the machine raced a ".." (openat2(2)).
            if fd >= 0 or ctypes.get_errno() != errno.EAGAIN:
                break
        if fd < 0:
            return None, ctypes.get_errno()
        try:
            return os.readlink(f"/proc/self/fd/{fd}"), 0
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


NAMES = st.sampled_from(["a", "b", "etc", "x"])
PARTS = st.one_of(NAMES, st.sampled_from(["..", "."]))
TARGETS = st.tuples(st.booleans(), st.lists(PARTS, min_size=1, max_size=4)).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1]))
ENTRIES = st.lists(st.tuples(st.sampled_from(["dir", "file", "link"]),
                             st.lists(NAMES, min_size=1, max_size=3), TARGETS), max_size=14)
QUERIES = st.lists(st.lists(PARTS, min_size=0, max_size=5).map(lambda p: "/" + "/".join(p)),
                   min_size=1, max_size=8)


def _real_dirs_only(root: str, parts: List[str]) -> bool:
    """Is every parent of ``parts`` a real directory under root (so creating never follows
    a link, which could lead out of the test's directory)?"""
    path = root
    for name in parts[:-1]:
        path = os.path.join(path, name)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except FileNotFoundError:
            return False
    return not os.path.lexists(os.path.join(root, *parts))


# Always there, so that links at any depth have real directories to land in or miss.
SKELETON = [("dir", ["a"], ""), ("dir", ["a", "b"], ""), ("dir", ["etc"], ""),
            ("dir", ["etc", "a"], ""), ("file", ["etc", "x"], "")]


def build(root: str, entries: List[Tuple[str, List[str], str]]) -> List[str]:
    """Make the tree; return paths that go through each link made (the lookups that matter)."""
    through = []
    for kind, parts, target in SKELETON + entries:
        if not _real_dirs_only(root, parts):
            continue
        path = os.path.join(root, *parts)
        if kind == "link":
            base = "/" + "/".join(parts)
            through += [base + suffix for suffix in ("", "/x", "/a", "/a/b", "/..", "/.")]
        if kind == "dir":
            os.mkdir(path)
        elif kind == "file":
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW))
        else:
            os.symlink(target, path)
    return through


def test_oracle_is_live(tmp_path: object) -> None:
    """Control: the kernel oracle really confines an absolute link (or every example is moot)."""
    with tempfile.TemporaryDirectory() as root:
        os.mkdir(os.path.join(root, "etc"))
        os.symlink("/etc", os.path.join(root, "link"))
        assert kernel_resolve(root, "/link", True) == (os.path.join(root, "etc"), 0)
        assert kernel_resolve(root, "/link", False) == (os.path.join(root, "link"), 0)
        assert kernel_resolve(root, "/../../..", True) == (root, 0)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(entries=ENTRIES, queries=QUERIES, follow_last=st.booleans())
def test_resolve_matches_the_kernel_in_root(entries: List[Tuple[str, List[str], str]],
                                            queries: List[str], follow_last: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.realpath(tmp)
        through_links = build(root, entries)
        for query in queries + through_links:
            try:
                ours: Optional[str] = resolve(root, query, follow_last=follow_last)
            except RootError:
                ours = None
            assert ours is None or ours == root or ours.startswith(root + "/"), (query, ours)
            theirs, err = kernel_resolve(root, query, follow_last)
            if err == 0:
                assert ours == theirs, (query, ours, theirs)
            elif err in (errno.ELOOP, errno.ENOTDIR) and ours is None:
                continue
            else:
                # The kernel cannot look up what does not exist; ours keeps the missing
                # components, and what it names must not exist either.
                assert err == errno.ENOENT, (query, err, ours)
                assert ours is None or not os.path.lexists(ours), (query, ours)


if not hasattr(os, "O_PATH"):  # pragma: no cover - Linux only, as the product
    pytest.skip("openat2 oracle needs Linux", allow_module_level=True)
