"""enable-module: put ``host_routing`` into the image's ``cloud_init_modules``.

A ``cloud_init_modules`` list in /etc/cloud/cloud.cfg.d/*.cfg replaces the
distro's list rather than extending it (``merge_how`` does not apply to system
config).  So we compute the effective list exactly as cloud-init would, append
our entry, and write that whole list into one file of our own that sorts last.
Running it again yields the same file; ``--undo`` deletes the file, which
restores whatever list was effective before.
"""

from __future__ import annotations

import glob
import os
from typing import Any, List, Optional, Tuple

from .effects import under, write_atomic

OUR_FILE = "/etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg"
# The list form passes the module-name enum of both cloud-init 22.4 and 25.1,
# where a bare 'host_routing' string does not.
ENTRY = ["host_routing", "once-per-instance"]
NAMES = {"host_routing", "host-routing", "cc_host_routing"}


def _read_modules(path: str) -> Optional[List[Any]]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    modules = data.get("cloud_init_modules")
    if modules is not None and not isinstance(modules, list):
        raise ValueError(f"{path}: cloud_init_modules is not a list")
    return modules


def effective_modules(root: str) -> Tuple[List[Any], str]:
    """The cloud_init_modules cloud-init would use without our file, and its source."""
    base = under(root, "/etc/cloud/cloud.cfg")
    if not os.path.exists(base):
        raise ValueError(f"{base} not found: is cloud-init installed in this image?")
    modules, source = _read_modules(base) or [], "/etc/cloud/cloud.cfg"
    ours = os.path.basename(OUR_FILE)
    for path in sorted(glob.glob(under(root, "/etc/cloud/cloud.cfg.d/*.cfg"))):
        found = _read_modules(path)
        if found is not None:
            if os.path.basename(path) > ours:
                raise ValueError(f"{path} sorts after {ours} and sets cloud_init_modules; "
                                 "our entry would be overridden")
            if os.path.basename(path) != ours:
                modules, source = found, path[len(root.rstrip('/')):]
    return modules, source


def _name(entry: Any) -> str:
    return str(entry[0] if isinstance(entry, list) and entry else entry)


def enable(root: str) -> str:
    """Write our file; say what was done."""
    import yaml

    modules, source = effective_modules(root)
    if any(_name(m) in NAMES for m in modules):
        return f"host_routing is already in cloud_init_modules (from {source}); nothing to do"
    text = (
        "# Written by `cloudinit-hostrouting enable-module`; undo with --undo.\n"
        f"# This list is {source}'s cloud_init_modules plus host_routing: a list here\n"
        "# replaces the distro's list, so re-run enable-module after upgrading cloud-init.\n"
        + yaml.safe_dump({"cloud_init_modules": [*modules, ENTRY]}, default_flow_style=False)
    )
    if write_atomic(under(root, OUR_FILE), text):
        return f"enabled: wrote {OUR_FILE} (base list from {source})"
    return f"already enabled by {OUR_FILE}; nothing to do"


def disable(root: str) -> str:
    """Remove our file, restoring the previous effective list."""
    target = under(root, OUR_FILE)
    if os.path.exists(target):
        os.unlink(target)
        return f"disabled: removed {OUR_FILE}"
    return "not enabled by enable-module; nothing to do"
