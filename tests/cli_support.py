"""Helpers shared by the CLI-level tests: run the real command, pick a cloud-init, verify units.

Nothing here mocks anything.  The command runs as a subprocess
(``python -m cloudinit_hostrouting``, the exact form the units use), cloud-init
25.1 and 26.2 are the real Debian 13 and forky packages unpacked by
``scripts/setup-dev``, and unit
files are checked by the host's real ``systemd-analyze verify``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, Iterable, List, Sequence, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES_DIR = os.path.join(REPO, "config-examples")
CI25_DIR = os.environ.get("CLOUDINIT25_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-25.1")
CI26_DIR = os.environ.get("CLOUDINIT26_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-26.2")
# The unpacked versions: where each lives (its etc/cloud is that release's distro config).
UNPACKED_DIRS = {"25.1": CI25_DIR, "26.2": CI26_DIR}
# Every supported cloud-init: 22.4 is Debian 12's system package, the others are unpacked.
CLOUDINIT_VERSIONS = ("22.4", *UNPACKED_DIRS)
# The /etc/cloud each version's own Debian release ships.
DISTRO_CLOUD_DIRS = {"22.4": "/etc/cloud",
                     **{v: os.path.join(d, "etc/cloud") for v, d in UNPACKED_DIRS.items()}}

UNIT_DIR = "etc/systemd/system"
OUR_UNITS = ("hostrouting-static-routes.service", "hostrouting-route-overlap.service")
SYSTEM_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


def cloudinit_env(version: str) -> Dict[str, str]:
    """Environment in which ``import cloudinit`` gives ``version``.

    An unpacked version missing is a broken dev setup, not a reason to skip:
    the tests that prove every version would silently prove fewer.
    """
    env = dict(os.environ)
    paths = [REPO]
    if version in UNPACKED_DIRS:
        site = os.path.join(UNPACKED_DIRS[version], "usr/lib/python3/dist-packages")
        if not os.path.isfile(os.path.join(site, "cloudinit", "version.py")):
            pytest.fail(f"cloud-init {version} is not unpacked at {UNPACKED_DIRS[version]}; "
                        "run scripts/setup-dev (as root) first", pytrace=False)
        paths.insert(0, site)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def loaded_cloudinit_version(env: Dict[str, str]) -> str:
    """The cloud-init version a subprocess with ``env`` really imports."""
    proc = subprocess.run(
        [sys.executable, "-c", "from cloudinit import version; print(version.version_string())"],
        env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def cli(*args: str, env: Dict[str, str] | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m cloudinit_hostrouting ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "cloudinit_hostrouting", *args],
        env=env if env is not None else cloudinit_env("22.4"), cwd=cwd or REPO,
        capture_output=True, text=True, check=False)


def tree(root: str) -> Dict[str, Tuple[str, str]]:
    """Every file and symlink under ``root`` as ``{relpath: (kind, content or link target)}``."""
    out: Dict[str, Tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            else:
                with open(path, encoding="utf-8") as handle:
                    out[rel] = ("file", handle.read())
    return out


def _unit_exists_on_host(name: str) -> bool:
    return any(os.path.exists(os.path.join(d, name)) for d in SYSTEM_UNIT_DIRS)


def verify_units(root: str, gate_units: Sequence[str], stub_dir: str,
                 units: Sequence[str] = OUR_UNITS) -> Tuple[int, List[str]]:
    """Run ``systemd-analyze verify`` on our units and each gated unit with our drop-in.

    ``SYSTEMD_UNIT_PATH=<root>/etc/systemd/system:<stubs>:`` (the trailing colon
    keeps the default search path) makes systemd load the rendered units *and*
    the rendered drop-ins, exactly as it would from /etc/systemd/system.  A
    gated unit the host does not have (kubelet.service) gets a trivial stub, so
    its drop-in is loaded and checked too; a template is verified through an
    instance, which is what systemd actually starts.

    Returns the exit code and every output line that mentions our files or
    units: systemd reports unknown directives as warnings with exit code 0, so
    the lines matter as much as the code.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: install systemd (scripts/setup-dev)",
                    pytrace=False)
    os.makedirs(stub_dir, exist_ok=True)
    names = list(units)
    for unit in gate_units:
        if not _unit_exists_on_host(unit):
            with open(os.path.join(stub_dir, unit), "w", encoding="utf-8") as handle:
                handle.write("[Unit]\nDescription=stub for verify\n\n"
                             "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        prefix, at, suffix = unit.partition("@")
        names.append(f"{prefix}@hrverify{suffix}" if at and suffix.startswith(".") else unit)
    unit_dir = os.path.join(root, UNIT_DIR)
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:{stub_dir}:", SYSTEMD_PAGER="cat")
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    ours = [line for line in proc.stdout.splitlines()
            if root in line or stub_dir in line or _mentions(line, names)]
    return proc.returncode, ours


def _mentions(line: str, names: Iterable[str]) -> bool:
    return any(name in line for name in names)
