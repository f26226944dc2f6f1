"""The IPoIB anticipation with the defaults, under a real Debian systemd and our hardened units.

The root boots as in test_units_boot.py, but ``ib0`` has no address yet (as at
first boot before the Azure guest agent), a KVP pool at the default path
``/var/lib/hyperv/.kvp_pool_0`` (written here in the kernel's record layout)
announces 10.0.200.5 for ib0's MAC, and ``/etc/waagent.conf`` says
``OS.EnableRDMA=y``.  The units run exactly as rendered (no ``--kvp-pool``, no
``--root``), so this shows the default path and the ``auto`` rule work inside
the sandbox (ProtectSystem=strict, no capabilities for the check).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Dict

import pytest
from test_units_boot import CHECK, FIXED, GATED, UNFIXED, boot_scenario, show

pytestmark = pytest.mark.deb

IB0_MAC = "02:00:00:00:b0:01"
POOL = (struct.pack("512s2048s", b"HostName", b"hv-host-17")
        + struct.pack("512s2048s", b"IPoIB_Data",
                      b"NUMPAIRS:1|" + IB0_MAC.replace(":", "").upper().encode()
                      + b":10.0.200.5"))
NETSETUP_LATE = f"""#!/bin/sh
set -e
ip link add eth0 type veth peer name eth0-peer
ip link add ib0 type veth peer name ib0-peer
ip link set ib0 address {IB0_MAC}
for l in eth0-peer ib0-peer eth0 ib0; do ip link set "$l" up; done
ip addr add 10.1.0.4/24 dev eth0
ip route add default via 10.1.0.1 dev eth0
"""


def node(rdma: bool) -> str:
    """Shell run in the root: the late-IB network, the pool, and the agent's config."""
    conf = "printf 'OS.EnableRDMA=y\\n' >/etc/waagent.conf" if rdma else "rm -f /etc/waagent.conf"
    return f"""
cat >/usr/local/sbin/hr-netsetup <<'EOF'
{NETSETUP_LATE}EOF
mkdir -p /var/lib/hyperv
echo {base64.b64encode(POOL).decode()} | base64 -d >/var/lib/hyperv/.kvp_pool_0
{conf}
"""


def test_strict_fails_on_the_announced_ib0_address(package: Dict[str, Path],
                                                   tmp_path: Path) -> None:
    got = boot_scenario("bookworm", package["deb"], UNFIXED, tmp_path, then=node(rdma=True))
    check, gated = show(got, CHECK), show(got, GATED)
    assert "dev eth0" in got["route-get"]  # the table of the moment is fine ...
    assert (check["Result"], check["ExecMainStatus"]) == ("exit-code", "1"), got["journal-ours"]
    status = json.loads(got["run/status.json"])
    assert status["ipoib"]["kvp"]["path"] == "/var/lib/hyperv/.kvp_pool_0"
    assert "auto: /etc/waagent.conf has OS.EnableRDMA=y" in status["ipoib"]["rule"]
    assert "10.0.0.0/16 on ib0, from KVP IPoIB_Data, not yet assigned" in got["journal-ours"]
    assert gated["ExecMainStartTimestampMonotonic"] == "0"  # ... but the gate stays shut


def test_the_fix_opens_the_gate_with_the_pending_route_included(
        package: Dict[str, Path], tmp_path: Path) -> None:
    got = boot_scenario("bookworm", package["deb"], FIXED, tmp_path, then=node(rdma=True))
    check = show(got, CHECK)
    assert (check["Result"], check["ExecMainStatus"]) == ("success", "0"), got["journal-ours"]
    status = json.loads(got["run/status.json"])
    assert [p["interface"] for p in status["ipoib"]["pending"]] == ["ib0"]
    assert show(got, GATED)["ActiveState"] == "active"


def test_control_without_rdma_enabled_the_same_node_passes(package: Dict[str, Path],
                                                           tmp_path: Path) -> None:
    """Negative control: the auto rule, not the pool alone, is what made the gate fail."""
    got = boot_scenario("bookworm", package["deb"], UNFIXED, tmp_path, then=node(rdma=False))
    assert show(got, CHECK)["Result"] == "success", got["journal-ours"]
    status = json.loads(got["run/status.json"])
    assert status["ipoib"]["anticipating"] is False
    assert "IPoIB: not anticipating (auto: /etc/waagent.conf does not exist" in got["journal-ours"]
