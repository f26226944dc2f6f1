"""Boot the REAL cloud-init (22.4, 25.1 or 26.2) on a NoCloud seed inside a throwaway sandbox.

Why a sandbox and not mocks: the contract of the ``host_routing`` module is with
cloud-init itself (module discovery through the top-level shim, the ``handle``
signature each version calls, per-instance semaphores, status and schema
warnings).  Only the real stages show whether that contract holds.

Why this sandbox is safe for the host:

* every boot runs in ``unshare -m -u -n --propagation private``: its own mount,
  hostname and network namespaces, so nothing mounted or configured inside can
  leak out;
* ``/etc`` and ``/var`` are overlayfs mounts whose lower layer is the host's real
  directory (so the real ``/etc/cloud/cloud.cfg`` is what cloud-init reads) and
  whose upper layer lives in a temporary directory: every write, including the
  module's ``/etc/systemd/system``, ``/etc/cloudinit-hostrouting``,
  ``/etc/iproute2/rt_protos.d`` files and cloud-init's ``/var/lib/cloud`` and
  ``/var/log``, lands in that temporary directory;
* ``/run`` is a fresh tmpfs on every boot (a reboot, as far as cloud-init can tell);
* ``/usr/bin/systemctl`` is bind-mounted over by a stand-in, and the stand-in's
  directory is also first on PATH (see ``STANDIN``);
* ``/dev/console`` is bind-mounted over by ``/dev/null`` (final-message writes there);
* the inner runner refuses to mount anything unless it really is in a mount
  namespace other than the one it was started from.

Why the module lists are trimmed: the distro's lists contain growpart and
resizefs (they act on the host's real root block device, which no overlay
isolates), users-groups, ssh and others that have nothing to do with this
module.  ``90_sandbox.cfg`` therefore sets short, harmless lists, and then the
project's own ``enable-module`` appends ``host_routing`` to the effective list,
which also exercises its "a cfg.d list replaces the distro list" logic.

How the package is imported, and why: exactly like on a real image.  The
distribution is pip-installed (not editable) from a copy of the source into a
target directory, and that directory is put on ``PYTHONPATH`` of the Debian
entry script (``/usr/bin/cloud-init`` for 22.4, the unpacked 25.1 one, both
``#!/usr/bin/python3``).  On an image, pip puts the same files into
``/usr/local/lib/python3.X/dist-packages``, which is on that interpreter's
``sys.path``; either way cloud-init finds the top-level shim ``cc_host_routing``
on ``sys.path``, and the units' ``ExecStart=`` names ``/usr/bin/python3``.  An
editable install would instead go through setuptools' import hook, and running
cloud-init under the test venv's interpreter would bake that interpreter into
the units; neither is what an image does.

This file is both a library for the tests (``Sandbox``) and the script run inside
the namespace (``python3 cloudinit_sandbox.py inner SPEC.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
# The newer cloud-inits, unpacked by scripts/setup-dev: version -> (env override, default).
# All run on /usr/bin/python3 (3.11): 26.2 is forky's package, built for
# Python 3.14, and imports and runs on 3.11 as well (forky's own python3.14 needs
# glibc 2.38 and cannot run on Debian 12, so the VM suite is where 3.14 is proven).
UNPACKED = {
    "25.1": ("CLOUDINIT25_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-25.1"),
    "26.2": ("CLOUDINIT26_DIR", "/opt/cloudinit-hostrouting-test/cloud-init-26.2"),
}
DIST_PACKAGES = "usr/lib/python3/dist-packages"
STAGE_TIMEOUT = 180  # seconds per cloud-init invocation; a normal one takes about 1-3 s
BOOT_TIMEOUT = 900  # seconds for a whole sandboxed boot
SANDBOX_CFG = "/etc/cloud/cloud.cfg.d/90_sandbox.cfg"

# Harmless module lists (see the module docstring for why they are trimmed).
# The cloud_config and cloud_final stages still run for real, so the semaphore,
# status and result files are cloud-init's own.
SANDBOX_CFG_TEXT = """\
# Written by tests/cloudinit_sandbox.py inside a throwaway overlay.
datasource_list: [NoCloud]
network: {config: disabled}
cloud_init_modules:
 - migrator
 - bootcmd
 - write-files
cloud_config_modules:
 - runcmd
cloud_final_modules:
 - scripts-user
 - final-message
"""

# The stand-in for systemctl.  PID 1 systemd cannot run inside a mount
# namespace, so the module's ``systemctl daemon-reload`` / ``start --no-block``
# are recorded instead of executed: one line per call with the cloud-init stage
# (from the environment the runner sets), the path the kernel ran (``$0``: it
# tells a PATH lookup of the stand-in apart from the bind mount over
# /usr/bin/systemctl) and the arguments, tab-separated.
# The VM suite (tests/vm) covers what real systemd does with them.
STANDIN = """\
#!/bin/sh
# systemctl stand-in for the cloud-init sandbox (tests/cloudinit_sandbox.py).
log={log}
stage=${{SANDBOX_STAGE:-unknown}}
printf '%s\\t%s' "$stage" "$0" >>"$log"
for arg in "$@"; do printf '\\t%s' "$arg" >>"$log"; done
printf '\\n' >>"$log"
exit 0
"""

STAGES = [
    ("init-local", ["init", "--local"]),
    ("init", ["init"]),
    ("modules-config", ["modules", "--mode", "config"]),
    ("modules-final", ["modules", "--mode", "final"]),
]

# Trees whose content the tests inspect after each boot.
SNAPSHOT_DIRS = [
    "/etc/systemd/system",
    "/etc/cloudinit-hostrouting",
    "/etc/iproute2/rt_protos.d",
    "/etc/cloud/cloud.cfg.d",
]


@dataclass(frozen=True)
class CloudInit:
    """One cloud-init version: its entry script and what goes first on PYTHONPATH."""

    version: str
    entry: str
    pythonpath: List[str]


def cloudinit_versions() -> Dict[str, Optional[CloudInit]]:
    """Every supported version, or None where this host does not have one."""
    found: Dict[str, Optional[CloudInit]] = {"22.4": None, **{v: None for v in UNPACKED}}
    if Path("/usr/lib/python3/dist-packages/cloudinit/version.py").exists() and Path(
        "/usr/bin/cloud-init"
    ).exists():
        found["22.4"] = CloudInit("22.4", "/usr/bin/cloud-init", [])
    for version, (env, default) in UNPACKED.items():
        base = Path(os.environ.get(env, default))
        if (base / DIST_PACKAGES / "cloudinit/version.py").exists():
            found[version] = CloudInit(
                version, str(base / "usr/bin/cloud-init"), [str(base / DIST_PACKAGES)]
            )
    return found


def install_package(target: Path) -> Path:
    """pip-install the distribution (not editable) into ``target``; return it.

    The source (top-level files and the package; not tests, caches or VM
    images) is copied first so the build leaves no ``build/`` or egg-info in the
    working tree; ``--no-build-isolation`` uses the installed setuptools, so no
    network is needed.
    """
    src = target.parent / "src"
    src.mkdir(parents=True)
    for item in REPO.iterdir():
        if item.is_file():
            shutil.copy2(item, src / item.name)
    shutil.copytree(REPO / "cloudinit_hostrouting", src / "cloudinit_hostrouting",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         str(src)],
        check=True, timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    if not (target / "cc_host_routing.py").exists():
        raise RuntimeError(f"the install in {target} has no top-level cc_host_routing shim")
    return target


def sandbox_unavailable() -> Optional[str]:
    """Why this host cannot run the sandbox, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (unshare -m and overlay mounts)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-m", "-u", "-n", "--propagation", "private", "true"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    if probe.returncode != 0:
        return f"unshare -m -u -n failed: {probe.stdout.decode(errors='replace').strip()}"
    return None


class Sandbox:
    """A persistent disk (overlay upper dirs) across several sandboxed boots.

    ``/etc`` and ``/var`` changes persist between boots of one Sandbox, as on a
    disk; ``/run`` does not, as across a reboot.
    """

    def __init__(self, base: Path, cloudinit: CloudInit, site: Path):
        self.base = base
        self.cloudinit = cloudinit
        self.site = site
        self.log = base / "systemctl.log"
        self.standin_dir = base / "standin"
        self.boots = 0
        for name in ("etc-upper", "etc-work", "var-upper", "var-work", "standin", "results"):
            (base / name).mkdir(parents=True, exist_ok=True)
        standin = self.standin_dir / "systemctl"
        standin.write_text(STANDIN.format(log=self.log), encoding="utf-8")
        standin.chmod(0o755)
        self.log.touch()

    def seed(self, instance_id: str, user_data: str) -> None:
        """Write the NoCloud seed into the /var layer (the sandbox is not mounted now)."""
        seed = self.base / "var-upper/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "meta-data").write_text(f"instance-id: {instance_id}\n", encoding="utf-8")
        (seed / "user-data").write_text(user_data, encoding="utf-8")

    def systemctl_calls(self) -> List[Tuple[str, List[str]]]:
        """Every stand-in call so far: (path run, [stage, arg, ...])."""
        text = self.log.read_text(encoding="utf-8")
        calls = []
        for line in text.splitlines():
            stage, path, *args = line.split("\t")
            calls.append((path, [stage, *args]))
        return calls

    def boot(self, extra: Optional[List[List[str]]] = None) -> Dict[str, Any]:
        """Run all four stages once in a fresh namespace; return what was observed.

        ``extra`` commands (argv lists, run with cloud-init's interpreter and
        environment) run after the stages, e.g. what a unit's ExecStart would run.
        """
        self.boots += 1
        result = self.base / "results" / f"boot{self.boots}.json"
        spec = {
            "host_mnt_ns": os.readlink("/proc/self/ns/mnt"),
            "first_boot": self.boots == 1,
            "etc_upper": str(self.base / "etc-upper"),
            "etc_work": str(self.base / "etc-work"),
            "var_upper": str(self.base / "var-upper"),
            "var_work": str(self.base / "var-work"),
            "standin": str(self.standin_dir / "systemctl"),
            "standin_dir": str(self.standin_dir),
            "entry": self.cloudinit.entry,
            "pythonpath": [*self.cloudinit.pythonpath, str(self.site)],
            "extra": extra or [],
            "result": str(result),
        }
        spec_path = self.base / "results" / f"boot{self.boots}.spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        proc = subprocess.run(
            ["unshare", "-m", "-u", "-n", "--propagation", "private", "--",
             sys.executable, str(Path(__file__).resolve()), "inner", str(spec_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BOOT_TIMEOUT,
            check=False, text=True,
        )
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"sandboxed boot failed ({proc.returncode}):\n{proc.stdout}")
        data: Dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
        return data


# ----------------------------------------------------------------------------
# Inside the namespace.
# ----------------------------------------------------------------------------


def _sh(argv: List[str]) -> None:
    subprocess.run(argv, check=True, timeout=60)


def _mount_sandbox(spec: Dict[str, Any]) -> None:
    """Overlays and tmpfs; refuses to run in the host's own mount namespace."""
    if os.readlink("/proc/self/ns/mnt") == spec["host_mnt_ns"]:
        raise SystemExit("refusing to mount: not in a private mount namespace")
    for top in ("etc", "var"):
        _sh(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir=/{top},upperdir={spec[top + '_upper']},workdir={spec[top + '_work']}",
             f"/{top}"])
    _sh(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"])
    for real in ("/usr/bin/systemctl", "/bin/systemctl"):
        if os.path.exists(real) and not os.path.samefile(real, spec["standin"]):
            _sh(["mount", "--bind", spec["standin"], real])
    if os.path.exists("/dev/console"):
        _sh(["mount", "--bind", "/dev/null", "/dev/console"])


def _environment(spec: Dict[str, Any]) -> Dict[str, str]:
    """A boot-like environment: nothing from the test runner's venv leaks in."""
    return {
        "PATH": f"{spec['standin_dir']}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
                ":/sbin:/bin",
        "PYTHONPATH": ":".join(spec["pythonpath"]),
        "LANG": "C.UTF-8",
        "HOME": "/root",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _run(argv: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    """Run one command, bounded; ``seconds`` is for diagnosis only, never asserted."""
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True,
                              text=True, timeout=STAGE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        return {"argv": argv, "rc": None, "stdout": str(err.stdout or ""),
                "stderr": f"timed out after {STAGE_TIMEOUT}s", "seconds": STAGE_TIMEOUT}
    return {"argv": argv, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": round(time.monotonic() - start, 2)}


def _snapshot(top: str) -> Dict[str, Dict[str, Any]]:
    """Every entry under ``top``: type, inode, mtime, mode and (small) text or link target."""
    out: Dict[str, Dict[str, Any]] = {}
    if not os.path.lexists(top):
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry: Dict[str, Any] = {"ino": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                     "mode": st.st_mode & 0o7777}
            if os.path.islink(path):
                entry.update(type="link", target=os.readlink(path))
            elif os.path.isdir(path):
                entry["type"] = "dir"
            else:
                entry["type"] = "file"
                if st.st_size <= 256 * 1024:
                    with open(path, encoding="utf-8", errors="replace") as handle:
                        entry["text"] = handle.read()
            out[path] = entry
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def inner(spec_path: str) -> int:
    """Mount the sandbox, prepare it on first boot, run the stages, record everything."""
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    _mount_sandbox(spec)
    env = _environment(spec)
    result: Dict[str, Any] = {"prepare": []}
    python = "/usr/bin/python3"
    if spec["first_boot"]:
        # setup-dev disables the dev host's own cloud-init with this marker;
        # the sandbox is a different "machine", so remove it in the overlay.
        if os.path.exists("/etc/cloud/cloud-init.disabled"):
            os.unlink("/etc/cloud/cloud-init.disabled")
        os.makedirs(os.path.dirname(SANDBOX_CFG), exist_ok=True)
        with open(SANDBOX_CFG, "w", encoding="utf-8") as handle:
            handle.write(SANDBOX_CFG_TEXT)
        result["prepare"].append(
            _run([python, "-m", "cloudinit_hostrouting", "enable-module", "--root", "/"], env)
        )
    # Which systemctl the module's run(["systemctl", ...]) resolves to, under the
    # environment cloud-init and its subprocesses inherit.
    result["which_systemctl"] = shutil.which("systemctl", path=env["PATH"])
    log_before = len(_read("/var/log/cloud-init.log"))
    result["stages"] = []
    for stage, args in STAGES:
        stage_env = dict(env, SANDBOX_STAGE=stage)
        result["stages"].append(dict(_run([spec["entry"], *args], stage_env), stage=stage))
    status_env = dict(env, SANDBOX_STAGE="status")
    result["status"] = _run([spec["entry"], "status", "--long"], status_env)
    result["extra"] = [_run(argv, dict(env, SANDBOX_STAGE="extra")) for argv in spec["extra"]]
    result["cloud_init_log"] = _read("/var/log/cloud-init.log")[log_before:]
    result["iid"] = _read("/var/lib/cloud/data/instance-id").strip()
    result["sem"] = sorted(
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk("/var/lib/cloud/instances")
        for name in names
        if os.path.basename(dirpath) == "sem"
    )
    result["tree"] = {}
    for top in SNAPSHOT_DIRS:
        result["tree"].update(_snapshot(top))
    with open(spec["result"], "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "inner":
        sys.exit(inner(sys.argv[2]))
    sys.exit("usage: cloudinit_sandbox.py inner SPEC.json  (run by Sandbox.boot)")
