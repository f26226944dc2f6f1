"""Which units ``gate_units`` may name: none that would make a cycle or lock you out.

A gated unit gets ``After=`` (and in STRICT ``Requires=``) on our two oneshots.
They start after ``network-online.target`` and, through their default
dependencies, after ``sysinit.target`` and ``basic.target``; cloud-init's init
stage, which writes them, runs before ``sysinit.target``.  So any unit that
boot orders before one of those targets, or that cloud-init's units order
themselves after, closes an ordering cycle once gated, and systemd breaks a
cycle by dropping some job in it: maybe the check, maybe networking.  That is
the class refused here, by kind and by name (systemd's boot ordering in
bootup(7), cloud-init's units, the network managers), not unit by unit; a
test shows with ``systemd-analyze verify`` that denied units really close a
cycle and allowed ones do not.

Also refused, though no cycle: our own units (the check cannot wait for
itself), what a failed STRICT check must never take from the person fixing the
node (ssh, gettys, logind, D-Bus, the Azure agent), and shutdown and rescue
targets, which conflict with our units.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple

# Unit types that are not started as a workload is.  Sockets, paths and slices
# are ordered before sockets.target/paths.target/slices.target, which
# basic.target waits for; local mounts, automounts and swaps before
# local-fs.target/swap.target, which sysinit.target waits for.
_TYPE_REFUSALS = {
    "socket": "sockets are ordered before sockets.target, which basic.target waits for",
    "path": "path units are ordered before paths.target, which basic.target waits for",
    "slice": "slices are ordered before slices.target, which basic.target waits for",
    "mount": "local mounts are ordered before local-fs.target, which sysinit.target waits for",
    "automount": "automounts are ordered before local-fs.target, which sysinit.target "
                 "waits for",
    "swap": "swaps are ordered before swap.target, which sysinit.target waits for",
    "device": "device units are not started by a job that could wait",
    "scope": "scopes are created at run time, not started by a job that could wait",
    "timer": "a timer only schedules a service",
}

# systemd's boot, shutdown and rescue targets (bootup(7), systemd.special(7)):
# every one is ordered before basic.target or network-online.target, or
# belongs to shutdown, sleep or rescue, which conflict with our units.
_EARLY_TARGETS = frozenset("""
    sysinit basic sockets timers paths slices swap local-fs local-fs-pre
    cryptsetup cryptsetup-pre remote-cryptsetup veritysetup veritysetup-pre
    remote-veritysetup integritysetup integritysetup-pre network-pre network
    network-online nss-lookup nss-user-lookup time-set time-sync getty-pre getty
    emergency rescue shutdown halt poweroff reboot kexec soft-reboot ctrl-alt-del
    exit final umount sleep suspend hibernate hybrid-sleep suspend-then-hibernate
    system-update system-update-pre sigpwr boot-complete first-boot-complete
    factory-reset blockdev storage-target-mode
""".split())

# Families of units, by the name before any "@" and the suffix: the name
# itself or the name followed by "-" (cloud-init, cloud-init-local, ...).  They
# run before sysinit.target or network-online.target (a cycle), or are what a
# failed check must never take away.
_NET = "brings up the network our units wait for (ordered before network.target)"
_ACCESS = "is how you reach the node to fix it"
_FAMILIES = {
    "hostrouting": "is one of our own units (names starting hostrouting- are reserved)",
    "cloud-init": "is part of cloud-init, whose init stage writes our units and runs "
                  "before sysinit.target",
    "cloud-config": "is part of cloud-init; a failed check must not stop cloud-init",
    "cloud-final": "is part of cloud-init; a failed check must not stop cloud-init",
    "initrd": "belongs to the initrd, which is over before our units exist",
    "kmod": "loads kernel modules before sysinit.target",
    "modprobe": "loads kernel modules before sysinit.target",
    "procps": "applies sysctl settings before sysinit.target",
    "networking": _NET, "NetworkManager": _NET, "ifup": _NET, "ifupdown": _NET,
    "ifupdown2": _NET, "dhcpcd": _NET, "dhclient": _NET, "wpa_supplicant": _NET,
    "wicked": _NET, "netplan": _NET, "connman": _NET, "iwd": _NET,
    "hv_kvp_daemon": "runs before cloud-init-local.service, so before sysinit.target",
    "hv-kvp-daemon": "runs before cloud-init-local.service, so before sysinit.target",
    "walinuxagent": "is the Azure agent: it assigns the InfiniBand addresses after our "
                    "check and reports the VM ready, so gating it hides the shadow from "
                    "the check and can fail provisioning",
    "waagent": "is the Azure agent: it assigns the InfiniBand addresses after our check "
               "and reports the VM ready, so gating it hides the shadow from the check "
               "and can fail provisioning",
    "ssh": _ACCESS, "sshd": _ACCESS, "getty": _ACCESS, "serial-getty": _ACCESS,
    "console-getty": _ACCESS, "container-getty": _ACCESS, "autovt": _ACCESS,
    "user-runtime-dir": _ACCESS,
    "dbus": "is D-Bus, which logins and systemctl clients need",
    "emergency": "is the emergency shell", "rescue": "is the rescue shell",
    "debug-shell": "is the debug shell",
}
# Matched only as the whole name: RHEL's legacy network.service, user@UID.service.
_EXACT = {"network": _NET, "user": _ACCESS}

# systemd's own services run in early boot, or are what logins and recovery
# need; nspawn is the exception, and the unit machines run in.
_SYSTEMD_ALLOWED = ("systemd-nspawn",)

_FIX = ("Fix: gate only the workload that needs the routes, such as "
        "systemd-nspawn@.service, kubelet.service or containerd.service.")


def refusal(unit: str) -> Optional[Tuple[str, str]]:
    """(message, fix) if ``unit`` must not be gated, else None.

    ``unit`` is a syntactically valid unit name (the schema's pattern).
    """
    stem, _, kind = unit.rpartition(".")
    if kind in _TYPE_REFUSALS:
        return (f"is a .{kind} unit, which cannot be gated: {_TYPE_REFUSALS[kind]}",
                "Fix: gate the .service that needs the routes instead.")
    name = stem.split("@", 1)[0]
    if kind == "target" and (name in _EARLY_TARGETS or name.startswith("runlevel")):
        return ("is a boot, shutdown or rescue target: gating it makes an ordering "
                "cycle with our units, or conflicts with them", _FIX)
    why = _EXACT.get(name) or next((why for family, why in _FAMILIES.items()
                                    if name == family or name.startswith(family + "-")),
                                   None)
    if why:
        return f"cannot be gated: it {why}", _FIX
    if name.startswith("systemd-") and name not in _SYSTEMD_ALLOWED:
        return ("cannot be gated: systemd's own services run before sysinit.target or "
                "network-online.target (an ordering cycle with our units), or are what "
                "logins and recovery need", _FIX)
    return None
