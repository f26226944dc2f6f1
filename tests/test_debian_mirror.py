"""scripts/debian-mirror: the archive URI comes from the machine's apt, never from the repo.

Every case writes real apt source files (deb822 ``.sources`` and one-line
``.list``) into a temporary apt directory, runs the script on it, and compares
with what apt itself makes of the same files (``apt-get indextargets``, which
reads sources offline): apt is the oracle, not the script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "debian-mirror"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def mirror(apt_dir: Optional[Path], *args: str,
           env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "HR_DEBIAN_MIRROR"}
    argv = [sys.executable, str(SCRIPT), *args]
    if apt_dir is not None:
        argv += ["--apt-dir", str(apt_dir)]
    return subprocess.run(argv, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=30, check=False)


def apt_targets(apt_dir: Path) -> List[tuple]:
    """(repo URI, suite) of every binary index apt would fetch, in apt's order."""
    lists = apt_dir.parent / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    sources_list = apt_dir / "sources.list"
    proc = subprocess.run(
        ["apt-get", "-o", f"Dir::Etc::SourceList={sources_list}",
         "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources.list.d'}",
         "-o", f"Dir::State::Lists={lists}", "indextargets", "--no-release-info",
         "--format", "$(TARGET_OF) $(REPO_URI) $(RELEASE)"],
        capture_output=True, text=True, timeout=60, check=True)
    out = []
    for line in proc.stdout.splitlines():
        kind, uri, suite = line.split()
        if kind == "deb" and (uri, suite) not in out:
            out.append((uri.rstrip("/"), suite))
    return out


def apt_release_uri(apt_dir: Path, suite: Optional[str] = None) -> str:
    """apt's answer: the URI listing ``suite``, else the first serving a release suite."""
    targets = apt_targets(apt_dir)
    for uri, listed in targets:
        if listed == suite:
            return uri
    return next(uri for uri, listed in targets if "-" not in listed)


def apt_dir(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


DEB822 = f"""\
Types: deb
# a comment inside the stanza, as Debian's own debian.sources has
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no
Signed-By: {KEYRING}

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: {KEYRING}

Types: deb-src deb
# the archive, behind an internal proxy; two URIs on continuation lines
URIs:
 http://mirror.internal.example:3142/debian
 http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: {KEYRING}
"""

ONE_LINE = """\
# the machine's old-style list
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
https://onel.example/debian bookworm main  # trailing comment
deb http://onel.example/debian-security bookworm-security main
"""


def test_machine_apt_configuration_agrees_with_apt() -> None:
    """On this very machine (CI: a fresh Debian 12), the script says what apt uses."""
    proc = mirror(None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().rstrip("/") == apt_release_uri(Path("/etc/apt"))


def test_deb822_with_comments_disabled_stanzas_and_continuations(tmp_path: Path) -> None:
    """Enabled: no is skipped, security is not the archive, the first URI wins."""
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822,
                              "sources.list.d/other.sources.disabled-by-farm":
                                  DEB822.replace("Enabled: no", "Enabled: yes")})
    want = apt_release_uri(root)
    assert want == "http://mirror.internal.example:3142/debian"  # the oracle read it so too
    for suite in ((), ("trixie",), ("forky",), ("bookworm",)):
        proc = mirror(root, *suite)
        assert (proc.returncode, proc.stdout.strip()) == (0, want), proc.stderr
    security = mirror(root, "bookworm-security")
    assert security.stdout.strip() == apt_release_uri(root, "bookworm-security")


def test_one_line_lists_with_options_and_deb_src(tmp_path: Path) -> None:
    """[options] and comments are skipped; deb-src is not a binary archive."""
    root = apt_dir(tmp_path, {"sources.list": ONE_LINE})
    want = apt_release_uri(root)
    assert want == "https://onel.example/debian"
    proc = mirror(root, "forky")
    assert (proc.returncode, proc.stdout.strip()) == (0, want), proc.stderr


def test_a_listed_suite_uses_its_own_uri(tmp_path: Path) -> None:
    """A machine that lists trixie somewhere else gets that URI for trixie only."""
    root = apt_dir(tmp_path, {
        "sources.list": ONE_LINE,
        "sources.list.d/trixie.list": "deb http://trixie.example/debian trixie main\n"})
    assert mirror(root, "trixie").stdout.strip() == apt_release_uri(root, "trixie")
    assert mirror(root, "trixie").stdout.strip() == "http://trixie.example/debian"
    assert mirror(root, "forky").stdout.strip() == "https://onel.example/debian"


def test_environment_override_wins(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list": ONE_LINE})
    proc = mirror(root, "forky", env={"HR_DEBIAN_MIRROR": "http://override.example/debian"})
    assert proc.stdout.strip() == "http://override.example/debian"


@pytest.mark.parametrize("files", [
    {},
    {"sources.list.d/only-security.sources": DEB822.split("\n\n")[1] + "\n"},
    {"sources.list.d/off.sources": DEB822.split("\n\n")[0] + "\n"},
])
def test_no_release_source_is_an_error_naming_the_override(tmp_path: Path,
                                                           files: Dict[str, str]) -> None:
    """Nothing usable: exit 1 and say how to set the mirror; never a guessed host."""
    proc = mirror(apt_dir(tmp_path, files))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "HR_DEBIAN_MIRROR" in proc.stderr


def test_a_malformed_line_is_named(tmp_path: Path) -> None:
    proc = mirror(apt_dir(tmp_path, {"sources.list": "deb http://only-a-uri.example\n"}))
    assert proc.returncode == 1
    assert "sources.list:1" in proc.stderr and "Traceback" not in proc.stderr


def test_repository_names_no_archive_host() -> None:
    """The point of the script: no registry or archive host is written in the repo."""
    proc = subprocess.run(
        ["git", "grep", "-n", "-i", "-E",
         "deb" + r"\.debian\.org|pypi" + r"\.org|files" + r"\.pythonhosted"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode not in (0, 1):
        pytest.fail(f"git grep failed: {proc.stderr}")
    assert proc.stdout == ""
