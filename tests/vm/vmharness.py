"""Harness for the first-boot VM suite: image building, seeding, booting, evidence.

Everything here is plain Python plus a handful of host tools (mmdebstrap, qemu,
cloud-localds, mkfs.ext4, tar, unshare, chroot). It is used by conftest.py and
by build_image.py (the standalone CLI). See the docstring of conftest.py for
what the suite proves and how to run it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# The Debian archive this machine's apt uses (scripts/debian-mirror); HR_VM_MIRROR overrides.
MIRROR = os.environ.get("HR_VM_MIRROR") or subprocess.run(
    [sys.executable, str(REPO_ROOT / "scripts" / "debian-mirror")],
    stdout=subprocess.PIPE, text=True, timeout=60, check=True).stdout.strip()
CACHE_DIR = Path(os.environ.get("HR_VM_CACHE", "/var/cache/cloudinit-hostrouting-vm"))
WORK_BASE = Path(os.environ.get("HR_VM_WORKDIR", "/var/tmp/cloudinit-hostrouting-vm"))
# A quiet 2-core host needs ~2-3 min per boot; a loaded one several times that.
BOOT_TIMEOUT = int(os.environ.get("HR_VM_BOOT_TIMEOUT", "1200"))
# qemu64 rather than max: under TCG, max exposes AVX2 etc. that glibc then
# uses through slow emulation; measured ~10% slower boots with max.
VM_CPU = os.environ.get("HR_VM_CPU", "qemu64")
# One vCPU: Debian 13's 6.12 kernel sometimes oopses (int3 in sched_clock_cpu
# while live-patching static keys) with 2 vCPUs under multi-threaded TCG.
VM_SMP = int(os.environ.get("HR_VM_SMP", "1"))
VM_MEMORY_MB = int(os.environ.get("HR_VM_MEMORY", "1536"))

# Bump when the base-tar recipe changes in a way the package list does not show.
BASE_RECIPE_VERSION = 1

SUITES = {
    # suite: Debian release (how /etc/debian_version starts), init-stage unit of
    # cloud-init, extra mmdebstrap options
    "bookworm": {"release": "12", "init_unit": "cloud-init.service", "mmdebstrap": []},
    "trixie": {"release": "13", "init_unit": "cloud-init-network.service", "mmdebstrap": []},
    # forky is Debian testing: its Release file is short-lived (Valid-Until a
    # few days ahead), and the archive reachable here may serve one past its
    # Valid-Until, which apt then refuses.  The signature is still checked;
    # only the expiry is ignored, and for this suite only (as in tests/deb).
    "forky": {"release": "forky", "init_unit": "cloud-init-network.service",
              "mmdebstrap": ['--aptopt=Acquire::Check-Valid-Until "false"']},
}

BASE_PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "iproute2", "procps", "kmod",
    "cloud-init", "python3-pyroute2", "python3-yaml", "python3-pip",
    "linux-image-cloud-amd64", "initramfs-tools",
    "systemd-container", "busybox-static",
    # cloud-init's resizefs needs resize2fs (else status: error)
    "e2fsprogs",
    # cloud-init's ssh module generates host keys with ssh-keygen whether or not
    # sshd is installed; without it 25.1 reports recoverable errors ("degraded")
    "openssh-client",
]

# NIC layout. eth0 is the "normal outbound" NIC (qemu user net, restrict=on:
# nothing leaves the host process). The second NIC is renamed ib0 by a .link
# file and given 10.0.200.5/16, which shadows 10.0.5.0/24 like an IPoIB /16.
ETH0_MAC = "52:54:00:12:34:10"
IB0_MAC = "52:54:00:00:1b:01"
ETH0_ADDR = "10.0.2.15/24"
ETH0_GW = "10.0.2.2"
IB0_ADDR = "10.0.200.5/16"
# The Hyper-V KVP pool the host writes (hv_kvp_daemon) and WALinuxAgent reads
# for the IPoIB addresses it assigns later (issue 12, NOTES §4).
KVP_POOL = "/var/lib/hyperv/.kvp_pool_0"
# A KVP MAC is the link's address as 12 upper-case hex digits, no separators.
IB0_KVP_MAC = IB0_MAC.replace(":", "").upper()
LATE_UNIT = "vmtest-late-ipoib.service"
# How long the stand-in for waagent waits before it assigns ib0's address.
LATE_DELAY_S = 20
ROOT_LABEL = "hrvmroot"
MACHINE = "m1"

# Units the package writes (contract with cloudinit_hostrouting).
UNIT_STATIC = "hostrouting-static-routes.service"
UNIT_OVERLAP = "hostrouting-route-overlap.service"
UNIT_MACHINE = f"systemd-nspawn@{MACHINE}.service"
DROPIN = "/etc/systemd/system/systemd-nspawn@.service.d/50-hostrouting.conf"
EVIDENCE_UNIT = "vmtest-evidence.service"

_print_lock = threading.Lock()
# conftest.py swaps in a context manager that suspends pytest's output capture
LOG_GUARD = contextlib.nullcontext


def log(msg: str) -> None:
    """Print a progress line immediately (also under pytest's capture)."""
    with _print_lock, LOG_GUARD():
        sys.stderr.write(f"[vm {time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stderr.flush()


class HarnessError(RuntimeError):
    """The harness itself could not do its job (missing tool, build failure)."""


@dataclass
class Timings:
    entries: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.monotonic()
        log(f"{name}: start")
        ok = False
        try:
            yield
            ok = True
        finally:
            dt = time.monotonic() - t0
            with self.lock:
                self.entries.append((name, dt, ok))
            log(f"{name}: {'done' if ok else 'FAILED'} in {dt:.1f}s")

    def table(self) -> str:
        lines = [f"  {name:<48} {dt:7.1f}s{'' if ok else '  (failed)'}"
                 for name, dt, ok in self.entries]
        return "\n".join(lines)


TIMINGS = Timings()


# --------------------------------------------------------------------------
# host prerequisites
# --------------------------------------------------------------------------

REQUIRED_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "qemu-system-x86_64": "qemu-system-x86",
    "cloud-localds": "cloud-image-utils",
    "mkfs.ext4": "e2fsprogs",
    "unshare": "util-linux",
    "chroot": "coreutils",
    "timeout": "coreutils",
    "tar": "tar",
}


def check_host() -> None:
    """Raise HarnessError naming every missing prerequisite (never skip silently)."""
    problems = []
    for tool, pkg in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"'{tool}' not found (Debian package {pkg})")
    if os.geteuid() != 0:
        problems.append("must run as root (mmdebstrap root mode, chroot, mkfs -d with owners)")
    for kr in ("/usr/share/keyrings/debian-archive-keyring.gpg",):
        if not os.path.exists(kr):
            problems.append(f"{kr} missing (Debian package debian-archive-keyring)")
    if problems:
        raise HarnessError(
            "VM first-boot suite cannot run on this host:\n  - " + "\n  - ".join(problems)
            + "\nInstall with: apt-get install -y mmdebstrap qemu-system-x86 cloud-image-utils "
            "e2fsprogs debian-archive-keyring")


def run(cmd, *, check=True, timeout=None, input=None, cwd=None, env=None, quiet=False):
    """Run a command, capture output, raise HarnessError with the output on failure."""
    p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env=env)
    if check and p.returncode != 0:
        raise HarnessError(
            f"command failed (rc={p.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout (tail) ---\n{p.stdout[-4000:]}\n--- stderr (tail) ---\n{p.stderr[-4000:]}")
    return p


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# base rootfs tar (cached)
# --------------------------------------------------------------------------

def base_key(suite: str) -> str:
    blob = json.dumps({"suite": suite, "packages": sorted(BASE_PACKAGES), "variant": "minbase",
                       "mirror": MIRROR, "recipe": BASE_RECIPE_VERSION,
                       "options": SUITES[suite]["mmdebstrap"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_tar(suite: str) -> Path:
    """Return the cached mmdebstrap tar for `suite`, building it on a cold cache."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{suite}-{base_key(suite)}.tar"
    with file_lock(CACHE_DIR / f".{suite}.lock"):
        if path.exists():
            log(f"base tar cached: {path}")
            return path
        tmp = path.with_suffix(".tar.partial")
        with TIMINGS.stage(f"{suite}: mmdebstrap base (cold cache)"):
            run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                 "--aptopt=Acquire::Retries \"3\"", *SUITES[suite]["mmdebstrap"],
                 "--include=" + ",".join(BASE_PACKAGES), suite, str(tmp), MIRROR],
                timeout=1800)
        os.replace(tmp, path)
        # drop stale tars of the same suite (other keys)
        for old in CACHE_DIR.glob(f"{suite}-*.tar"):
            if old != path:
                old.unlink(missing_ok=True)
        return path


# --------------------------------------------------------------------------
# the wheel (built from the working tree)
# --------------------------------------------------------------------------

def build_wheel(outdir: Path) -> Path:
    """Build the project wheel from the working tree, the way the README says.

    HR_VM_WHEEL=/path/to.whl uses a prebuilt wheel instead.
    """
    pre = os.environ.get("HR_VM_WHEEL")
    if pre:
        p = Path(pre)
        if not p.is_file():
            raise HarnessError(f"HR_VM_WHEEL={pre} does not exist")
        return p
    if not (REPO_ROOT / "setup.py").exists() and not (REPO_ROOT / "pyproject.toml").exists():
        raise HarnessError(f"no setup.py/pyproject.toml in {REPO_ROOT}: no package to build")
    outdir.mkdir(parents=True, exist_ok=True)
    errors = []
    # Debian's python3 first (python3-setuptools + python3-wheel, as on a baking
    # host), then the interpreter running pytest.
    for py in dict.fromkeys(["/usr/bin/python3", sys.executable]):
        if not os.path.exists(py):
            continue
        for old in outdir.glob("*.whl"):
            old.unlink()
        t0 = time.monotonic()
        p = run([py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(outdir), str(REPO_ROOT)], check=False, timeout=600)
        wheels = sorted(outdir.glob("cloudinit_hostrouting-*.whl"))
        if p.returncode == 0 and wheels:
            with TIMINGS.lock:
                TIMINGS.entries.append((f"wheel build ({py})", time.monotonic() - t0, True))
            return wheels[-1]
        errors.append(f"{py}: rc={p.returncode}\n{p.stderr[-2000:]}")
    raise HarnessError("could not build the wheel:\n" + "\n".join(errors))


def build_deb(outdir: Path) -> Path:
    """Build the .deb from the working tree with ``scripts/build-deb`` (as tests/deb does).

    HR_VM_DEB (or HR_DEB, the deb suite's variable) = /path/to.deb uses a prebuilt one.
    """
    pre = os.environ.get("HR_VM_DEB") or os.environ.get("HR_DEB")
    if pre:
        p = Path(pre)
        if not p.is_file():
            raise HarnessError(f"HR_VM_DEB/HR_DEB={pre} does not exist")
        return p
    outdir.mkdir(parents=True, exist_ok=True)
    with TIMINGS.stage("deb build (scripts/build-deb)"):
        p = run([str(REPO_ROOT / "scripts" / "build-deb"), str(outdir)], timeout=600)
    return Path(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# guest image
# --------------------------------------------------------------------------

IB0_LINK = f"""\
# vmtest: rename the second NIC to ib0 (stands in for an IPoIB interface)
[Match]
MACAddress={IB0_MAC}

[Link]
Name=ib0
"""

IB0_NETWORK = f"""\
# vmtest: the IB /16 that shadows the cluster CIDR 10.0.5.0/24
[Match]
Name=ib0

[Link]
RequiredForOnline=no

[Network]
Address={IB0_ADDR}
LinkLocalAddressing=no
IPv6AcceptRA=no
"""

# Image-level cloud-init settings that are not under test:
# - datasource_list only narrows probing to the seed we attach;
# - one host key type (ed25519), the cheapest to generate under TCG.
CLOUD_VMTEST_CFG = """\
datasource_list: [NoCloud, None]
ssh_genkeytypes: [ed25519]
"""

M1_INITTAB = """\
::sysinit:/bin/echo m1: busybox init up
::respawn:/bin/sleep 86400
::shutdown:/bin/echo m1: shutting down
"""

# systemd-nspawn --boot stops a machine with SIGRTMIN+3 (systemd's convention);
# busybox init powers off on SIGUSR2. Without this, stopping m1 at guest
# poweroff waits for the 90 s stop timeout. Startup/dependencies are untouched:
# the stock systemd-nspawn@.service is used as is.
M1_NSPAWN = """\
[Exec]
KillSignal=SIGUSR2
"""

M1_OS_RELEASE = 'NAME="vmtest busybox machine"\nID=busybox\nPRETTY_NAME="busybox m1"\n'

# The race variants (issue 12): ib0 comes up without an address; the address
# is added late by LATE_UNIT, as WALinuxAgent (OS.EnableRDMA=y) does on Azure
# HPC images after cloud-init has finished.
IB0_NETWORK_LATE = """\
# vmtest: ib0 up, no address yet: it comes later from vmtest-late-ipoib.service
[Match]
Name=ib0

[Link]
RequiredForOnline=no

[Network]
LinkLocalAddressing=no
IPv6AcceptRA=no
"""

# Ordered after cloud-final and after our oneshots: the address must arrive
# after the check has judged, whatever the emulator's speed (waagent itself is
# After=network-online.target and cloud-init and waits for the RDMA devices;
# the sleep stands in for that wait). WantedBy cloud-final, not
# multi-user.target (an ordering cycle, as for the evidence unit).
LATE_SERVICE = f"""\
[Unit]
Description=vmtest: add ib0's IPoIB address late, as WALinuxAgent does
After=cloud-final.service {UNIT_STATIC} {UNIT_OVERLAP} {UNIT_MACHINE}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sleep {LATE_DELAY_S}
ExecStart=/sbin/ip addr add {IB0_ADDR} dev ib0

[Install]
WantedBy=cloud-final.service
"""

WAAGENT_CONF = """\
# vmtest: what the Azure HPC images set; it makes the anticipate rule "auto" apply
OS.EnableRDMA=y
"""


def kvp_record(key: str, value: str) -> bytes:
    """One record of a Hyper-V KVP pool file: 512-byte key, 2048-byte value, NUL-padded
    (``struct kvp_record`` of the kernel's tools/hv/hv_kvp_daemon.c)."""
    k, v = key.encode(), value.encode()
    assert len(k) < 512 and len(v) < 2048
    return k.ljust(512, b"\0") + v.ljust(2048, b"\0")


KVP_POOL_BYTES = kvp_record("IPoIB_Data", f"NUMPAIRS:1|{IB0_KVP_MAC}:{IB0_ADDR.split('/')[0]}")

# Per variant: files added to the image (path -> (content, mode)); None removes.
VARIANTS: dict = {
    "std": {"/etc/systemd/network/20-vmtest-ib0.network": (IB0_NETWORK, 0o644)},
    "race": {"/etc/systemd/network/20-vmtest-ib0.network": (IB0_NETWORK_LATE, 0o644),
             f"/etc/systemd/system/{LATE_UNIT}": (LATE_SERVICE, 0o644),
             f"/etc/systemd/system/cloud-final.service.wants/{LATE_UNIT}":
                 (f"/etc/systemd/system/{LATE_UNIT}", "symlink"),
             "/etc/waagent.conf": (WAAGENT_CONF, 0o644),
             KVP_POOL: (KVP_POOL_BYTES, 0o600)},
}
VARIANTS["race_nokvp"] = {k: v for k, v in VARIANTS["race"].items() if k != KVP_POOL}

EVIDENCE_SERVICE = f"""\
[Unit]
Description=vmtest: collect first-boot evidence, then power off
# After cloud-final (the last cloud-init stage). Pulled in by cloud-final via
# WantedBy below: WantedBy=multi-user.target would be an ordering cycle.
# After the late IPoIB address of the race variants (absent elsewhere).
After=cloud-final.service {UNIT_STATIC} {UNIT_OVERLAP} {UNIT_MACHINE} {LATE_UNIT}

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmtest-evidence
StandardOutput=journal+console
TimeoutStartSec=300

[Install]
WantedBy=cloud-final.service
"""

EVIDENCE_SCRIPT = r"""#!/bin/bash
# vmtest: gather evidence of the first boot, write it as a tar onto the raw
# virtio disk with serial "evidence", then power off.
set -u
E=/run/vmtest-evidence
rm -rf "$E"; mkdir -p "$E"
cap() {  # cap NAME CMD... : stdout+stderr to NAME, exit code to NAME.rc
  local n=$1; shift
  timeout 120 "$@" >"$E/$n" 2>&1
  echo $? >"$E/$n.rc"
}
echo "vmtest-evidence: collecting"
# give a wrongly-queued machine start a chance to show up
sleep 3
date -u +%FT%TZ >"$E/collected_at"
cat /proc/uptime >"$E/uptime"
# (python start-ups cost seconds under TCG: keep them to the one that matters)
cap versions.txt sh -c 'cat /etc/debian_version; uname -r; readlink -f /usr/bin/python3
  dpkg-query -W cloud-init systemd python3-pyroute2 python3-pip
  dpkg-query -W -f "\${Package} \${Status}\n" cloudinit-hostrouting
  ls -d /usr/local/lib/python3*/dist-packages/cloudinit_hostrouting* \
        /usr/local/bin/cloudinit-hostrouting \
        /usr/lib/python3/dist-packages/cloudinit_hostrouting /usr/bin/cloudinit-hostrouting'
cap routes.txt ip -4 route show table main
cap routes_all.txt ip -4 route show table all
cap addr.txt ip -4 -o addr show
cap links.txt ip -o link show
for p in 10.0.5.1 10.0.6.1 10.0.77.1; do cap "route_get_$p.txt" ip -4 route get "$p"; done
cap status.txt cloud-init status --long
# not plain "done": let cloud-init say which schema problems it saw
if [ "$(cat "$E/status.txt.rc")" != 0 ]; then
  cap schema_system.txt cloud-init schema --system
fi
for u in hostrouting-static-routes.service hostrouting-route-overlap.service \
         hostrouting-guard.service systemd-nspawn@m1.service \
         cloud-init-local.service cloud-init.service \
         cloud-init-network.service cloud-config.service cloud-final.service \
         machines.target systemd-networkd.service vmtest-late-ipoib.service; do
  cap "show_$u.txt" systemctl show "$u"
  cap "cat_$u.txt" systemctl cat "$u"
done
# The guard scenario: networkd drops foreign routes when it reconfigures a
# link; the guard must restore ours (proto 214). Poll with a bound, TCG is slow.
if systemctl -q is-active hostrouting-guard.service; then
  cap guard_routes_before.txt ip -4 route show proto 214
  cap guard_reconfigure.txt networkctl reconfigure eth0
  for i in $(seq 1 240); do
    sleep 0.5
    journalctl -b -u hostrouting-guard.service --no-pager | grep -q 'guard: restored' && break
  done
  cap guard_routes_after.txt ip -4 route show proto 214
  cap guard_route_get.txt ip -4 route get 10.0.5.1
  cap journal_guard.txt journalctl -b -o short-monotonic --no-pager \
    -u hostrouting-guard.service -u systemd-networkd.service
fi
cap jobs.txt systemctl list-jobs --no-pager
cap failed.txt systemctl --failed --no-pager
cap machinectl.txt machinectl list --no-pager
cap journal_job_m1.json journalctl -b -o json --no-pager UNIT=systemd-nspawn@m1.service
cap journal_ours.txt journalctl -b -o short-monotonic --no-pager \
  -u hostrouting-static-routes.service -u hostrouting-route-overlap.service \
  -u systemd-nspawn@m1.service -u vmtest-late-ipoib.service
cap journal_full.txt journalctl -b -o short-monotonic --no-pager
cap find_etc.txt find /etc/systemd/system /etc/systemd/network /etc/cloudinit-hostrouting \
  /etc/iproute2 /etc/cloud/cloud.cfg.d /run/cloudinit-hostrouting /var/lib/hyperv /etc/waagent.conf
mkdir -p "$E/files"
for f in /etc/cloudinit-hostrouting /run/cloudinit-hostrouting \
         /etc/systemd/system/systemd-nspawn@.service.d \
         /etc/systemd/system/hostrouting-static-routes.service \
         /etc/systemd/system/hostrouting-route-overlap.service \
         /var/log/cloud-init.log /var/log/cloud-init-output.log /etc/cloud/cloud.cfg.d \
         /etc/systemd/network /etc/iproute2 /var/lib/cloud/instance/sem \
         /run/cloud-init/status.json /run/cloud-init/result.json /etc/waagent.conf; do
  [ -e "$f" ] && cp -rL --preserve=mode,timestamps --parents "$f" "$E/files/" 2>/dev/null
done
echo ok >"$E/complete"
DEV=/dev/disk/by-id/virtio-evidence
for i in $(seq 1 20); do [ -b "$DEV" ] && break; sleep 0.5; done
if tar -C "$E" -cf "$DEV" . && sync; then
  echo "vmtest-evidence: written to $DEV"
else
  echo "vmtest-evidence: FAILED to write $DEV"
fi
systemctl --no-block poweroff
"""

# 1.-2. install the package and enable the module, the two ways the README
# tells image bakers.
INSTALL_DEB = r"""
# apt, from the directory holding the .deb: the dependencies are in the base,
# and postinst runs enable-module
cd /root/vmtest && apt-get install -y ./{artifact}
dpkg-query -W -f '${Status}\n' cloudinit-hostrouting | grep -qx 'install ok installed'
test -s /etc/cloud/cloud.cfg.d/99_zz-cloudinit-hostrouting.cfg
cd /
"""
INSTALL_PIP = r"""
/usr/bin/python3 -m pip install --no-index --no-deps --break-system-packages /root/vmtest/{artifact}
/usr/bin/python3 -m pip show cloudinit-hostrouting
command -v cloudinit-hostrouting
cloudinit-hostrouting enable-module
"""

CHROOT_SCRIPT = r"""
set -eux
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
{install}
# 3. the node's nspawn machine, started at boot under machines.target
M=/var/lib/machines/m1
mkdir -p $M/bin $M/sbin $M/usr/bin $M/usr/sbin
cp /bin/busybox $M/bin/busybox
chroot $M /bin/busybox --install -s
systemctl enable systemd-networkd.service machines.target systemd-nspawn@m1.service \
    vmtest-evidence.service
# firstboot would prompt on the console; timers are noise
systemctl mask systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer
passwd -d root
# the ib0 .link must be in the initramfs too
update-initramfs -u -k all
lsinitramfs /boot/initrd.img-* | grep -q 'systemd/network/10-vmtest-ib0.link$' \
    || { echo "ib0 .link is missing from the initramfs" >&2; exit 1; }
"""


def _chroot(root: Path, script: str, timeout=900):
    """Run `script` with /bin/sh in a chroot, inside a private mount namespace
    (so /proc, /dev, /sys mounts vanish with it)."""
    wrapper = (
        f"set -e; R={root}; mount -t proc proc $R/proc; mount --rbind /dev $R/dev; "
        f"mount -t sysfs sysfs $R/sys; exec chroot $R /bin/sh -s")
    return run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", wrapper],
               input=script, timeout=timeout)


def _write(path: Path, text: str, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@dataclass
class Image:
    suite: str
    dir: Path
    kernel: Path
    initrd: Path
    install: str
    artifact: Path
    disks: dict = field(default_factory=dict)
    install_log: str = ""


def _place(root: Path, files: dict) -> list:
    """Write a variant's files into ``root``; return the paths written."""
    placed = []
    for guest, (content, mode) in files.items():
        target = root / guest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if mode == "symlink":
            target.symlink_to(content)
        elif isinstance(content, bytes):
            target.write_bytes(content)
            target.chmod(mode)
        else:
            _write(target, content, mode)
        placed.append(target)
    return placed


def build_image(suite: str, install: str, artifact: Path, workdir: Path,
                variants: tuple = ("std",)) -> Image:
    """Unpack the cached base, install the package (``deb`` or ``pip``), enable
    module + machine, then one raw ext4 disk per variant (only the variant's
    files differ; none of them is in the initramfs)."""
    if install not in ("deb", "pip"):
        raise HarnessError(f"unknown install method {install!r}")
    tar = base_tar(suite)
    d = workdir / f"image-{suite}-{install}"
    if d.exists():
        shutil.rmtree(d)
    root = d / "root"
    root.mkdir(parents=True)
    with TIMINGS.stage(f"{suite}/{install}: image customise + mkfs x{len(variants)}"):
        run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(root)], timeout=600)
        (root / "root/vmtest").mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact, root / "root/vmtest" / artifact.name)
        _write(root / "etc/systemd/network/10-vmtest-ib0.link", IB0_LINK)
        _write(root / "etc/cloud/cloud.cfg.d/05-vmtest.cfg", CLOUD_VMTEST_CFG)
        m1 = root / "var/lib/machines" / MACHINE
        for sub in ("etc", "dev", "proc", "sys", "tmp", "run", "root", "var"):
            (m1 / sub).mkdir(parents=True, exist_ok=True)
        _write(m1 / "etc/inittab", M1_INITTAB)
        _write(m1 / "etc/os-release", M1_OS_RELEASE)
        _write(root / f"etc/systemd/nspawn/{MACHINE}.nspawn", M1_NSPAWN)
        _write(root / f"etc/systemd/system/{EVIDENCE_UNIT}", EVIDENCE_SERVICE)
        _write(root / "usr/local/sbin/vmtest-evidence", EVIDENCE_SCRIPT, 0o755)
        steps = (INSTALL_DEB if install == "deb" else INSTALL_PIP).replace(
            "{artifact}", artifact.name)
        p = _chroot(root, CHROOT_SCRIPT.replace("{install}", steps))
        install_log = p.stdout + p.stderr
        shutil.rmtree(root / "root/vmtest")
        (root / "etc/hostname").write_text("vmtest\n")
        kernels = sorted(glob.glob(str(root / "boot/vmlinuz-*")))
        initrds = sorted(glob.glob(str(root / "boot/initrd.img-*")))
        if not kernels or not initrds:
            raise HarnessError(f"no kernel/initrd in {root}/boot")
        kernel, initrd = d / "vmlinuz", d / "initrd.img"
        shutil.copy2(kernels[-1], kernel)
        shutil.copy2(initrds[-1], initrd)
        disks = {}
        for variant in variants:
            placed = _place(root, VARIANTS[variant])
            disk = d / f"root-{variant}.img"
            with open(disk, "wb") as fh:
                fh.truncate(3 * 1024 ** 3)
            run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(disk)],
                timeout=600)
            for target in placed:
                target.unlink()
            disks[variant] = disk
        shutil.rmtree(root)
    return Image(suite=suite, dir=d, kernel=kernel, initrd=initrd, install=install,
                 artifact=artifact, disks=disks, install_log=install_log)


# --------------------------------------------------------------------------
# seed + boot
# --------------------------------------------------------------------------

NETWORK_CONFIG = f"""\
version: 2
ethernets:
  eth0:
    addresses: [{ETH0_ADDR}]
    routes:
      - to: 0.0.0.0/0
        via: {ETH0_GW}
"""


def make_seed(path: Path, user_data: str, instance_id: str) -> None:
    d = path.parent
    ud, md, nc = d / "user-data", d / "meta-data", d / "network-config"
    ud.write_text(user_data)
    md.write_text(f"instance-id: {instance_id}\nlocal-hostname: node-{instance_id[-8:]}\n")
    nc.write_text(NETWORK_CONFIG)
    run(["cloud-localds", "-N", str(nc), str(path), str(ud), str(md)])


@dataclass
class BootResult:
    suite: str
    scenario: str
    dir: Path
    serial_log: Path
    evidence_dir: Path
    returncode: int
    duration: float
    timed_out: bool
    evidence_ok: bool

    # ---- evidence accessors ------------------------------------------------
    def text(self, name: str) -> str:
        p = self.evidence_dir / name
        return p.read_text(errors="replace") if p.exists() else ""

    def rc(self, name: str) -> int | None:
        t = self.text(name + ".rc").strip()
        return int(t) if t else None

    def exists(self, guest_path: str) -> bool:
        """Did `guest_path` exist at collection time (from find_etc.txt)?"""
        return guest_path in self.text("find_etc.txt").split("\n")

    def file(self, guest_path: str) -> str | None:
        p = self.evidence_dir / "files" / guest_path.lstrip("/")
        return p.read_text(errors="replace") if p.exists() else None

    def show(self, unit: str) -> dict:
        props = {}
        for line in self.text(f"show_{unit}.txt").splitlines():
            k, sep, v = line.partition("=")
            if sep:
                props[k] = v
        return props

    def job_results(self, unit: str = UNIT_MACHINE) -> list[tuple[str, str, str]]:
        """(JOB_TYPE, JOB_RESULT, MESSAGE) of systemd's job-completion journal entries."""
        out = []
        for line in self.text("journal_job_m1.json").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("UNIT") == unit and e.get("JOB_RESULT"):
                out.append((e.get("JOB_TYPE", ""), e["JOB_RESULT"], str(e.get("MESSAGE", ""))))
        return out

    def unit_runtimes(self) -> dict:
        """Seconds from ExecMainStart to ExecMainExit of our oneshots (guest monotonic
        clock, from ``systemctl show``); None for a unit that did not run."""
        out = {}
        for unit in (UNIT_STATIC, UNIT_OVERLAP):
            props = self.show(unit)
            start = int(props.get("ExecMainStartTimestampMonotonic") or 0)
            end = int(props.get("ExecMainExitTimestampMonotonic") or 0)
            out[unit] = (end - start) / 1e6 if start and end >= start else None
        return out

    def serial_tail(self, n=80) -> str:
        if not self.serial_log.exists():
            return "(no serial log)"
        lines = self.serial_log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def diagnostics(self) -> str:
        """What a red run should print: serial tail + our journal lines + status."""
        parts = [f"=== {self.suite}/{self.scenario}: qemu rc={self.returncode} "
                 f"timed_out={self.timed_out} evidence={'yes' if self.evidence_ok else 'NO'} "
                 f"({self.duration:.0f}s) artifacts: {self.dir}"]
        if self.evidence_ok:
            parts.append(f"--- cloud-init status --long (rc={self.rc('status.txt')}) ---\n"
                         + self.text("status.txt"))
            parts.append("--- ip -4 route ---\n" + self.text("routes.txt"))
            for p in ("10.0.5.1", "10.0.77.1"):
                parts.append(f"--- ip -4 route get {p} ---\n" + self.text(f"route_get_{p}.txt"))
            ours = self.text("journal_ours.txt").splitlines()[-60:]
            parts.append("--- journal (hostrouting units + machine) ---\n" + "\n".join(ours))
            cil = self.file("/var/log/cloud-init.log") or ""
            rel = [line for line in cil.splitlines()
                   if any(k in line for k in ("host_routing", "hostrouting", "WARNING", "ERROR"))]
            parts.append("--- cloud-init.log (host_routing/WARNING/ERROR lines) ---\n"
                         + "\n".join(rel[-40:]))
        parts.append("--- serial log tail ---\n" + self.serial_tail())
        return "\n".join(parts)


def _kill_group(proc: subprocess.Popen):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


_LIVE = set()
_LIVE_LOCK = threading.Lock()


def kill_all_live():
    """Teardown hook: kill every qemu process group this harness started."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        _kill_group(p)


atexit.register(kill_all_live)


def install_signal_handlers():
    """SIGTERM/SIGHUP: kill our qemu groups, then exit (call from the main thread)."""
    def handler(signum, frame):
        kill_all_live()
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def early_kernel_panic(serial: Path) -> bool:
    """The guest kernel died before starting userspace (never our code)."""
    if not serial.exists():
        return False
    text = serial.read_text(errors="replace")
    return "Kernel panic" in text and "Run /init as init process" not in text


def boot(image: Image, scenario: str, user_data: str, workdir: Path, *, variant: str = "std",
         smp: int = VM_SMP, timeout: int = BOOT_TIMEOUT, cpu: str | None = None) -> BootResult:
    """First boot of `image` with `user_data` as NoCloud seed; collect evidence.

    A guest kernel that panics before it runs /init is an emulator flake, not a
    result: that boot is retried once, and said so.
    """
    r = _boot_once(image, scenario, user_data, workdir, variant=variant, smp=smp,
                   timeout=timeout, cpu=cpu)
    if not r.evidence_ok and early_kernel_panic(r.serial_log):
        log(f"{image.suite}/{scenario}: guest kernel panicked before /init "
            f"(TCG flake; serial log kept as {r.dir.name}-panic); retrying once")
        keep = r.dir.with_name(r.dir.name + "-panic")
        shutil.rmtree(keep, ignore_errors=True)
        r.dir.rename(keep)
        r = _boot_once(image, scenario, user_data, workdir, variant=variant, smp=smp,
                   timeout=timeout, cpu=cpu)
    return r


def _boot_once(image: Image, scenario: str, user_data: str, workdir: Path, *, variant: str,
               smp: int, timeout: int, cpu: str | None) -> BootResult:
    d = workdir / f"boot-{image.suite}-{scenario}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    iid = f"iid-{image.suite}-{scenario}-{os.urandom(4).hex()}"
    seed = d / "seed.iso"
    make_seed(seed, user_data, iid)
    evidence_raw = d / "evidence.raw"
    with open(evidence_raw, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    serial = d / "serial.log"
    # (no journald forwarding to the console: every byte on the emulated UART
    # costs; the journal comes out with the evidence instead)
    cmdline = f"root=LABEL={ROOT_LABEL} rw console=ttyS0 panic=-1 net.ifnames=0"
    cmd = [
        "timeout", "--signal=KILL", str(timeout),
        "qemu-system-x86_64", "-name", f"vmtest-{image.suite}-{scenario}",
        "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", cpu or VM_CPU,
        "-smp", str(smp), "-m", str(VM_MEMORY_MB),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{serial}", "-monitor", "none",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
        "-drive", f"file={image.disks[variant]},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-drive", f"file={evidence_raw},if=none,id=ev,format=raw",
        "-device", "virtio-blk-pci,drive=ev,serial=evidence",
        # restrict=on: the guest can't reach anything beyond the slirp stack.
        "-netdev", "user,id=n0,restrict=on", "-device", f"virtio-net-pci,netdev=n0,mac={ETH0_MAC}",
        "-netdev", "user,id=n1,restrict=on", "-device", f"virtio-net-pci,netdev=n1,mac={IB0_MAC}",
        "-device", "virtio-rng-pci",
    ]
    (d / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    log(f"{image.suite}/{scenario}: booting (timeout {timeout}s, smp {smp}, "
        f"cpu {cpu or VM_CPU})")
    with open(d / "qemu.out", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            timed_out = True
            rc = -9
        finally:
            _kill_group(proc)  # leave nothing behind, whatever happened
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    dt = time.monotonic() - t0
    if rc in (124, 137, -9):
        timed_out = True
    with TIMINGS.lock:
        TIMINGS.entries.append((f"{image.suite}/{scenario}: boot to evidence", dt, not timed_out))
    ev = d / "evidence"
    ev.mkdir()
    evidence_ok = False
    try:
        with tarfile.open(evidence_raw) as tf:
            if hasattr(tarfile, "fully_trusted_filter"):
                tf.extractall(ev, filter="fully_trusted")
            else:
                tf.extractall(ev)
        evidence_ok = (ev / "complete").exists()
    except (tarfile.TarError, OSError):
        evidence_ok = False
    evidence_raw.unlink(missing_ok=True)
    log(f"{image.suite}/{scenario}: qemu exited rc={rc} after {dt:.0f}s, "
        f"evidence={'yes' if evidence_ok else 'NO'}")
    result = BootResult(suite=image.suite, scenario=scenario, dir=d, serial_log=serial,
                        evidence_dir=ev, returncode=rc, duration=dt, timed_out=timed_out,
                        evidence_ok=evidence_ok)
    if evidence_ok:
        with TIMINGS.lock:
            RUNTIMES[(image.suite, scenario)] = result.unit_runtimes()
    return result


# (suite, scenario) -> {unit: seconds or None}: printed in the suite summary (issue 11)
RUNTIMES: dict = {}


def runtimes_table() -> str:
    """Our oneshots' runtimes per booted scenario, as the guest's systemd measured them."""
    def fmt(v):
        return f"{v:8.2f}s" if v is not None else "       -"
    lines = [f"  {'suite/scenario':<32} {'static-routes':>13} {'route-overlap':>13}"]
    for (suite, scenario), rt in sorted(RUNTIMES.items()):
        lines.append(f"  {suite + '/' + scenario:<32} {fmt(rt[UNIT_STATIC]):>13} "
                     f"{fmt(rt[UNIT_OVERLAP]):>13}")
    ran = [v for rt in RUNTIMES.values() for v in rt.values() if v is not None]
    if ran:
        lines.append(f"  ({len(ran)} unit runs: min {min(ran):.2f}s, "
                     f"median {sorted(ran)[len(ran) // 2]:.2f}s, max {max(ran):.2f}s)")
    return "\n".join(lines)


def new_workdir() -> Path:
    """A fresh run directory; older runs are removed (only the last is kept for inspection)."""
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    with file_lock(WORK_BASE / ".lock"):
        for old in WORK_BASE.glob("run-*"):
            # leave runs that are still in use by another live pytest alone
            pidf = old / "pid"
            try:
                pid = int(pidf.read_text())
                os.kill(pid, 0)
                continue
            except (OSError, ValueError):
                pass
            shutil.rmtree(old, ignore_errors=True)
        d = Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=WORK_BASE))
        (d / "pid").write_text(str(os.getpid()))
    return d
