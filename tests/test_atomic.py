"""The file primitives: atomic writes, what may be removed, and the lean boot path.

Atomic writes are tried against real file states: an unchanged file, a symlink
and a FIFO where the file goes, a file system that is really full (a 4 KiB
tmpfs in a private mount namespace), and writers racing on one target.  The
ownership rule is checked against ``render.plan``, the code that makes the
paths, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import mountns
import pytest
from cli_support import REPO

from cloudinit_hostrouting.atomic import write_atomic
from cloudinit_hostrouting.config import parse
from cloudinit_hostrouting.constants import MANIFEST_PATH
from cloudinit_hostrouting.effects import owned
from cloudinit_hostrouting.render import plan

CONFIGS = [
    {"route_overlap": {"expected_cidrs": ["10.0.5.0/24"]}},
    {"route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]},
     "guard": {"enabled": True, "auto_mitigate": True},
     "gate_units": ["systemd-nspawn@.service", "kubelet.service", "containerd.service",
                    "systemd-nspawn@kube1.service", "my_app-1.service", "custom-stage.target"]},
    {"gate_units": []},
]


@pytest.mark.parametrize("raw", CONFIGS)
def test_every_path_render_writes_is_owned(raw: dict) -> None:
    paths = [e.path for e in plan(parse(raw), "/usr/bin/python3")]
    assert paths and all(owned(p) for p in [*paths, MANIFEST_PATH]), \
        [p for p in paths if not owned(p)]


@pytest.mark.parametrize("path", [
    "/etc/passwd", "/etc/shadow", "/", "", "etc/cloudinit-hostrouting/x",
    "/etc/cloudinit-hostrouting", "/etc/cloudinit-hostrouting/../passwd",
    "/etc/cloudinit-hostrouting//x", "/etc/cloudinit-hostrouting/./x",
    "/etc/cloudinit-hostroutingX/manifest.json",
    "/etc/systemd/system/sshd.service", "/etc/systemd/system/hostrouting-other.service",
    "/etc/systemd/system/ssh.service.d/10-site.conf",
    "/etc/systemd/system/ssh.service.d/50-hostrouting.conf/x",
    "/etc/systemd/system/../system/hostrouting-guard.service",
    "/etc/systemd/system/a/b.service.d/50-hostrouting.conf",
    "/etc/systemd/system/multi-user.target.wants/sshd.service",
    "/etc/systemd/system/graphical.target.wants/hostrouting-guard.service",
    "/lib/systemd/system/hostrouting-guard.service",
    "/etc/iproute2/rt_protos.d/other.conf", "/etc/iproute2/rt_protos",
])
def test_foreign_paths_are_not_owned(path: str) -> None:
    assert not owned(path)


def test_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert write_atomic(str(target), "one\n") is True
    before = os.stat(target)
    assert write_atomic(str(target), "one\n") is False
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert write_atomic(str(target), "one\n", mode=0o600) is True  # mode is part of "same"
    assert (os.stat(target).st_mode & 0o777, target.read_text()) == (0o600, "one\n")
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_symlink_at_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "f"
    target.symlink_to(victim)
    assert write_atomic(str(target), "precious\n") is True  # same text behind a link: not ours
    assert not target.is_symlink() and target.read_text() == "precious\n"
    assert victim.read_text() == "precious\n"


def test_fifo_at_target_neither_blocks_nor_is_written(tmp_path: Path) -> None:
    """A FIFO opened for comparison would block forever without O_NONBLOCK: bounded here."""
    target = tmp_path / "f"
    os.mkfifo(target)
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "from cloudinit_hostrouting.atomic import write_atomic\n"
            f"print(write_atomic({str(target)!r}, 'x'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "True"), proc.stderr
    assert target.is_file() and target.read_text() == "x"


def test_full_file_system_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """ENOSPC mid-write (a real 4 KiB tmpfs): the old content stays, no temp file is left."""
    mount = tmp_path / "full"
    mount.mkdir()
    code = f"""
import json, os, sys
sys.path.insert(0, {REPO!r})
from cloudinit_hostrouting.atomic import write_atomic
target = {str(mount / "f")!r}
write_atomic(target, "old\\n")
try:
    write_atomic(target, "x" * 65536)
    error = None
except OSError as err:
    error = err.errno
print(json.dumps({{"error": error, "content": open(target).read(),
                  "files": sorted(os.listdir({str(mount)!r}))}}))
"""
    proc = mountns.run([sys.executable, "-c", code], full=[str(mount)])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"error": 28, "content": "old\n", "files": ["f"]}  # 28: ENOSPC


def test_racing_writers_each_land_whole(tmp_path: Path) -> None:
    """Unique temporary names: threads writing one target never collide or tear a file."""
    target = str(tmp_path / "f")
    texts = [f"{i}\n" * (1000 + i) for i in range(8)]
    errors: List[BaseException] = []

    def writer(text: str) -> None:
        try:
            for _ in range(50):
                write_atomic(target, text)
        except BaseException as err:  # collected: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert Path(target).read_text() in texts
    assert os.listdir(tmp_path) == ["f"]


def test_check_path_imports_no_effects_machinery() -> None:
    """What the check unit imports (cli, overlap, signals) stays off subprocess, tempfile,
    logging and render: the atomic write lives in its own os-only module."""
    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "import cloudinit_hostrouting.cli, cloudinit_hostrouting.overlap\n"
            "import cloudinit_hostrouting.signals\n"
            "print(sorted(m for m in ('subprocess', 'tempfile', 'logging', 'yaml',\n"
            "    'cloudinit_hostrouting.effects', 'cloudinit_hostrouting.render')\n"
            "    if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
