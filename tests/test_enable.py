"""``enable-module`` against copies of each cloud-init version's real distro config.

The effective ``cloud_init_modules`` is computed by cloud-init itself
(``util.read_conf_with_confd``, the function its stages use to read system
config), in a subprocess importing 22.4, 25.1 or 26.2, and the result is checked
with that version's own schema.  So these tests prove what cloud-init will
run, not what enable.py believes it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from cli_support import CLOUDINIT_VERSIONS, DISTRO_CLOUD_DIRS, cli, cloudinit_env

OUR_FILE = "etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg"
ENTRY = ["host_routing", "once-per-instance"]

# Runs inside the chosen cloud-init: print the effective list and what the schema says.
_PROBE = """
import json, sys
from cloudinit import util, version
from cloudinit.config.schema import (SchemaValidationError, get_schema,
                                     validate_cloudconfig_schema)
merged = util.read_conf_with_confd(sys.argv[1] + "/etc/cloud/cloud.cfg")
modules = merged.get("cloud_init_modules")
errors = []
try:
    validate_cloudconfig_schema(config={"cloud_init_modules": modules},
                                schema=get_schema(), strict=True)
except SchemaValidationError as err:
    errors = [f"{path}: {msg}" for path, msg in err.schema_errors]
print(json.dumps({"version": version.version_string(), "modules": modules,
                  "errors": errors}))
"""


def cloudinit_view(root: Path, version: str) -> Dict[str, Any]:
    """What ``version`` of cloud-init makes of the system config under ``root``."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(root)], env=cloudinit_env(version),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout.strip().splitlines()[-1])
    assert view["version"].startswith(version), view["version"]
    return view


@pytest.fixture(params=CLOUDINIT_VERSIONS)
def image(request: Any, tmp_path: Path) -> Dict[str, Any]:
    """A temp root holding a copy of the version's real /etc/cloud, and that version."""
    version = request.param
    env = cloudinit_env(version)  # fails (never skips) when a version is not unpacked
    source = DISTRO_CLOUD_DIRS[version]
    assert os.path.isfile(os.path.join(source, "cloud.cfg")), f"{source}/cloud.cfg missing"
    root = tmp_path / "image"
    shutil.copytree(source, root / "etc/cloud", symlinks=True)
    return {"root": root, "version": version, "env": env}


def enable(image: Dict[str, Any], *extra: str) -> subprocess.CompletedProcess:
    return cli("enable-module", "--root", str(image["root"]), *extra, env=image["env"])


def cloud_dir_state(root: Path) -> Dict[str, str]:
    """Every file under etc/cloud with its content: to prove what did and did not change."""
    out = {}
    for path in sorted((root / "etc/cloud").rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
    return out


def write_cfg(root: Path, name: str, data: Dict[str, Any]) -> Path:
    path = root / "etc/cloud/cloud.cfg.d" / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_appends_entry_to_the_distro_list(image: Dict[str, Any]) -> None:
    """cloud-init's effective list becomes the distro's list, unchanged, plus our entry last."""
    root = image["root"]
    before = cloudinit_view(root, image["version"])
    assert before["modules"], "distro config has no cloud_init_modules?"
    proc = enable(image)
    assert proc.returncode == 0, proc.stderr
    assert "/etc/cloud/cloud.cfg" in proc.stdout
    after = cloudinit_view(root, image["version"])
    assert after["modules"] == before["modules"] + [ENTRY]
    assert after["errors"] == []


def test_second_run_changes_nothing(image: Dict[str, Any]) -> None:
    """Image bake scripts re-run: the second run leaves every byte, inode and mtime alone."""
    assert enable(image).returncode == 0
    ours = image["root"] / OUR_FILE
    stat = os.stat(ours)
    state = cloud_dir_state(image["root"])
    proc = enable(image)
    assert proc.returncode == 0
    assert "nothing to do" in proc.stdout
    assert cloud_dir_state(image["root"]) == state
    assert (os.stat(ours).st_ino, os.stat(ours).st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    modules = cloudinit_view(image["root"], image["version"])["modules"]
    assert modules.count(ENTRY) == 1


def test_cfg_d_list_is_honoured_as_the_base(image: Dict[str, Any]) -> None:
    """A cloud.cfg.d list replaces the distro's, so our list must start from it, not cloud.cfg."""
    custom: List[Any] = ["seed_random", "bootcmd", "write-files", ["growpart", "always"]]
    write_cfg(image["root"], "50_custom.cfg", {"cloud_init_modules": custom})
    assert cloudinit_view(image["root"], image["version"])["modules"] == custom
    proc = enable(image)
    assert proc.returncode == 0, proc.stderr
    assert "/etc/cloud/cloud.cfg.d/50_custom.cfg" in proc.stdout
    after = cloudinit_view(image["root"], image["version"])
    assert after["modules"] == [*custom, ENTRY]
    assert after["errors"] == []


def test_undo_removes_only_our_file(image: Dict[str, Any]) -> None:
    """--undo restores exactly the tree (and effective list) that was there before."""
    root = image["root"]
    write_cfg(root, "50_custom.cfg", {"cloud_init_modules": ["bootcmd", "ssh"]})
    (root / "etc/cloud/cloud.cfg.d/98_unrelated.cfg").write_text("ssh_pwauth: false\n",
                                                                 encoding="utf-8")
    state = cloud_dir_state(root)
    before = cloudinit_view(root, image["version"])["modules"]
    assert enable(image).returncode == 0
    assert (root / OUR_FILE).is_file()
    proc = enable(image, "--undo")
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert cloud_dir_state(root) == state
    assert cloudinit_view(root, image["version"])["modules"] == before
    again = enable(image, "--undo")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert cloud_dir_state(root) == state


def test_already_listed_module_is_left_alone(image: Dict[str, Any]) -> None:
    """An image whose own list already names host_routing needs no file of ours."""
    listed: List[Any] = ["bootcmd", ["host_routing", "once-per-instance"], "ssh"]
    write_cfg(image["root"], "50_custom.cfg", {"cloud_init_modules": listed})
    state = cloud_dir_state(image["root"])
    proc = enable(image)
    assert proc.returncode == 0 and "already" in proc.stdout
    assert cloud_dir_state(image["root"]) == state


def test_list_sorting_after_ours_is_refused(image: Dict[str, Any]) -> None:
    """A later cfg.d list would silently drop our entry: refuse (exit 2) and write nothing."""
    late = write_cfg(image["root"], "99_zzzz-site.cfg", {"cloud_init_modules": ["bootcmd"]})
    state = cloud_dir_state(image["root"])
    proc = enable(image)
    assert proc.returncode == 2
    assert late.name in proc.stderr and "Traceback" not in proc.stderr
    assert cloud_dir_state(image["root"]) == state


def test_missing_cloud_cfg_is_a_usage_error(tmp_path: Path) -> None:
    """Pointing at a root without cloud-init says so, instead of inventing a module list."""
    proc = cli("enable-module", "--root", str(tmp_path))
    assert proc.returncode == 2
    assert "cloud.cfg" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
def test_schema_check_is_live(tmp_path: Path, version: str) -> None:
    """Negative control: the same probe rejects a bare 'host_routing' string (NOTES §3).

    Proves the empty error lists above come from a schema that checks module
    entries, not from a validator that accepts anything.
    """
    source = DISTRO_CLOUD_DIRS[version]
    cloudinit_env(version)
    shutil.copytree(source, tmp_path / "etc/cloud", symlinks=True)
    write_cfg(tmp_path, "99_zz-cloudinit-hostrouting.cfg",
              {"cloud_init_modules": ["bootcmd", "host_routing"]})
    errors = cloudinit_view(tmp_path, version)["errors"]
    assert any(e.startswith("cloud_init_modules.1") for e in errors), errors
