"""Fixtures of the Debian package suite (``tox -e deb``): the .deb and real roots.

The .deb is built once per session from the working tree by ``scripts/build-deb``
(``HR_DEB=/path/to.deb`` uses a prebuilt one).  Nothing here is skipped: a
missing tool fails the run with the reason, so CI cannot go green without
having run the package for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator

import debroot
import pytest

TOOLS = ("mmdebstrap", "systemd-nspawn", "unshare", "chroot", "dpkg-deb", "lintian")


@pytest.fixture(scope="session")
def host_ready() -> None:
    problems = [f"{tool} not found" for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        problems.append("must run as root (mmdebstrap, chroot, systemd-nspawn)")
    if problems:
        pytest.fail("package tests cannot run: " + "; ".join(problems)
                    + " (run scripts/setup-dev as root)", pytrace=False)


@pytest.fixture(scope="session")
def package(host_ready: None) -> Iterator[Dict[str, Path]]:
    """The .deb under test and the .changes that lists it (None for a prebuilt .deb)."""
    prebuilt = os.environ.get("HR_DEB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            pytest.fail(f"HR_DEB={prebuilt} does not exist", pytrace=False)
        yield {"deb": Path(prebuilt), "changes": Path()}
        return
    out = Path(tempfile.mkdtemp(prefix="hr-deb-"))
    try:
        proc = subprocess.run([str(debroot.REPO / "scripts" / "build-deb"), str(out)],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.fail(f"scripts/build-deb failed:\n{proc.stdout}\n{proc.stderr}",
                        pytrace=False)
        deb = Path(proc.stdout.strip().splitlines()[-1])
        (changes,) = out.glob("*.changes")
        yield {"deb": deb, "changes": changes}
    finally:
        shutil.rmtree(out, ignore_errors=True)
