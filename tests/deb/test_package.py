"""The .deb in real Debian roots: install, cloud-init upgrade (trigger), remove, purge, lintian.

Each test unpacks a fresh mmdebstrap root (debroot.py) and runs the release's
own dpkg inside it.  What cloud-init will run is asked of the root's own
cloud-init (``util.read_conf_with_confd``, the function its stages read system
config with), never of our enable.py; what purge leaves is compared with what
``cloudinit-hostrouting uninstall`` leaves on an identical tree.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Set

import debroot
import pytest
import yaml
from debroot import in_root, put

import cloudinit_hostrouting

# Run by `tox -e deb` only (root, mmdebstrap, systemd-nspawn); never skipped.
pytestmark = pytest.mark.deb

OUR_CFG = "/etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg"
ENTRY = ["host_routing", "once-per-instance"]
DEB_IN_ROOT = "/tmp/cloudinit-hostrouting.deb"
# Run by the root's python3: the module list cloud-init itself computes.
MODULES_PROBE = """python3 - <<'PY'
import json
from cloudinit import util
print("MODULES=" + json.dumps(util.read_conf_with_confd("/etc/cloud/cloud.cfg")
                              .get("cloud_init_modules")))
PY
"""
CONFIG = """\
host_routing:
  static_routes:
    enabled: true
    routes: [{destination: 10.0.5.0/24, dev: eth0}]
  route_overlap: {mode: STRICT, expected_cidrs: [10.0.5.0/24]}
  gate_units: [systemd-nspawn@.service, kubelet.service]
  guard: {enabled: true}
"""
WATCHED = ("etc/systemd", "etc/iproute2", "etc/cloudinit-hostrouting", "etc/cloud")


def modules(root: Path) -> List[Any]:
    out = in_root(root, MODULES_PROBE).stdout
    (line,) = [ln for ln in out.splitlines() if ln.startswith("MODULES=")]
    result: List[Any] = json.loads(line[len("MODULES="):])
    return result


def install(root: Path, deb: Path, how: str = "dpkg -i") -> str:
    debroot.copy_in(root, deb, DEB_IN_ROOT)
    return in_root(root, f"cd {Path(DEB_IN_ROOT).parent} && {how} ./{Path(DEB_IN_ROOT).name}"
                   ).stdout


def status(root: Path) -> str:
    proc = in_root(root, "dpkg-query -W -f '${Status}' cloudinit-hostrouting", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "not-installed"


def files(root: Path, tops: tuple = WATCHED) -> Set[str]:
    """Every file and symlink under ``tops`` of ``root``, as relative paths."""
    out: Set[str] = set()
    for top in tops:
        base = root / top
        for dirpath, dirnames, filenames in os.walk(base):
            for name in filenames + [d for d in dirnames
                                     if os.path.islink(os.path.join(dirpath, d))]:
                out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


@pytest.fixture(params=sorted(debroot.SUITES))
def suite(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def root(suite: str, host_ready: None) -> Any:
    with debroot.fresh_root(suite) as path:
        yield path


def test_install_puts_the_module_where_every_python3_sees_it(
        root: Path, suite: str, package: Dict[str, Path]) -> None:
    """dpkg -i: files in /usr/lib/python3/dist-packages, byte-compiled, module enabled.

    Proves the release's own python3 (3.11 on bookworm, 3.14 on forky) imports
    the top-level shim cloud-init looks for without any PYTHONPATH, py3compile
    ran for it, and cloud-init's effective init-stage list is the distro's
    plus ours (postinst ran enable-module).
    """
    depends = debroot.run(["dpkg-deb", "-f", str(package["deb"]), "Depends"], timeout=60).stdout
    assert {"cloud-init", "python3-pyroute2", "python3-yaml"} <= {
        dep.split()[0] for dep in depends.split(", ")}
    before = modules(root)
    assert ENTRY not in before
    out = install(root, package["deb"], how="apt-get install -y")  # the README's command
    assert f"enabled: wrote {OUR_CFG}" in out
    assert status(root) == "install ok installed"
    assert modules(root) == [*before, ENTRY]

    probe = in_root(root, """python3 -I -c '
import sys, cc_host_routing, cloudinit_hostrouting
assert callable(cc_host_routing.handle) and cc_host_routing.meta["id"] == "cc_host_routing"
print(cloudinit_hostrouting.__file__, cloudinit_hostrouting.__version__,
      "py%d%d" % sys.version_info[:2])'
cloudinit-hostrouting --version
""").stdout.split()
    init_py, version, pyver, cli_version = probe
    assert init_py == "/usr/lib/python3/dist-packages/cloudinit_hostrouting/__init__.py"
    assert version == cli_version == cloudinit_hostrouting.__version__
    tag = pyver[2:]
    compiled = list((root / "usr/lib/python3/dist-packages/cloudinit_hostrouting/__pycache__")
                    .glob(f"cli.cpython-{tag}.pyc"))
    assert compiled, f"no byte-code for python {tag}: py3compile did not run"
    if suite == "forky":
        assert tag.startswith("31") and int(tag) >= 314, tag
    doc = root / "usr/share/doc/cloudinit-hostrouting"
    assert (doc / "examples/nd-h100-strict.yaml").is_file()
    assert (root / "usr/share/man/man1/cloudinit-hostrouting.1.gz").is_file()


def test_reinstall_keeps_the_enablement_file(root: Path, package: Dict[str, Path]) -> None:
    """postinst again (dpkg -i of the same .deb): the file is not rewritten."""
    install(root, package["deb"])
    ours = root / OUR_CFG.lstrip("/")
    stamp = (ours.stat().st_ino, ours.stat().st_mtime_ns)
    out = install(root, package["deb"])
    assert "nothing to do" in out
    assert (ours.stat().st_ino, ours.stat().st_mtime_ns) == stamp


def upgraded_cloudinit(root: Path, suite: str, work: Path) -> Dict[str, Any]:
    """The suite's real cloud-init .deb with a changed cloud_init_modules and version."""
    original = debroot.base(suite)["cloudinit_deb"]
    tree = work / "cloud-init"
    debroot.run(["dpkg-deb", "-R", str(original), str(tree)], timeout=120)
    cfg_path = tree / "etc/cloud/cloud.cfg"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    listed = cfg["cloud_init_modules"]
    new_module = next(m for m in ("ntp", "timezone", "disk_setup", "mounts")
                      if m not in listed)
    cfg["cloud_init_modules"] = [*listed[1:], new_module]  # drop the first, add one
    cfg_path.write_text("# changed by tests/deb for the trigger test\n"
                        + yaml.safe_dump(cfg, default_flow_style=False), encoding="utf-8")
    control = tree / "DEBIAN/control"
    text = control.read_text(encoding="utf-8")
    match = re.search(r"^Version: (.+)$", text, re.MULTILINE)
    assert match, text
    version = match.group(1)
    control.write_text(text.replace(f"Version: {version}", f"Version: {version}+hrtest1"),
                       encoding="utf-8")
    deb = work / "cloud-init-upgraded.deb"
    debroot.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], timeout=120)
    return {"deb": deb, "modules": cfg["cloud_init_modules"], "version": f"{version}+hrtest1"}


def test_cloud_init_upgrade_triggers_a_new_module_list(
        root: Path, suite: str, package: Dict[str, Path], tmp_path: Path) -> None:
    """An upgraded cloud-init ships a changed cloud.cfg: our list follows it.

    Our file copies the distro's list (a list in cloud.cfg.d replaces it), so
    without the trigger the node would keep the old cloud-init's modules.
    """
    install(root, package["deb"])
    new = upgraded_cloudinit(root, suite, tmp_path)
    assert modules(root) != [*new["modules"], ENTRY]
    debroot.copy_in(root, new["deb"], "/tmp/cloud-init-upgraded.deb")
    out = in_root(root, "dpkg -i /tmp/cloud-init-upgraded.deb").stdout
    assert "Processing triggers for cloudinit-hostrouting" in out
    assert f"enabled: wrote {OUR_CFG}" in out
    assert in_root(root, "dpkg-query -W -f '${Version}' cloud-init").stdout == new["version"]
    assert modules(root) == [*new["modules"], ENTRY]


def test_without_the_trigger_the_list_goes_stale(
        root: Path, suite: str, package: Dict[str, Path], tmp_path: Path) -> None:
    """Negative control: the same upgrade with our trigger interest removed.

    Proves it is the trigger that keeps the list current (and that the test
    above can fail): the copied list stays the old cloud-init's.
    """
    install(root, package["deb"])
    old = modules(root)
    in_root(root, "sed -i '/ cloudinit-hostrouting/d' /var/lib/dpkg/triggers/File\n"
                  "rm /var/lib/dpkg/info/cloudinit-hostrouting.triggers")
    new = upgraded_cloudinit(root, suite, tmp_path)
    debroot.copy_in(root, new["deb"], "/tmp/cloud-init-upgraded.deb")
    out = in_root(root, "dpkg -i /tmp/cloud-init-upgraded.deb").stdout
    assert "Processing triggers for cloudinit-hostrouting" not in out
    assert modules(root) == old != [*new["modules"], ENTRY]


def test_remove_undoes_enablement_and_purge_removes_exactly_what_uninstall_does(
        root: Path, package: Dict[str, Path]) -> None:
    """remove: back to the distro's list; purge: the instance's files, as uninstall.

    The same config is rendered into the root and into a reference tree with a
    foreign drop-in in both; ``cloudinit-hostrouting uninstall`` on the
    reference is the oracle for what purge must leave.
    """
    distro = modules(root)
    stock = files(root)
    install(root, package["deb"])
    put(root, "/tmp/c.yaml", CONFIG)
    foreign = "/etc/systemd/system/kubelet.service.d/10-admin.conf"
    for tree in ("", "/tmp/ref"):
        put(root, tree + foreign, "[Service]\nEnvironment=FOO=1\n")
        in_root(root, f"cloudinit-hostrouting render --config /tmp/c.yaml --root {tree or '/'}")
    in_root(root, "cloudinit-hostrouting uninstall --root /tmp/ref")
    manifest = json.loads((root / "etc/cloudinit-hostrouting/manifest.json").read_text())
    assert "/etc/systemd/system/hostrouting-guard.service" in manifest
    rendered = files(root)

    in_root(root, "apt-get remove -y cloudinit-hostrouting")
    assert status(root) == "deinstall ok config-files"
    assert modules(root) == distro
    assert not (root / OUR_CFG.lstrip("/")).exists()
    assert not (root / "usr/lib/python3/dist-packages/cloudinit_hostrouting").exists()
    assert files(root) == rendered - {OUR_CFG.lstrip("/")}, "remove touched instance files"

    out = in_root(root, "apt-get purge -y cloudinit-hostrouting").stdout
    assert status(root) == "not-installed"
    left_by_uninstall = files(root / "tmp/ref")
    assert left_by_uninstall == {foreign.lstrip("/")}
    assert files(root) == stock | left_by_uninstall
    assert not (root / "etc/cloudinit-hostrouting").exists()
    for path in manifest:
        assert f"removed {path}" in out
    assert modules(root) == distro


def test_purge_without_instance_files_is_quiet(root: Path, package: Dict[str, Path]) -> None:
    """An image that never booted with host_routing: purge has nothing to remove."""
    stock = files(root)
    install(root, package["deb"])
    out = in_root(root, "dpkg -P cloudinit-hostrouting").stdout
    assert "cloudinit-hostrouting: removed" not in out
    assert files(root) == stock


def test_lintian_clean(package: Dict[str, Path]) -> None:
    """No error, warning, info or pedantic tag for the source and binary packages."""
    if not package["changes"].name:
        pytest.fail("HR_DEB is set: lintian needs the .changes that build-deb writes",
                    pytrace=False)
    proc = debroot.run(["lintian", "--pedantic", "--fail-on", "error,warning,info,pedantic",
                        str(package["changes"])], timeout=300, check=False)
    tags = [ln for ln in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    assert (proc.returncode, tags) == (0, [])


def test_lintian_catches_a_known_defect(package: Dict[str, Path], tmp_path: Path) -> None:
    """Negative control: the same lintian call flags a maintainer script with a command path."""
    tree = tmp_path / "pkg"
    debroot.run(["dpkg-deb", "-R", str(package["deb"]), str(tree)], timeout=120)
    prerm = tree / "DEBIAN/prerm"
    text = prerm.read_text()
    assert "        cloudinit-hostrouting enable-module --undo" in text
    prerm.write_text(text.replace("        cloudinit-hostrouting enable-module --undo",
                                  "        /usr/bin/cloudinit-hostrouting enable-module --undo"))
    broken = tmp_path / "broken.deb"
    debroot.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(broken)], timeout=120)
    proc = debroot.run(["lintian", "--pedantic", "--fail-on", "error,warning", str(broken)],
                       timeout=300, check=False)
    assert proc.returncode != 0
    assert "command-with-path-in-maintainer-script" in proc.stdout


# What dpkg-buildpackage and debhelper leave in a source tree they build in.
BUILD_PRODUCTS = ("debian/files", "debian/.debhelper", "debian/cloudinit-hostrouting",
                  "debian/man", "debian/debhelper-build-stamp",
                  "debian/cloudinit-hostrouting.substvars", ".pybuild")


def test_build_leaves_the_checkout_clean(package: Dict[str, Path]) -> None:
    """build-deb builds in a copy: none of the build's products appear in the checkout."""
    assert [p for p in BUILD_PRODUCTS if (debroot.REPO / p).exists()] == []
