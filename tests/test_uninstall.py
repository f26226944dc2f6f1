"""uninstall removes exactly what render (or first boot) wrote, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from cli_support import cli


def files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())


def test_uninstall_removes_ours_and_keeps_foreign_files(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("host_routing:\n  route_overlap: {mode: STRICT, expected_cidrs: [10.0.5.0/24]}\n"
                   "  guard: {enabled: true}\n")
    root = tmp_path / "root"
    foreign = root / "etc/systemd/system/systemd-nspawn@.service.d/10-mine.conf"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Unit]\n")
    assert cli("render", "--config", str(cfg), "--root", str(root)).returncode == 0
    assert "etc/systemd/system/hostrouting-guard.service" in files(root)

    proc = cli("uninstall", "--root", str(root))
    assert proc.returncode == 0
    assert "removed /etc/systemd/system/hostrouting-guard.service" in proc.stdout
    assert files(root) == ["etc/systemd/system/systemd-nspawn@.service.d/10-mine.conf"]
    assert not (root / "etc/cloudinit-hostrouting").exists()  # our directory goes with us
    again = cli("uninstall", "--root", str(root))
    assert again.stdout.strip() == "nothing of ours to remove"
    assert os.path.exists(foreign)


def test_uninstall_keeps_an_unlisted_file_in_our_directory(tmp_path: Path) -> None:
    """Only manifest entries are removed; a site's note in our directory keeps it."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("host_routing:\n  route_overlap: {expected_cidrs: [10.0.5.0/24]}\n")
    root = tmp_path / "root"
    assert cli("render", "--config", str(cfg), "--root", str(root)).returncode == 0
    note = root / "etc/cloudinit-hostrouting/NOTES"
    note.write_text("site notes\n")
    proc = cli("uninstall", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert files(root) == ["etc/cloudinit-hostrouting/NOTES"]
