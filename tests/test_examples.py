"""Every file users copy from ``config-examples/`` works as documented.

The parametrization is the directory listing itself, so a new example is
covered the moment it is added.  Each top-level file must be ``#cloud-config``
that both cloud-init versions (plus our schema) accept, and its
``host_routing`` must render into units that ``systemd-analyze verify``
accepts.  ``config-examples/system/`` holds system config (cloud.cfg.d), which
is not user-data, and is checked against what ``enable-module`` writes instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

import pytest
import yaml
from cli_support import CLOUDINIT_VERSIONS, EXAMPLES_DIR, cli, cloudinit_env, verify_units

from cloudinit_hostrouting.config import parse

SYSTEM_DIR = os.path.join(EXAMPLES_DIR, "system")
REQUIRED = {"nd-h100-strict.yaml", "warn-only.yaml", "auto-gateway.yaml",
            "gate-kubelet.yaml", "azure-suggest.yaml"}


def user_data_examples() -> List[str]:
    """Every regular file directly in config-examples/ (subdirectories are not user-data)."""
    return sorted(name for name in os.listdir(EXAMPLES_DIR)
                  if os.path.isfile(os.path.join(EXAMPLES_DIR, name)))


EXAMPLES = user_data_examples()


def load(name: str) -> dict:
    with open(os.path.join(EXAMPLES_DIR, name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_the_documented_examples_exist() -> None:
    """The README and issue 2 point users at these names."""
    assert set(EXAMPLES) >= REQUIRED


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_commented_cloud_config(name: str) -> None:
    """Users copy these: each starts with #cloud-config and explains itself in comments."""
    with open(os.path.join(EXAMPLES_DIR, name), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "#cloud-config"
    assert sum(1 for line in lines[1:] if line.lstrip().startswith("#")) >= 3
    assert "host_routing" in load(name)


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates(name: str, version: str) -> None:
    """``validate`` with cloud-init's schema plus ours: exit 0, 'valid', no warnings."""
    path = os.path.join(EXAMPLES_DIR, name)
    proc = cli("validate", path, env=cloudinit_env(version))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{path}: valid"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_renders_and_passes_systemd_verify(tmp_path: Path, name: str) -> None:
    """What first boot would write for the example is accepted by systemd."""
    root = tmp_path / "root"
    proc = cli("render", "--config", os.path.join(EXAMPLES_DIR, name), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    gates = list(parse(load(name)["host_routing"]).gate_units)
    for unit in gates:
        assert (root / "etc/systemd/system" / f"{unit}.d" / "50-hostrouting.conf").is_file()
    rc, lines = verify_units(str(root), gates, str(tmp_path / "stubs"))
    assert (rc, lines) == (0, [])


def test_examples_say_what_their_names_promise() -> None:
    """The names are documentation too: check each example has the property it is named for."""
    strict = parse(load("nd-h100-strict.yaml")["host_routing"])
    assert strict.strict
    assert {"10.0.5.0/24", "10.96.0.0/12"} <= {str(r.destination) for r in strict.routes}
    assert {str(c) for c in strict.expected_cidrs} >= {"10.0.5.0/24", "10.96.0.0/12"}

    warn = parse(load("warn-only.yaml")["host_routing"])
    assert not warn.strict and warn.routes == () and warn.expected_cidrs

    auto = parse(load("auto-gateway.yaml")["host_routing"])
    assert auto.routes and all(r.dev is None and r.gateway is None for r in auto.routes)

    gate = parse(load("gate-kubelet.yaml")["host_routing"])
    assert gate.gate_units == ("systemd-nspawn@.service", "kubelet.service")

    assert parse(load("azure-suggest.yaml")["host_routing"]).azure_suggest is True


def test_system_snippet_is_what_enable_module_writes_on_debian_12(tmp_path: Path) -> None:
    """The cloud.cfg.d example must not drift from the command that actually writes it."""
    snippets = [n for n in os.listdir(SYSTEM_DIR) if n.endswith(".cfg")]
    assert snippets == ["99_zz-cloudinit-hostrouting.cfg"]
    root = tmp_path / "image"
    shutil.copytree("/etc/cloud", root / "etc/cloud", symlinks=True)
    proc = cli("enable-module", "--root", str(root), env=cloudinit_env("22.4"))
    assert proc.returncode == 0, proc.stderr
    written = (root / "etc/cloud/cloud.cfg.d" / snippets[0]).read_text(encoding="utf-8")
    with open(os.path.join(SYSTEM_DIR, snippets[0]), encoding="utf-8") as handle:
        assert handle.read() == written
