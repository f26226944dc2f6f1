"""``cloudinit-hostrouting render``: the exact tree first boot writes, checked as files.

Everything runs through the real CLI into a temporary root, and the units are
checked by the host's real ``systemd-analyze verify`` with our drop-ins
loaded.  What matters here is what lands on disk: the file set, that no user
string ever reaches a unit file, that STRICT really means ``Requires=``, that a
re-render with the same config touches nothing, and that a changed config
removes only what we wrote before.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytest
import yaml
from cli_support import OUR_UNITS, cli, tree, verify_units

# Distinctive user strings: they may appear in the config JSON and nowhere else.
ODD_DEV = "zq9hrdev"
ODD_GW = "172.31.254.77"
ODD_METRIC = 424242

CONFIG_JSON = "etc/cloudinit-hostrouting/host-routing.json"
MANIFEST = "etc/cloudinit-hostrouting/manifest.json"
PROTOS = "etc/iproute2/rt_protos.d/cloudinit-hostrouting.conf"
SYSTEMD = "etc/systemd/system"
STATIC, CHECK = OUR_UNITS
DROPIN = "50-hostrouting.conf"


def host_routing(mode: str = "STRICT",
                 gate_units: Sequence[str] = ("systemd-nspawn@.service", "kubelet.service"),
                 ) -> Dict[str, Any]:
    """A config carrying the distinctive dev/gateway/metric in its only route."""
    return {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/24", "gateway": ODD_GW, "dev": ODD_DEV,
             "metric": ODD_METRIC}]},
        "route_overlap": {"mode": mode, "expected_cidrs": ["10.0.5.0/24", "10.96.0.0/12"]},
        "gate_units": list(gate_units),
    }


def render(tmp_path: Path, raw: Dict[str, Any], root: Path) -> Tuple[int, str, str]:
    """Write ``raw`` as a YAML config file and render it under ``root`` via the CLI."""
    config = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*')))}.yaml"
    config.write_text(yaml.safe_dump({"host_routing": raw}), encoding="utf-8")
    proc = cli("render", "--config", str(config), "--root", str(root))
    return proc.returncode, proc.stdout, proc.stderr


def expected_files(gate_units: Sequence[str]) -> Dict[str, str]:
    """The file set first boot writes: relpath -> 'file' or the symlink target."""
    out = {
        CONFIG_JSON: "file", MANIFEST: "file", PROTOS: "file",
        f"{SYSTEMD}/{STATIC}": "file", f"{SYSTEMD}/{CHECK}": "file",
        f"{SYSTEMD}/multi-user.target.wants/{STATIC}": f"/{SYSTEMD}/{STATIC}",
        f"{SYSTEMD}/multi-user.target.wants/{CHECK}": f"/{SYSTEMD}/{CHECK}",
    }
    for unit in gate_units:
        out[f"{SYSTEMD}/{unit}.d/{DROPIN}"] = "file"
    return out


def unit_section(text: str, section: str) -> Dict[str, List[str]]:
    """Directives of one section; repeated keys keep every value (systemd semantics)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       dict_type=_MultiDict)  # type: ignore[arg-type]
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return {k: v.split("\n") for k, v in parser[section].items()}


class _MultiDict(dict):  # type: ignore[type-arg]
    """Lets configparser keep repeated keys (joined by newlines) instead of failing."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def snapshot(root: Path) -> Dict[str, Tuple[int, int, str]]:
    """(inode, mtime_ns, content or target) of every file and symlink under ``root``."""
    out = {}
    for rel, (_, content) in tree(str(root)).items():
        st = os.lstat(root / rel)
        out[rel] = (st.st_ino, st.st_mtime_ns, content)
    return out


@pytest.fixture
def strict_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    rc, _, err = render(tmp_path, host_routing(), root)
    assert rc == 0, err
    return root


def test_file_set_is_exactly_what_first_boot_writes(strict_root: Path) -> None:
    """Units, one drop-in per gated unit, wants symlinks, config, protocol name, manifest."""
    got = {rel: (content if kind == "link" else "file")
           for rel, (kind, content) in tree(str(strict_root)).items()}
    assert got == expected_files(["systemd-nspawn@.service", "kubelet.service"])


def test_manifest_lists_every_written_path_except_itself(strict_root: Path) -> None:
    """The manifest is what a later render may remove, so it must be complete and exact."""
    manifest = json.loads((strict_root / MANIFEST).read_text(encoding="utf-8"))
    written = {"/" + rel for rel in tree(str(strict_root)) if rel != MANIFEST}
    assert sorted(manifest) == manifest
    assert set(manifest) == written


def test_render_prints_each_written_path(tmp_path: Path) -> None:
    """A human reviewing a bake sees every path written, as absolute target paths."""
    rc, out, _ = render(tmp_path, host_routing(), tmp_path / "root")
    assert rc == 0
    printed = {line.removeprefix("wrote ") for line in out.splitlines()}
    assert printed == {"/" + rel for rel in expected_files(
        ["systemd-nspawn@.service", "kubelet.service"]) if rel != MANIFEST}


def test_user_strings_appear_only_in_the_config_json(strict_root: Path) -> None:
    """No user data in units: dev, gateway and metric live only in host-routing.json."""
    files = {rel: content for rel, (kind, content) in tree(str(strict_root)).items()
             if kind == "file"}
    for needle in (ODD_DEV, ODD_GW, str(ODD_METRIC)):
        holders = sorted(rel for rel, text in files.items() if needle in text)
        assert holders == [CONFIG_JSON], f"{needle!r} found in {holders}"
    config = json.loads(files[CONFIG_JSON])
    assert config["host_routing"]["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/24", "gateway": ODD_GW, "dev": ODD_DEV,
         "metric": ODD_METRIC}]


def test_units_run_the_cli_on_the_config_file_without_a_shell(strict_root: Path) -> None:
    """ExecStart is an absolute interpreter, without site, running unit.py of the very
    package that rendered it, on the fixed config path."""
    import cloudinit_hostrouting

    here = os.path.dirname(os.path.abspath(cloudinit_hostrouting.__file__))
    for unit, command in ((STATIC, "apply-routes"), (CHECK, "check-overlap")):
        service = unit_section((strict_root / SYSTEMD / unit).read_text(encoding="utf-8"),
                               "Service")
        assert service["Type"] == ["oneshot"]
        (exec_start,) = service["ExecStart"]
        argv = exec_start.split()
        assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
        assert argv[1:] == ["-I", "-S", os.path.join(here, "unit.py"), command, "--config",
                            "/" + CONFIG_JSON]
        assert os.path.isfile(argv[3])


def test_check_is_ordered_after_static_routes(strict_root: Path) -> None:
    """The check must see the routes apply-routes installed, so it runs after it."""
    unit = unit_section((strict_root / SYSTEMD / CHECK).read_text(encoding="utf-8"), "Unit")
    assert STATIC in " ".join(unit["After"]).split()


@pytest.mark.parametrize(("mode", "dep"), [("STRICT", "Requires"), ("strict", "Requires"),
                                           ("WARN", "Wants"), ("Warn", "Wants")])
def test_dropin_dependency_follows_mode(tmp_path: Path, mode: str, dep: str) -> None:
    """STRICT: a failed check fails the gated start job.  WARN: ordered, never blocked."""
    root = tmp_path / "root"
    rc, _, err = render(tmp_path, host_routing(mode=mode), root)
    assert rc == 0, err
    other = "Wants" if dep == "Requires" else "Requires"
    for unit in ("systemd-nspawn@.service", "kubelet.service"):
        section = unit_section((root / SYSTEMD / f"{unit}.d" / DROPIN).read_text(
            encoding="utf-8"), "Unit")
        assert " ".join(section[dep]).split() == [STATIC, CHECK]
        assert " ".join(section["After"]).split() == [STATIC, CHECK]
        assert other not in section
        assert "Before" not in section


def test_rerender_same_config_prints_and_changes_nothing(tmp_path: Path) -> None:
    """Same config, second run: no output, same inodes, same mtimes, same bytes."""
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(), root)[0] == 0
    before = snapshot(root)
    rc, out, err = render(tmp_path, host_routing(), root)
    assert (rc, out, err) == (0, "", "")
    assert snapshot(root) == before


def test_changed_gate_units_remove_old_dropin_and_keep_foreign_files(tmp_path: Path) -> None:
    """A new instance's config replaces ours; files we never wrote are never touched."""
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(), root)[0] == 0
    kubelet_dir = root / SYSTEMD / "kubelet.service.d"
    foreign = {
        kubelet_dir / "10-admin.conf": "[Service]\nEnvironment=FOO=1\n",
        root / SYSTEMD / "foreign.service": "[Service]\nExecStart=/bin/true\n",
        root / "etc/cloudinit-hostrouting/notes.txt": "admin notes\n",
    }
    for path, text in foreign.items():
        path.write_text(text, encoding="utf-8")
    foreign_before = {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in foreign}

    rc, out, err = render(tmp_path, host_routing(
        gate_units=["systemd-nspawn@.service", "containerd.service"]), root)
    assert rc == 0, err
    assert not (kubelet_dir / DROPIN).exists()
    assert (root / SYSTEMD / "containerd.service.d" / DROPIN).is_file()
    assert f"/{SYSTEMD}/kubelet.service.d/{DROPIN}" in out
    for path, text in foreign.items():
        assert path.read_text(encoding="utf-8") == text
        assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == foreign_before[path]
    ours = {rel for rel in tree(str(root))} - {
        os.path.relpath(p, root) for p in foreign}
    assert ours == set(expected_files(["systemd-nspawn@.service", "containerd.service"]))


def test_changed_mode_rewrites_only_the_dropins_and_config(tmp_path: Path) -> None:
    """STRICT -> WARN changes the drop-ins' dependency and the config; units stay as they are."""
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(), root)[0] == 0
    rc, out, _ = render(tmp_path, host_routing(mode="WARN"), root)
    assert rc == 0
    assert set(out.splitlines()) == {
        f"wrote /{CONFIG_JSON}",
        f"wrote /{SYSTEMD}/systemd-nspawn@.service.d/{DROPIN}",
        f"wrote /{SYSTEMD}/kubelet.service.d/{DROPIN}",
    }


def test_bad_interpreter_path_is_a_usage_error_and_writes_nothing(tmp_path: Path) -> None:
    """``--python`` with a space cannot go into ExecStart=: exit 2, a message, no tree."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"host_routing": host_routing()}), encoding="utf-8")
    root = tmp_path / "root"
    proc = cli("render", "--config", str(config), "--root", str(root),
               "--python", "/usr/bin/py thon")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "/usr/bin/py thon" in proc.stderr
    assert not root.exists()


@pytest.mark.parametrize("mode", ["STRICT", "WARN"])
def test_systemd_analyze_verify_accepts_rendered_units(tmp_path: Path, mode: str) -> None:
    """systemd itself loads our units and drop-ins (incl. on a template instance) cleanly."""
    gates = ["systemd-nspawn@.service", "kubelet.service"]
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(mode=mode, gate_units=gates), root)[0] == 0
    rc, lines = verify_units(str(root), gates, str(tmp_path / "stubs"))
    assert (rc, lines) == (0, [])


@pytest.mark.parametrize(("target", "breakage", "expect"), [
    (f"{SYSTEMD}/{STATIC}", "BogusDirective=1\n", "BogusDirective"),
    (f"{SYSTEMD}/kubelet.service.d/{DROPIN}", "Requirez=foo.service\n", "Requirez"),
    (f"{SYSTEMD}/systemd-nspawn@.service.d/{DROPIN}", "Bogus=1\n", "Bogus"),
])
def test_verify_catches_a_broken_unit(tmp_path: Path, target: str, breakage: str,
                                      expect: str) -> None:
    """Negative control: the same verify call flags a bogus directive in a unit or drop-in.

    Without this, a verify that silently loaded nothing (wrong search path, drop-ins
    not picked up) would make the test above pass for any content.
    """
    gates = ["systemd-nspawn@.service", "kubelet.service"]
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(gate_units=gates), root)[0] == 0
    broken = tmp_path / "broken"
    shutil.copytree(root, broken, symlinks=True)
    with open(broken / target, "a", encoding="utf-8") as handle:
        handle.write(breakage)
    _, lines = verify_units(str(broken), gates, str(tmp_path / "stubs"))
    assert any(expect in line and str(broken / target) in line for line in lines), lines


def test_verify_fails_on_a_missing_executable(tmp_path: Path) -> None:
    """Negative control for the exit code: a unit whose ExecStart does not exist fails."""
    root = tmp_path / "root"
    assert render(tmp_path, host_routing(gate_units=[]), root)[0] == 0
    unit = root / SYSTEMD / CHECK
    text = unit.read_text(encoding="utf-8")
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    unit.write_text(text.replace(exec_line, "ExecStart=/nonexistent/hr-python -m x"),
                    encoding="utf-8")
    rc, lines = verify_units(str(root), [], str(tmp_path / "stubs"))
    assert rc != 0
    assert any("/nonexistent/hr-python" in line for line in lines), lines


# ----------------------------------------------------------------------------
# Hardening: what `systemd-analyze security` makes of the rendered units
# ----------------------------------------------------------------------------

GUARD = "hostrouting-guard.service"
ALL_UNITS = (STATIC, CHECK, GUARD)
EXPOSURE_TARGET = 2.0
# The directives the units had before hardening: what is left when every
# sandboxing line is taken out again (the negative control below).
UNHARDENED_KEYS = {"Description", "Wants", "After", "Before", "Type", "RemainAfterExit",
                   "ExecStart", "TimeoutStartSec", "Restart", "RestartSec", "WantedBy"}


@pytest.fixture
def guard_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    raw = host_routing(gate_units=["systemd-nspawn@.service"])
    raw["guard"] = {"enabled": True,
                    "prometheus_textfile": "/var/lib/node_exporter/textfile_collector/hr.prom"}
    rc, _, err = render(tmp_path, raw, root)
    assert rc == 0, err
    return root


def exposure(root: Path, unit: str) -> float:
    """The overall exposure systemd-analyze gives ``unit`` loaded from ``root``."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not found: install systemd (scripts/setup-dev)",
                    pytrace=False)
    proc = subprocess.run(["systemd-analyze", "security", "--no-pager", "--offline=true",
                           f"--root={root}", unit], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, SYSTEMD_COLORS="0"))
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+) ",
                      proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_each_unit_is_rated_at_most_the_target(guard_root: Path, unit: str) -> None:
    """systemd's own analysis rates every unit we write at most 2.0 ("OK")."""
    assert exposure(guard_root, unit) <= EXPOSURE_TARGET


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_the_unhardened_units_are_rated_above_the_target(guard_root: Path, unit: str) -> None:
    """Negative control: the same units without their sandboxing lines rate far above it.

    Proves the analysis reads the rendered files (an analysis of nothing would
    rate every unit the same) and that the sandboxing lines are what lowers it.
    """
    path = guard_root / SYSTEMD / unit
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if not line or line.startswith(("#", "[")) or line.split("=", 1)[0] in UNHARDENED_KEYS]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert exposure(guard_root, unit) > 9.0


def test_units_get_only_the_capabilities_and_sockets_they_need(guard_root: Path) -> None:
    """CAP_NET_ADMIN where routes change, none for the check; netlink and unix sockets only."""
    want_caps = {STATIC: ["CAP_NET_ADMIN"], CHECK: [""], GUARD: ["CAP_NET_ADMIN"]}
    for unit in ALL_UNITS:
        service = unit_section((guard_root / SYSTEMD / unit).read_text(encoding="utf-8"),
                               "Service")
        assert service["CapabilityBoundingSet"] == want_caps[unit], unit
        assert service["RestrictAddressFamilies"] == ["AF_NETLINK AF_UNIX"]
        assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
        # One run directory shared by the three units, kept after each oneshot exits.
        assert service["RuntimeDirectory"] == ["cloudinit-hostrouting"]
        assert service["RuntimeDirectoryPreserve"] == ["yes"]
        assert "User" not in service and "AmbientCapabilities" not in service


def test_systemd_analyze_verify_accepts_the_hardened_guard(guard_root: Path,
                                                           tmp_path: Path) -> None:
    """verify loads all three hardened units, the guard included, without a complaint."""
    rc, lines = verify_units(str(guard_root), ["systemd-nspawn@.service"],
                             str(tmp_path / "stubs"), units=ALL_UNITS)
    assert (rc, lines) == (0, [])


def test_wait_for_ipoib_grows_the_checks_one_budget_and_timeout(tmp_path: Path) -> None:
    """The IPoIB wait comes out of the check's --wait budget: the unit passes the sum.

    Default route (30 s) plus wait_for_ipoib, and TimeoutStartSec= grows by as
    much, so systemd never kills a check that waits as configured; the static
    routes unit is unchanged.  systemd itself still loads the units.
    """
    raw = host_routing()
    raw["route_overlap"]["wait_for_ipoib"] = 45
    root = tmp_path / "root"
    assert render(tmp_path, raw, root)[0] == 0
    check = (root / SYSTEMD / CHECK).read_text()
    static = (root / SYSTEMD / STATIC).read_text()
    assert re.search(r"^ExecStart=\S+ -I -S \S+/unit\.py check-overlap --config \S+ "
                     r"--wait 75$", check, re.M), check
    assert "TimeoutStartSec=165\n" in check
    assert "--wait" not in static and "TimeoutStartSec=120\n" in static
    plain = tmp_path / "plain"
    assert render(tmp_path, host_routing(), plain)[0] == 0
    assert "--wait" not in (plain / SYSTEMD / CHECK).read_text()  # negative control
    gates = ["systemd-nspawn@.service", "kubelet.service"]
    assert verify_units(str(root), gates, str(tmp_path / "stubs")) == (0, [])
