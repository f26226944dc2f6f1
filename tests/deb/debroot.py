"""Real Debian root file systems for the package tests: build, cache, enter, boot.

Why real roots and not mocks: what the package promises happens in dpkg (its
maintainer scripts and triggers, run by the real dpkg of the release), in
cloud-init (which reads the module list our postinst writes) and in systemd
(which runs our hardened units).  So every test unpacks a genuine Debian root
built by ``mmdebstrap`` and runs those programs inside it:

* ``in_root`` runs a shell script with ``chroot`` inside a private mount
  namespace (``unshare --mount``), so the /proc, /dev and /sys it mounts vanish
  with it; every call is bounded by a timeout;
* ``boot`` starts the root's own systemd as PID 1 with ``systemd-nspawn
  --private-network`` (a network namespace of its own: nothing the units do
  reaches the host's routes), under ``timeout``; the root's evidence unit
  powers it off when it has written what the test asserts on.

Base roots are cached as tars in ``$HR_DEB_CACHE`` (default
``/var/cache/cloudinit-hostrouting-deb``), keyed on suite, package list,
mirror and recipe, next to the suite's own ``cloud-init_*.deb`` (the trigger
test upgrades to a modified copy of it) and an unpacked copy that each test
overlays (``fresh_root``).  The mirror is the machine's
(``scripts/debian-mirror``).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("HR_DEB_CACHE", "/var/cache/cloudinit-hostrouting-deb"))
WORK_BASE = Path(os.environ.get("HR_DEB_WORKDIR", "/var/tmp/cloudinit-hostrouting-deb"))
# Bump when the recipe changes in a way the package list does not show.
RECIPE_VERSION = 1
PACKAGES = ["systemd", "systemd-sysv", "cloud-init", "python3-pyroute2", "python3-yaml",
            "iproute2"]
SUITES = {
    "bookworm": [],
    # forky is Debian testing: its Release file is short-lived, and the archive
    # served here can carry one past its Valid-Until, which apt then rejects.
    # The signature is still checked; only the expiry is ignored, for forky only.
    "forky": ['--aptopt=Acquire::Check-Valid-Until "false"'],
}
BUILD_TIMEOUT = 1200
STEP_TIMEOUT = 300
BOOT_TIMEOUT = int(os.environ.get("HR_DEB_BOOT_TIMEOUT", "300"))
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
             "DEBIAN_FRONTEND": "noninteractive"}


class RootError(RuntimeError):
    """A step in a root failed; the message carries its output."""


def run(argv: List[str], *, timeout: float, input: Optional[str] = None,
        check: bool = True, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ), check=False)
    if check and proc.returncode != 0:
        raise RootError(f"failed (rc={proc.returncode}): {' '.join(argv)}\n"
                        f"--- stdout ---\n{proc.stdout[-6000:]}\n"
                        f"--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def mirror() -> str:
    return run([sys.executable, str(REPO / "scripts" / "debian-mirror")],
               timeout=60).stdout.strip()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(suite: str, uri: str) -> str:
    blob = json.dumps({"suite": suite, "packages": sorted(PACKAGES), "mirror": uri,
                       "options": SUITES[suite], "recipe": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base(suite: str) -> Dict[str, Path]:
    """The cached base tar of ``suite`` and its cloud-init .deb, built on a cold cache."""
    uri = mirror()
    key = _key(suite, uri)
    tar = CACHE_DIR / f"{suite}-{key}.tar"
    debs = CACHE_DIR / f"{suite}-{key}-debs"
    with _lock(CACHE_DIR / f".{suite}.lock"):
        if not tar.exists() or not glob.glob(str(debs / "cloud-init_*.deb")):
            shutil.rmtree(debs, ignore_errors=True)
            debs.mkdir(parents=True)
            partial = tar.with_suffix(".partial")
            # The customize hook runs before mmdebstrap empties apt's cache.
            run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                 '--aptopt=Acquire::Retries "3"', *SUITES[suite],
                 "--include=" + ",".join(PACKAGES),
                 f'--customize-hook=cp "$1"/var/cache/apt/archives/cloud-init_*.deb {debs}/',
                 suite, str(partial), uri], timeout=BUILD_TIMEOUT)
            os.replace(partial, tar)
            for old in CACHE_DIR.glob(f"{suite}-*"):
                if old.name not in (tar.name, debs.name) and old.suffix != ".root":
                    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    (cloudinit_deb,) = glob.glob(str(debs / "cloud-init_*.deb"))
    return {"tar": tar, "cloudinit_deb": Path(cloudinit_deb)}


def _unpacked(suite: str) -> Path:
    """The base tar of ``suite`` unpacked once into the cache (a read-only lower layer)."""
    tar = base(suite)["tar"]
    tree = tar.with_suffix(".root")
    with _lock(CACHE_DIR / f".{suite}.lock"):
        if not (tree / ".complete").exists():
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir()
            run(["tar", "-C", str(tree), "-xf", str(tar)], timeout=STEP_TIMEOUT)
            (tree / ".complete").touch()
        for old in CACHE_DIR.glob(f"{suite}-*.root"):
            if old != tree:
                shutil.rmtree(old, ignore_errors=True)
    return tree


@contextlib.contextmanager
def fresh_root(suite: str) -> Iterator[Path]:
    """A new copy of ``suite``'s base root, discarded afterwards.

    An overlay over the unpacked base (unpacking the 300 MB tar takes 8 s of
    system time here; an overlay takes none): every write lands in a
    per-test upper directory, the cached base stays untouched.
    """
    lower = _unpacked(suite)
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=WORK_BASE))
    root = work / "root"
    for name in ("root", "upper", "work"):
        (work / name).mkdir()
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}", str(root)],
        timeout=60)
    try:
        yield root
    finally:
        run(["umount", "--lazy", str(root)], timeout=60, check=False)
        shutil.rmtree(work, ignore_errors=True)


def in_root(root: Path, script: str, *, check: bool = True,
            timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``script`` (``/bin/sh -e``) chrooted into ``root``, in a private mount namespace."""
    wrapper = (f"set -e; R='{root}'; mount -t proc proc \"$R/proc\"; "
               f"mount --rbind /dev \"$R/dev\"; mount -t sysfs sysfs \"$R/sys\"; "
               f"exec chroot \"$R\" /bin/sh -e -s")
    return run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", wrapper],
               input=script, timeout=timeout, check=check, env=CLEAN_ENV)


def put(root: Path, path: str, text: str, mode: int = 0o644) -> Path:
    """Write a file at absolute ``path`` inside ``root``."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    target.chmod(mode)
    return target


def copy_in(root: Path, source: Path, path: str) -> str:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return path


def boot(root: Path, evidence: Path) -> subprocess.CompletedProcess:
    """Boot ``root``'s systemd in a container until it powers itself off.

    ``--private-network`` gives the container its own network namespace with
    only ``lo``; the root's own units build the rest.  ``evidence`` is bound to
    /evidence.  ``--register=no --keep-unit``: no machined or D-Bus on the host.
    The container gets the unified (v2) cgroup hierarchy even on a hybrid
    host: systemd 258 and later (forky) refuse to boot on v1.
    """
    evidence.mkdir(parents=True, exist_ok=True)
    argv = ["timeout", "--kill-after=20", str(BOOT_TIMEOUT), "systemd-nspawn", "--quiet",
            "--keep-unit", "--register=no", "--private-network", "-D", str(root),
            f"--bind={evidence}:/evidence", "--boot"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(CLEAN_ENV, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))
    try:
        out, _ = proc.communicate(timeout=BOOT_TIMEOUT + 60)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")
