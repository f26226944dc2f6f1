"""The module's first-boot path, in-process inside the units' interpreter (``--worker``).

* ``render``: ``config.parse`` + ``render.plan`` + ``effects.apply_plan(root, ...)`` into a
  fresh temporary root per repetition (what ``handle()`` does minus systemctl);
* ``handle``: ``cc_host_routing.handle()`` itself inside a private mount namespace
  (``unshare -m``) whose ``/etc`` is an overlay on a tmpfs, with a stand-in ``systemctl`` on
  PATH; the real ``/etc`` is never written (the worker refuses to run otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .package import UNIT_PATH_ENV
from .workload import user_data


def render(n: int, reps: int) -> Dict[str, Any]:
    """parse + plan + apply_plan into a fresh temporary root per repetition."""
    from cloudinit_hostrouting.config import parse
    from cloudinit_hostrouting.effects import apply_plan
    from cloudinit_hostrouting.render import plan

    raw = user_data(n, n, "STRICT", gateway=False)
    full, write_only = [], []
    entries: List[Any] = []
    base = Path(tempfile.mkdtemp(prefix="hr-bench-render-"))
    try:
        for i in range(reps):
            root = base / str(i)
            root.mkdir()
            t0 = time.perf_counter()
            entries = plan(parse(raw), "/usr/bin/python3")
            t1 = time.perf_counter()
            apply_plan(str(root), entries)
            t2 = time.perf_counter()
            full.append(t2 - t0)
            write_only.append(t2 - t1)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fstype = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()],
                            capture_output=True, text=True, check=False,
                            timeout=10).stdout.strip()
    return {"full_s": full, "apply_plan_s": write_only, "files": len(entries),
            "tmpdir": tempfile.gettempdir(), "fstype": fstype}


def _mount_point_fstype(path: str) -> Optional[str]:
    """fstype of the topmost mount at ``path`` in this mount namespace."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, right = line.split(" - ", 1)
            if left.split()[4] == path:
                found = right.split()[0]
    return found


def handle(n: int, reps: int, out: str, scratch: str, parent_mnt_ns: str) -> int:
    """``cc_host_routing.handle()`` for real, into an overlay ``/etc`` in a private mount ns.

    Refuses (exit 3) unless this mount namespace differs from the harness's and ``/etc``
    is an overlay whose upper layer is a tmpfs mounted here.
    """
    if os.readlink("/proc/self/ns/mnt") == parent_mnt_ns:
        print("refusing: not in a private mount namespace", file=sys.stderr)
        return 3
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", scratch], check=True,
                   timeout=30)
    for sub in ("upper", "work", "bin"):
        os.makedirs(f"{scratch}/{sub}")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={scratch}/upper,workdir={scratch}/work", "/etc"],
                   check=True, timeout=30)
    if _mount_point_fstype("/etc") != "overlay":
        print("refusing: /etc is not an overlay in this namespace", file=sys.stderr)
        return 3
    stub = Path(scratch, "bin", "systemctl")
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {scratch}/systemctl.log\n", encoding="utf-8")
    stub.chmod(0o755)
    os.environ["PATH"] = f"{scratch}/bin:{os.environ.get('PATH', UNIT_PATH_ENV)}"

    import logging

    logging.basicConfig(level=logging.ERROR)
    from cc_host_routing import handle as cc_handle  # type: ignore[import-not-found,unused-ignore]
    from cloudinit_hostrouting.config import parse
    from cloudinit_hostrouting.constants import MANIFEST_PATH
    from cloudinit_hostrouting.render import plan

    raw = user_data(n, n, "STRICT", gateway=False)
    paths = [e.path for e in plan(parse(raw))] + [MANIFEST_PATH]
    times = []
    for _ in range(reps):
        for path in paths:  # fresh: as on a first boot (removes only from the tmpfs upper)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        t0 = time.perf_counter()
        cc_handle("host_routing", {"host_routing": raw}, None, logging.getLogger("bench"), [])
        times.append(time.perf_counter() - t0)
    calls = Path(scratch, "systemctl.log").read_text(encoding="utf-8").splitlines()
    Path(out).write_text(json.dumps({"handle_s": times, "systemctl_calls": len(calls),
                                     "first_calls": calls[:2]}), encoding="utf-8")
    return 0


def main(kind: str, rest: List[str]) -> int:
    if kind == "render":
        Path(rest[2]).write_text(json.dumps(render(int(rest[0]), int(rest[1]))),
                                 encoding="utf-8")
        return 0
    return handle(int(rest[0]), int(rest[1]), rest[2], rest[3], rest[4])
