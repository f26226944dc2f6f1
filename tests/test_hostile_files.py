"""Hostile file states: every command refuses them with one clear line, exit 2, and writes nothing.

Each case builds a real file state under the test's directory (files where
directories belong, read-only mounts, corrupt manifests, broken cloud.cfg
files, symlinks out of the image), runs the real command as a subprocess, and
checks: exit 2, exactly one ``error:`` line naming the path and the problem
(and the fix), no traceback, and a tree byte-for-byte as it was before (no
partial file, no temporary left over).  Read-only means a real read-only bind
mount in a private mount namespace (tests/mountns.py): root ignores mode bits.

The second half proves the same rules where the command succeeds: symlinks in
an image root resolve inside the root, as in a chroot, and never reach the
build host's files.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import mountns
import pytest
from cli_support import REPO, cli, cloudinit_env

CONFIG = ("host_routing:\n"
          "  route_overlap: {mode: STRICT, expected_cidrs: [10.0.5.0/24]}\n"
          "  guard: {enabled: true}\n")
MANIFEST = "etc/cloudinit-hostrouting/manifest.json"
UNITS = "etc/systemd/system"
OUR_CFG = "etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg"


def snapshot(base: Path) -> Dict[str, Tuple[str, object]]:
    """Every directory, file (bytes and mode), symlink and FIFO under ``base``, unfollowed."""
    out: Dict[str, Tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", (Path(path).read_bytes(), stat.S_IMODE(st.st_mode)))
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def config(tmp: Path) -> str:
    return str(write(tmp / "cfg.yaml", CONFIG))


def rendered(tmp: Path) -> Path:
    """An image root holding what render writes (units, drop-in, links, manifest)."""
    root = tmp / "root"
    proc = cli("render", "--config", config(tmp), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    return root


def with_manifest(content: str | bytes) -> Callable[[Path], List[str]]:
    """uninstall on a rendered root whose manifest was replaced by ``content``."""
    def setup(tmp: Path) -> List[str]:
        root = rendered(tmp)
        write(root / MANIFEST, content)
        return ["uninstall", "--root", str(root)]
    return setup


def image(tmp: Path, cloud_cfg: str | bytes = "cloud_init_modules:\n - bootcmd\n") -> Path:
    """An image root with a cloud.cfg."""
    root = tmp / "image"
    write(root / "etc/cloud/cloud.cfg", cloud_cfg)
    (root / "etc/cloud/cloud.cfg.d").mkdir()
    return root


def with_cfg_d(name: str, content: str) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        root = image(tmp)
        write(root / "etc/cloud/cloud.cfg.d" / name, content)
        return ["enable-module", "--root", str(root)]
    return setup


class Case(NamedTuple):
    name: str
    setup: Callable[[Path], List[str]]  # builds the state under tmp; returns the CLI args
    message: Sequence[str]  # each must be in the error line; {tmp} is the test's directory
    read_only: Sequence[str] = ()  # dirs (relative to tmp) mounted read-only for the run
    cwd: str = ""  # run in this dir (relative to tmp; created) to catch relative writes


def _render_to(root: str) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        return ["render", "--config", config(tmp), "--root", root.format(tmp=tmp)]
    return setup


def _file_at(rel: str, then: Callable[[Path], List[str]]) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        write(tmp / rel, "a file in the way\n")
        return then(tmp)
    return setup


def _mkdir(rel: str, then: Callable[[Path], List[str]]) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        (tmp / rel).mkdir(parents=True)
        return then(tmp)
    return setup


def _manifest_dir(tmp: Path) -> List[str]:
    root = rendered(tmp)
    (root / MANIFEST).unlink()
    (root / MANIFEST).mkdir()
    return ["uninstall", "--root", str(root)]


def _manifest_symlink(tmp: Path) -> List[str]:
    root = rendered(tmp)
    outside = write(tmp / "outside.json", json.dumps([f"/{UNITS}/hostrouting-guard.service"]))
    (root / MANIFEST).unlink()
    (root / MANIFEST).symlink_to(outside)
    return ["uninstall", "--root", str(root)]


def _lists_passwd(tmp: Path) -> List[str]:
    root = rendered(tmp)
    write(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    paths = json.loads((root / MANIFEST).read_text())
    write(root / MANIFEST, json.dumps([*paths, "/etc/passwd"]))
    return ["uninstall", "--root", str(root)]


def _dir_where_our_file_is(tmp: Path) -> List[str]:
    root = rendered(tmp)
    config_file = root / "etc/cloudinit-hostrouting/host-routing.json"
    config_file.unlink()
    (config_file / "keep").mkdir(parents=True)
    return ["uninstall", "--root", str(root)]


def _uninstall(root: str) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        return ["uninstall", "--root", root.format(tmp=tmp)]
    return setup


def _rendered_then(args: Callable[[Path], List[str]]) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        rendered(tmp)
        return args(tmp)
    return setup


def _fifo_cloud_cfg(tmp: Path) -> List[str]:
    root = image(tmp)
    (root / "etc/cloud/cloud.cfg").unlink()
    os.mkfifo(root / "etc/cloud/cloud.cfg")
    return ["enable-module", "--root", str(root)]


def _cfg_d_is_a_file(tmp: Path) -> List[str]:
    root = image(tmp)
    (root / "etc/cloud/cloud.cfg.d").rmdir()
    write(root / "etc/cloud/cloud.cfg.d", "not a directory\n")
    return ["enable-module", "--root", str(root)]


def _enable(root: str, undo: bool = False) -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        image(tmp)
        return ["enable-module", "--root", root.format(tmp=tmp), *(["--undo"] if undo else [])]
    return setup


def _check(run_dir: str, command: str = "check-overlap") -> Callable[[Path], List[str]]:
    def setup(tmp: Path) -> List[str]:
        extra = ["--wait", "0"] if command == "check-overlap" else []
        return [command, "--config", config(tmp), "--run-dir", run_dir.format(tmp=tmp), *extra]
    return setup


CASES = [
    # --- render: the root ------------------------------------------------------------------
    Case("render root empty", _render_to(""), ["--root is empty", "Fix"], cwd="cwd"),
    Case("render root relative", _render_to("image"), ["--root 'image' is relative"], cwd="cwd"),
    Case("render root is a file", _file_at("rootfile", _render_to("{tmp}/rootfile")),
         ["{tmp}/rootfile is not a directory"]),
    Case("render root under a file", _file_at("rootfile", _render_to("{tmp}/rootfile/image")),
         ["--root {tmp}/rootfile/image is under {tmp}/rootfile", "not a directory"]),
    Case("render root read-only", _mkdir("root", _render_to("{tmp}/root")),
         ["--root {tmp}/root", "read-only", "Fix"], read_only=["root"]),
    # The config dir is writable, the unit dir is not: nothing at all may be written.
    Case("render unit dir read-only", _mkdir(f"root/{UNITS}", _render_to("{tmp}/root")),
         ["read-only", f"{{tmp}}/root/{UNITS}", "Fix"], read_only=[f"root/{UNITS}"]),
    Case("render: a directory where a unit goes",
         _mkdir(f"root/{UNITS}/hostrouting-guard.service", _render_to("{tmp}/root")),
         [f"{{tmp}}/root/{UNITS}/hostrouting-guard.service is a directory", "Fix"]),
    # --- uninstall: the manifest -----------------------------------------------------------
    Case("manifest is a number", with_manifest("42\n"), [MANIFEST, "holds int", "Fix"]),
    Case("manifest is null", with_manifest("null\n"), [MANIFEST, "holds null"]),
    Case("manifest is a string", with_manifest('"/etc/passwd"\n'), [MANIFEST, "holds str"]),
    Case("manifest is a mapping", with_manifest('{"a": 1}\n'), [MANIFEST, "holds dict"]),
    Case("manifest lists non-strings", with_manifest("[1, null]\n"),
         [MANIFEST, "lists 1, which is not a path"]),
    Case("manifest is not JSON", with_manifest("[\n"), [MANIFEST, "is not a JSON list"]),
    Case("manifest is not UTF-8", with_manifest(b'["/etc/\xff"]'), [MANIFEST, "not a JSON"]),
    Case("manifest is a directory", _manifest_dir, [MANIFEST, "is a directory"]),
    Case("manifest is a symlink", _manifest_symlink, [MANIFEST, "is a symlink"]),
    Case("manifest lists /etc/passwd", _lists_passwd,
         [MANIFEST, "lists /etc/passwd, which this package never writes", "Fix"]),
    Case("manifest climbs out with ..", with_manifest('["/etc/cloudinit-hostrouting/../passwd"]'),
         ["lists /etc/cloudinit-hostrouting/../passwd, which this package never writes"]),
    Case("manifest lists a foreign unit", with_manifest(f'["/{UNITS}/sshd.service"]'),
         [f"/{UNITS}/sshd.service, which this package never writes"]),
    Case("manifest lists a foreign drop-in",
         with_manifest(f'["/{UNITS}/ssh.service.d/10-site.conf"]'), ["never writes"]),
    Case("manifest lists a foreign wants link",
         with_manifest(f'["/{UNITS}/multi-user.target.wants/ssh.service"]'), ["never writes"]),
    Case("a directory where our file is", _dir_where_our_file_is,
         ["etc/cloudinit-hostrouting/host-routing.json is a directory", "Fix"]),
    # --- uninstall: the root ---------------------------------------------------------------
    Case("uninstall root read-only", _rendered_then(_uninstall("{tmp}/root")),
         ["--root {tmp}/root", "read-only"], read_only=["root"]),
    Case("uninstall root missing", _uninstall("{tmp}/nothing"),
         ["--root {tmp}/nothing: no such directory"]),
    Case("uninstall root is a file", _file_at("rootfile", _uninstall("{tmp}/rootfile")),
         ["not a directory"]),
    Case("uninstall root empty", _uninstall(""), ["--root is empty"], cwd="cwd"),
    # --- enable-module ---------------------------------------------------------------------
    Case("cloud.cfg.d file with broken YAML", with_cfg_d("50-site.cfg", "a: [1,\nb: 2\n"),
         ["etc/cloud/cloud.cfg.d/50-site.cfg is not valid YAML at line", "Fix"]),
    Case("cloud.cfg.d file with a Python tag",
         with_cfg_d("50-site.cfg", "a: !!python/object/apply:os.system ['touch /tmp/pwned']\n"),
         ["50-site.cfg is not valid YAML"]),
    Case("cloud.cfg.d file nested 20,000 deep", with_cfg_d("50-site.cfg", "[" * 20000),
         ["50-site.cfg is not valid YAML"]),
    Case("cloud.cfg not UTF-8", lambda tmp: ["enable-module", "--root", str(
        image(tmp, b"cloud_init_modules: [caf\xe9]\n"))],
         ["etc/cloud/cloud.cfg: invalid UTF-8 at byte 24", "Fix"]),
    Case("cloud.cfg.d file is a list", with_cfg_d("50-site.cfg", "- bootcmd\n"),
         ["50-site.cfg holds a YAML list, not a mapping"]),
    Case("cloud_init_modules not a list", with_cfg_d("50-site.cfg", "cloud_init_modules: x\n"),
         ["50-site.cfg: cloud_init_modules is a str, not a list"]),
    Case("cloud.cfg is a FIFO", _fifo_cloud_cfg, ["etc/cloud/cloud.cfg is not a regular file"]),
    Case("cloud.cfg.d is a file", _cfg_d_is_a_file, ["cloud.cfg.d is not a directory", "Fix"]),
    Case("enable-module root read-only", _enable("{tmp}/image"),
         ["--root {tmp}/image", "read-only"], read_only=["image"]),
    Case("enable-module --undo root read-only", _enable("{tmp}/image", undo=True),
         ["not enabled"], read_only=["image"]),
    Case("enable-module root relative", _enable("image"), ["relative"], cwd="cwd"),
    # --- check-overlap and guard: the run dir ----------------------------------------------
    Case("check run dir is a file", _file_at("run", _check("{tmp}/run")),
         ["--run-dir {tmp}/run is a file, not a directory", "Fix"]),
    Case("check run dir under a file", _file_at("run", _check("{tmp}/run/sub")),
         ["--run-dir {tmp}/run/sub is under {tmp}/run, which is not a directory"]),
    Case("check run dir read-only", _mkdir("run", _check("{tmp}/run")),
         ["--run-dir {tmp}/run is on a read-only file system"], read_only=["run"]),
    Case("guard run dir is a file", _file_at("run", _check("{tmp}/run", "guard")),
         ["--run-dir {tmp}/run is a file"]),
    Case("guard run dir read-only", _mkdir("run", _check("{tmp}/run", "guard")),
         ["--run-dir {tmp}/run is on a read-only file system"], read_only=["run"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_state(case: Case, tmp_path: Path) -> None:
    args = case.setup(tmp_path)
    if case.cwd:
        (tmp_path / case.cwd).mkdir(exist_ok=True)
    cwd = str(tmp_path / case.cwd) if case.cwd else REPO
    before = snapshot(tmp_path)
    argv = [sys.executable, "-m", "cloudinit_hostrouting", *args]
    env = cloudinit_env("22.4")
    proc = mountns.run(argv, read_only=[str(tmp_path / d) for d in case.read_only],
                       cwd=cwd, env=env)
    output = proc.stdout + proc.stderr
    if case.name == "enable-module --undo root read-only":
        # Nothing to remove is not an error: the read-only root is never written.
        assert (proc.returncode, proc.stdout.strip()) == (
            0, "not enabled by enable-module; nothing to do"), output
    else:
        assert proc.returncode == 2, output
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, proc.stderr
        for part in case.message:
            assert part.format(tmp=tmp_path) in errors[0], errors[0]
    assert "Traceback" not in output
    assert snapshot(tmp_path) == before
    assert not os.path.exists("/tmp/pwned")


NUMBERS = [
    ("check-overlap", "--wait", value) for value in ("-1", "nan", "inf", "-inf", "1e9", "abc")
] + [("apply-routes", "--wait", "inf")] + [
    ("azure-suggest", "--timeout", value) for value in ("-5", "nan", "inf", "1e6")
]  # azure-suggest --timeout 0 is refused by azure.py itself (test_azure.py)


@pytest.mark.parametrize("command,option,value", NUMBERS,
                         ids=[" ".join(n) for n in NUMBERS])
def test_numeric_options_are_bounded(command: str, option: str, value: str,
                                     tmp_path: Path) -> None:
    """nan, inf (a wait that never ends), negatives and absurd values are usage errors."""
    args = [command, f"{option}={value}", "--config", config(tmp_path)]
    if command == "check-overlap":
        args += ["--run-dir", str(tmp_path / "run")]
    if command == "azure-suggest":  # should the check regress, stay on loopback (discard port)
        args += ["--imds-url", "http://127.0.0.1:9/metadata/instance"]
    before = snapshot(tmp_path)
    proc = cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {option}: '{value}' is not a number of seconds" \
        in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


def test_numeric_bounds_accept_the_documented_range(tmp_path: Path) -> None:
    """Negative control for the above: 0 and the maximum parse (and then fail elsewhere)."""
    from cloudinit_hostrouting.cli import build_parser

    parser = build_parser()
    for wait in ("0", "3600", "0.5"):
        args = parser.parse_args(["check-overlap", "--config", "x", "--wait", wait])
        assert args.wait == float(wait)
    assert parser.parse_args(["azure-suggest", "--timeout", "300"]).timeout == 300.0


# ---------------------------------------------------------------------------------------------
# Symlinks in an image root resolve inside it, as in a chroot: the host is never reached
# ---------------------------------------------------------------------------------------------

def test_render_and_uninstall_follow_absolute_symlinks_inside_the_root(tmp_path: Path) -> None:
    """root/etc/systemd -> /<host dir>: the units land in root/<host dir>, never in the host dir."""
    host_dir = tmp_path / "host-systemd"
    decoy = write(host_dir / "system/hostrouting-guard.service", "the host's own file\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/systemd").symlink_to(host_dir)  # absolute: means root + host_dir in the image
    host_before = snapshot(host_dir)
    proc = cli("render", "--config", config(tmp_path), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    inside = Path(str(root) + str(host_dir)) / "system"
    assert (inside / "hostrouting-static-routes.service").is_file()
    assert (inside / "hostrouting-guard.service").is_file()
    assert snapshot(host_dir) == host_before

    proc = cli("uninstall", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert f"removed /{UNITS}/hostrouting-guard.service" in proc.stdout
    assert not (inside / "hostrouting-guard.service").exists()
    assert decoy.read_text() == "the host's own file\n"
    assert snapshot(host_dir) == host_before


def test_render_replaces_a_symlink_at_our_path_instead_of_writing_through_it(
        tmp_path: Path) -> None:
    victim = write(tmp_path / "victim", "precious\n")
    root = tmp_path / "root"
    (root / "etc/cloudinit-hostrouting").mkdir(parents=True)
    (root / "etc/cloudinit-hostrouting/host-routing.json").symlink_to(victim)
    proc = cli("render", "--config", config(tmp_path), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    ours = root / "etc/cloudinit-hostrouting/host-routing.json"
    assert not ours.is_symlink() and "host_routing" in ours.read_text()
    assert victim.read_text() == "precious\n"


def test_render_over_a_corrupt_manifest_writes_and_warns(tmp_path: Path) -> None:
    """First boot must still write (STRICT must fail closed); only stale removal is skipped."""
    root = rendered(tmp_path)
    write(root / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    write(root / MANIFEST, json.dumps(["/etc/passwd"]))
    (root / f"{UNITS}/hostrouting-static-routes.service").unlink()
    proc = cli("render", "--config", config(tmp_path), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {root}/{MANIFEST} lists /etc/passwd, which this package never " \
           "writes" in proc.stderr
    assert f"wrote /{UNITS}/hostrouting-static-routes.service" in proc.stdout
    assert (root / "etc/passwd").exists()
    manifest = json.loads((root / MANIFEST).read_text())
    assert f"/{UNITS}/hostrouting-static-routes.service" in manifest
    assert "/etc/passwd" not in manifest
    # ...and the rewritten manifest is trusted again: uninstall removes exactly ours.
    assert cli("uninstall", "--root", str(root)).returncode == 0
    assert sorted(snapshot(root)) == ["etc", "etc/iproute2", "etc/iproute2/rt_protos.d",
                                      "etc/passwd", "etc/systemd", f"{UNITS}",
                                      f"{UNITS}/multi-user.target.wants",
                                      f"{UNITS}/systemd-nspawn@.service.d"]


def test_enable_module_reads_and_writes_the_image_not_the_host(tmp_path: Path) -> None:
    """root/etc/cloud -> /<host dir>: cloud-init in the image reads root/<host dir>."""
    host_cloud = tmp_path / "host-cloud"
    write(host_cloud / "cloud.cfg", "cloud_init_modules: [HOST_ONLY]\n")
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc/cloud").symlink_to(host_cloud)
    inside = Path(str(root) + str(host_cloud))
    write(inside / "cloud.cfg", "cloud_init_modules: [bootcmd, seed_random]\n")
    # A cfg.d link to an absolute host file dangles inside the image, so cloud-init skips it.
    write(tmp_path / "host-site.cfg", "cloud_init_modules: [HOST_SITE]\n")
    (inside / "cloud.cfg.d").mkdir()
    (inside / "cloud.cfg.d/50-site.cfg").symlink_to(tmp_path / "host-site.cfg")
    host_before = snapshot(host_cloud)
    env = cloudinit_env("22.4")
    proc = cli("enable-module", "--root", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "base list from /etc/cloud/cloud.cfg" in proc.stdout
    ours = inside / "cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg"
    assert "- bootcmd\n- seed_random\n- - host_routing\n  - once-per-instance\n" \
        in ours.read_text()
    assert snapshot(host_cloud) == host_before

    ours.unlink()
    ours.symlink_to(tmp_path / "host-site.cfg")  # --undo removes the link, not its target
    proc = cli("enable-module", "--root", str(root), "--undo", env=env)
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert not os.path.lexists(ours)
    assert (tmp_path / "host-site.cfg").read_text() == "cloud_init_modules: [HOST_SITE]\n"


def test_render_into_a_full_file_system_writes_nothing(tmp_path: Path) -> None:
    """ENOSPC after the first file (a real 4 KiB tmpfs as the root): not one file is left.

    The tmpfs exists only inside the mount namespace, so the listing is taken there.
    """
    root = tmp_path / "root"
    root.mkdir()
    code = f"""
import json, os, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "cloudinit_hostrouting", "render", "--config",
                       {config(tmp_path)!r}, "--root", {str(root)!r}],
                      capture_output=True, text=True, timeout=60, cwd={REPO!r})
left = [os.path.join(d, n) for d, ds, fs in os.walk({str(root)!r}) for n in ds + fs]
print(json.dumps({{"rc": proc.returncode, "stderr": proc.stderr, "left": left}}))
"""
    proc = mountns.run([sys.executable, "-c", code], full=[str(root)], env=cloudinit_env("22.4"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rc"] == 2, result
    assert "No space left on device" in result["stderr"] and "Traceback" not in result["stderr"]
    assert result["left"] == []
