"""Render what first boot writes: pure functions from a HostRouting to file texts.

Nothing here touches the system.  ``plan`` returns every file and enablement
symlink; ``effects.apply_plan`` writes them under a root directory.  That split
is what lets ``cloudinit-hostrouting render --root DIR`` show, byte for byte,
what the module would write, and lets tests run ``systemd-analyze verify`` on it.

Why a drop-in per gated unit instead of upstream's ``Before=``/``RequiredBy=``:
``Before=systemd-nspawn@.service`` in a non-template unit names the instance
``systemd-nspawn@<own-name>.service`` and orders no real machine, and
``RequiredBy=`` adds ``Requires=`` without ``After=``.  A drop-in in
``systemd-nspawn@.service.d/`` applies to every instance, and carries both.
"""

from __future__ import annotations

import os
import sys
from typing import List, NamedTuple, Optional

from .config import HostRouting
from .constants import (
    CHECK_UNIT,
    CONFIG_PATH,
    DEFAULT_WAIT_S,
    DROPIN_NAME,
    GUARD_UNIT,
    PROTOS_PATH,
    RTPROT_HOSTROUTING,
    RTPROT_HOSTROUTING_AUTO,
    RUN_DIR,
    START_TIMEOUT_S,
    STATIC_UNIT,
    UNIT_DIR,
)

# node_exporter textfile collector directories the guard may write into: the
# one the README and examples use, and Debian's prometheus-node-exporter's.
TEXTFILE_DIRS = ("/var/lib/node_exporter/textfile_collector",
                 "/var/lib/prometheus/node-exporter")

HEADER = (
    "# Written by cloudinit-hostrouting (cloud-init module host_routing).\n"
    "# Regenerated on each new instance from {config}; edits are lost.\n"
)


class Entry(NamedTuple):
    """A file (``text``) or a symlink (``link_to``) at an absolute ``path``."""

    path: str
    text: Optional[str] = None
    link_to: Optional[str] = None
    mode: int = 0o644


# The sandbox every unit of ours runs in (systemd.exec(5)): everything
# `systemd-analyze security` lists, minus what the commands need.
# - Root, but with CAP_NET_ADMIN as the only capability where routes change
#   (static routes, guard) and none at all for the check, which only reads the
#   kernel's tables and its config and writes its own run directory.  Root and
#   not a DynamicUser=: the three units share one run directory whose markers
#   must outlive each oneshot (a dynamic UID can differ per unit and boot), and
#   the guard may write a textfile into a root-owned collector directory.
#   Reading other files (the Hyper-V KVP pool, /etc/waagent.conf) needs nothing.
# - The host's network namespace (PrivateNetwork= would hide the very routes
#   we manage), reached through netlink only; AF_UNIX for sd_notify; no IP
#   sockets at all.
# - A read-only file system (ProtectSystem=strict) except the run directory,
#   which systemd creates, makes writable and keeps (RuntimeDirectoryPreserve=).
_HARDENING = f"""\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
PrivateMounts=yes
RestrictAddressFamilies=AF_NETLINK AF_UNIX
IPAddressDeny=any
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0022
RuntimeDirectory={RUN_DIR.removeprefix("/run/")}
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
"""


def _unit(description: str, ordering: str, service: str, capabilities: str) -> str:
    """A unit of ours: fixed text around one subcommand; never any user data."""
    return HEADER.format(config=CONFIG_PATH) + f"""\
[Unit]
Description={description} (cloudinit-hostrouting)
{ordering}
[Service]
{service}CapabilityBoundingSet={capabilities}
{_HARDENING}
[Install]
WantedBy=multi-user.target
"""


# The oneshots run ``PYTHON -I -S <package>/unit.py`` (unit.py says why), by measurement:
# a bare start of Debian 12's /usr/bin/python3 here took 24.7 ms with ``site`` and 14.5 ms
# with -S (median of 40; ``-X importtime`` puts site at 6-8 ms and ``-m``'s runpy with
# importlib.util at 6-7 ms more).  The guard keeps ``-m``: it runs for hours and imports
# pyroute2, which ``site`` must find.
UNIT_SCRIPT_FLAGS = ("-I", "-S")


def unit_script() -> str:
    """The absolute path of unit.py in this very package (the copy that renders)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "unit.py")


def _oneshot(python: str, command: str, extra_wait: int = 0) -> str:
    """``extra_wait`` seconds join the command's one wait budget and its start timeout."""
    wait = f" --wait {DEFAULT_WAIT_S + extra_wait}" if extra_wait else ""
    flags = " ".join(UNIT_SCRIPT_FLAGS)
    return f"""\
Type=oneshot
RemainAfterExit=yes
ExecStart={python} {flags} {unit_script()} {command} --config {CONFIG_PATH}{wait}
TimeoutStartSec={START_TIMEOUT_S + extra_wait}
"""


def static_unit(python: str) -> str:
    """The oneshot that installs the routes."""
    return _unit("Install host static routes", f"""\
Wants=network-online.target
After=network-online.target
Before={CHECK_UNIT}
""", _oneshot(python, "apply-routes"), "CAP_NET_ADMIN")


def check_unit(python: str, wait_for_ipoib: int = 0) -> str:
    """The oneshot that verifies expected CIDRs route via the default interface.

    With ``route_overlap.wait_for_ipoib`` its wait budget (default route, then
    IPoIB addresses) and start timeout grow by exactly that much: still one
    bounded budget, and systemd never kills a check that is waiting as told.
    """
    return _unit("Check expected CIDRs route via the default interface", f"""\
Wants=network-online.target {STATIC_UNIT}
After=network-online.target {STATIC_UNIT}
""", _oneshot(python, "check-overlap", wait_for_ipoib), "")


def guard_unit(python: str) -> str:
    """The opt-in long-running guard; stopping it leaves every route as it is.

    Beyond the run directory it may write the node_exporter textfile; the
    documented collector directories are writable if they exist (``-``).
    Its main loop pings the watchdog (WATCHDOG=1) every quarter of
    ``WatchdogSec=``, so a loop stuck for that long is killed (SIGABRT) and,
    like any failure, restarted; 30 s leaves a reconcile of a very large
    table ample time.
    """
    return _unit("Keep host routes right after boot", f"""\
Wants={STATIC_UNIT}
After={STATIC_UNIT} {CHECK_UNIT}
""", f"""\
Type=notify
ExecStart={python} -m cloudinit_hostrouting guard --config {CONFIG_PATH}
WatchdogSec=30s
Restart=on-failure
RestartSec=2s
ReadWritePaths={" ".join("-" + d for d in TEXTFILE_DIRS)}
""", "CAP_NET_ADMIN")


def gate_dropin(strict: bool) -> str:
    """Order a gated unit after both oneshots; in STRICT also require them.

    In STRICT mode a failed check fails the gated unit's start job with result
    ``dependency``.  WARN only reports, so it orders and pulls the units in
    without making the gated unit depend on their success.
    """
    dep = "Requires" if strict else "Wants"
    mode = "STRICT: a failed check keeps this unit from starting" if strict else \
        "WARN: the checks run first but never block this unit"
    return HEADER.format(config=CONFIG_PATH) + f"""\
# {mode}.
[Unit]
{dep}={STATIC_UNIT} {CHECK_UNIT}
After={STATIC_UNIT} {CHECK_UNIT}
"""


def protos_file() -> str:
    """Names our route protocol for iproute2, so `ip route` shows `proto hostrouting`."""
    return f"{RTPROT_HOSTROUTING}\thostrouting\n{RTPROT_HOSTROUTING_AUTO}\thostrouting-auto\n"


def plan(cfg: HostRouting, python: Optional[str] = None) -> List[Entry]:
    """Every path first boot writes for ``cfg``, in write order.

    ``python`` is the interpreter the units run; by default the one running
    now, which is the one cloud-init imported this package with.

    The order makes any prefix of the writes fail closed in STRICT: the gate
    drop-ins come first, and ``Requires=`` on a unit not yet written fails the
    gated start; then the config, so a unit never exists without the config
    it reads; the units; the enablement links last.
    """
    py = python or sys.executable
    for what, path in (("interpreter", py), ("package", unit_script())):
        if not path.startswith("/") or any(c.isspace() or c in "\\\"'$%;" for c in path):
            raise ValueError(f"{what} path {path!r} cannot go into ExecStart= unquoted")
    entries = [Entry(f"{UNIT_DIR}/{unit}.d/{DROPIN_NAME}", gate_dropin(cfg.strict))
               for unit in cfg.gate_units]
    entries += [
        Entry(CONFIG_PATH, cfg.to_json()),
        Entry(PROTOS_PATH, protos_file()),
        Entry(f"{UNIT_DIR}/{STATIC_UNIT}", static_unit(py)),
        Entry(f"{UNIT_DIR}/{CHECK_UNIT}", check_unit(py, cfg.wait_for_ipoib)),
    ]
    units = [STATIC_UNIT, CHECK_UNIT]
    if cfg.guard:
        entries.append(Entry(f"{UNIT_DIR}/{GUARD_UNIT}", guard_unit(py)))
        units.append(GUARD_UNIT)
    for unit in units:
        entries.append(Entry(f"{UNIT_DIR}/multi-user.target.wants/{unit}",
                             link_to=f"{UNIT_DIR}/{unit}"))
    return entries
