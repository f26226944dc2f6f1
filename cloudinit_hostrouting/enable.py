"""enable-module: put ``host_routing`` into the image's ``cloud_init_modules``.

A ``cloud_init_modules`` list in /etc/cloud/cloud.cfg.d/*.cfg replaces the
distro's list rather than extending it (``merge_how`` does not apply to system
config).  So we compute the effective list exactly as cloud-init would, append
our entry, and write that whole list into one file of our own that sorts last.
Running it again yields the same file; ``--undo`` deletes the file, which
restores whatever list was effective before.

The root is usually an unpacked image, whose symlinks are meant for the image:
every path is resolved inside the root as a chroot would (``rootfs``), so
nothing of the build host is read or written.  A config file we cannot read
as cloud-init would (broken YAML, not UTF-8, not a mapping) is refused rather
than guessed around: cloud-init would silently ignore the whole file, and with
it any module list the image's author meant it to set.
"""

from __future__ import annotations

import os
import stat
from typing import Any, List, Optional, Tuple

from .atomic import write_atomic
from .rootfs import RootError, check_root, resolve

CLOUD_CFG = "/etc/cloud/cloud.cfg"
CLOUD_CFG_D = "/etc/cloud/cloud.cfg.d"
OUR_FILE = CLOUD_CFG_D + "/99_zz-cloudinit-hostrouting.cfg"
# The list form passes the module-name enum of both cloud-init 22.4 and 25.1,
# where a bare 'host_routing' string does not.
ENTRY = ["host_routing", "once-per-instance"]
NAMES = {"host_routing", "host-routing", "cc_host_routing"}
MAX_CFG_BYTES = 4 << 20  # a distro's cloud.cfg is a few KiB


def _read_text(path: str, shown: str) -> Optional[str]:
    """The UTF-8 text of regular file ``path`` (resolved in the root), None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # cloud-init skips a missing (or dangling) file too
    except OSError as err:
        raise RootError(f"{path}: cannot read it ({err.strerror})") from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RootError(f"{path} is not a regular file. Fix: make {shown} a file or "
                            "remove it")
        raw = os.read(fd, MAX_CFG_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_CFG_BYTES:
        raise RootError(f"{path} is larger than {MAX_CFG_BYTES} bytes: not a cloud-init "
                        "config. Fix: check what this file is")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RootError(f"{path}: invalid UTF-8 at byte {err.start}. Fix: re-save {shown} "
                        "as UTF-8 (cloud-init would ignore it)") from None


def _read_modules(root: str, shown: str) -> Optional[List[Any]]:
    """``cloud_init_modules`` of the config file ``shown`` (an image path), if it sets one."""
    import yaml

    path = resolve(root, shown)
    text = _read_text(path, shown)
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise RootError(f"{path} is not valid YAML{at}. Fix: correct it (cloud-init would "
                        "ignore the whole file, with any module list in it)") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise RootError(f"{path} holds a YAML {type(data).__name__}, not a mapping. Fix: "
                        "correct it (cloud-init would ignore the whole file)")
    modules = data.get("cloud_init_modules")
    if modules is not None and not isinstance(modules, list):
        raise RootError(f"{path}: cloud_init_modules is a {type(modules).__name__}, not a "
                        "list. Fix: make it a list of module names")
    return modules


def _cfg_d_names(root: str) -> List[str]:
    """The *.cfg names cloud-init reads from cloud.cfg.d (regular files, links followed)."""
    directory = resolve(root, CLOUD_CFG_D)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise RootError(f"{directory} is not a directory. Fix: make {CLOUD_CFG_D} a "
                        "directory") from None
    return [n for n in names if n.endswith(".cfg")
            and os.path.isfile(resolve(root, f"{CLOUD_CFG_D}/{n}"))]


def effective_modules(root: str) -> Tuple[List[Any], str]:
    """The cloud_init_modules cloud-init would use without our file, and its source."""
    if not os.path.lexists(resolve(root, CLOUD_CFG)):
        raise RootError(f"{root.rstrip('/')}{CLOUD_CFG} not found: is cloud-init installed "
                        "in this image? Fix: give the image's root with --root")
    modules, source = _read_modules(root, CLOUD_CFG) or [], CLOUD_CFG
    ours = os.path.basename(OUR_FILE)
    for name in _cfg_d_names(root):
        if name == ours:
            continue  # ours is rewritten from the others, never read
        shown = f"{CLOUD_CFG_D}/{name}"
        found = _read_modules(root, shown)
        if found is not None:
            if name > ours:
                raise RootError(f"{shown} sorts after {ours} and sets cloud_init_modules; "
                                "our entry would be overridden. Fix: add "
                                "[host_routing, once-per-instance] to that list instead")
            modules, source = found, shown
    return modules, source


def _name(entry: Any) -> str:
    return str(entry[0] if isinstance(entry, list) and entry else entry)


def enable(root: str) -> str:
    """Write our file; say what was done."""
    import yaml

    root = check_root(root)
    modules, source = effective_modules(root)
    if any(_name(m) in NAMES for m in modules):
        return f"host_routing is already in cloud_init_modules (from {source}); nothing to do"
    text = (
        "# Written by `cloudinit-hostrouting enable-module`; undo with --undo.\n"
        f"# This list is {source}'s cloud_init_modules plus host_routing: a list here\n"
        "# replaces the distro's list, so re-run enable-module after upgrading cloud-init.\n"
        + yaml.safe_dump({"cloud_init_modules": [*modules, ENTRY]}, default_flow_style=False)
    )
    if write_atomic(_our_file(root), text):
        return f"enabled: wrote {OUR_FILE} (base list from {source})"
    return f"already enabled by {OUR_FILE}; nothing to do"


def _our_file(root: str) -> str:
    """Where our file is in the image; a symlink there is replaced, never followed."""
    target = resolve(root, OUR_FILE, follow_last=False)
    if os.path.isdir(target) and not os.path.islink(target):
        raise RootError(f"{target} is a directory. Fix: move it away")
    return target


def disable(root: str) -> str:
    """Remove our file, restoring the previous effective list."""
    target = _our_file(check_root(root))
    if os.path.lexists(target):
        os.unlink(target)
        return f"disabled: removed {OUR_FILE}"
    return "not enabled by enable-module; nothing to do"
