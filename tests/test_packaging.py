"""One version and one licence, the same wherever the package is described.

The version's source is ``__version__`` in cloudinit_hostrouting/__init__.py:
setup.py reads it (so the wheel and the .deb's Python metadata carry it) and
debian/changelog must name the same one.  The licence in the metadata, LICENSE
and debian/copyright must agree.  The oracles are the tools that consume these
files: ``importlib.metadata`` of the installed wheel, ``dpkg-parsechangelog``
and the licence text Debian ships.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import metadata, version
from pathlib import Path

import pytest

import cloudinit_hostrouting

REPO = Path(__file__).resolve().parent.parent


def changelog_version(directory: Path) -> str:
    if shutil.which("dpkg-parsechangelog") is None:
        pytest.fail("dpkg-parsechangelog not found: install dpkg-dev (scripts/setup-dev)",
                    pytrace=False)
    return subprocess.run(["dpkg-parsechangelog", "-S", "Version"], cwd=directory,
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def upstream_part(debian_version: str) -> str:
    """A Debian version without epoch and revision: 1:0.2.0-3 -> 0.2.0."""
    return debian_version.split(":", 1)[-1].rsplit("-", 1)[0]


def test_installed_metadata_carries_the_package_version() -> None:
    """setup.py took its version from __init__.py (tox installed the built wheel)."""
    assert version("cloudinit-hostrouting") == cloudinit_hostrouting.__version__


def test_debian_changelog_names_the_same_version() -> None:
    assert upstream_part(changelog_version(REPO)) == cloudinit_hostrouting.__version__


def test_a_changelog_with_another_version_is_told_apart(tmp_path: Path) -> None:
    """Negative control: the comparison above reads the changelog, not a constant."""
    (tmp_path / "debian").mkdir()
    text = (REPO / "debian/changelog").read_text(encoding="utf-8")
    first = text.splitlines()[0]
    bumped = first.replace(f"({cloudinit_hostrouting.__version__})", "(99.0.0-2)")
    assert bumped != first
    (tmp_path / "debian/changelog").write_text(text.replace(first, bumped, 1), encoding="utf-8")
    assert upstream_part(changelog_version(tmp_path)) == "99.0.0"


def test_license_file_metadata_and_debian_copyright_agree() -> None:
    """Apache-2.0 everywhere: the wheel's License, LICENSE's text, debian/copyright."""
    assert metadata("cloudinit-hostrouting")["License"] == "Apache-2.0"
    licence = (REPO / "LICENSE").read_text(encoding="utf-8")
    shipped = Path("/usr/share/common-licenses/Apache-2.0")
    assert shipped.is_file(), "base-files' licence texts are missing"
    assert licence == shipped.read_text(encoding="utf-8")
    copyright_text = (REPO / "debian/copyright").read_text(encoding="utf-8")
    assert "License: Apache-2.0" in copyright_text
    assert "/usr/share/common-licenses/Apache-2.0" in copyright_text
