"""Real network namespaces shaped like an Azure ND-isr host, for tests.

The host namespace gets ``eth0`` (10.1.0.4/24, default route via 10.1.0.1) and
``ib0`` (10.0.200.5/16), so the kernel holds a connected 10.0.0.0/16 route on
ib0 that shadows the cluster CIDR 10.0.5.0/24, exactly as on ND-isr.  The other
ends of both veth pairs live in a peer namespace the test also owns; nothing is
left in the root namespace, and every namespace is deleted afterwards.
The ``dummy`` link type does not exist on this machine, hence veth pairs.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import uuid
from typing import List, Optional

ETH_ADDR, ETH_GW = "10.1.0.4/24", "10.1.0.1"
IB_ADDR = "10.0.200.5/16"
CLUSTER_CIDR = "10.0.5.0/24"
IB_PEER_PROBE = "10.0.77.1"  # inside the IB /16, outside the cluster CIDR
# IPv6 twins, for the dual-stack tests: eth0's default route, and a /48 on ib0.
ETH6_ADDR, ETH6_GW = "fd00:1::4/64", "fd00:1::1"
IB6_ADDR, IB6_PEER = "fd00:a::5/48", "fd00:a::1/48"


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a command (no shell) with a bound on time; raise with output on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


class NDHost:
    """A pair of namespaces: ``self.ns`` is the node, ``self.peer`` the network."""

    def __init__(self, default_route: bool = True, ib: bool = True,
                 ib_addr: str = IB_ADDR, ipv6: bool = False):
        tag = uuid.uuid4().hex[:8]
        self.ns, self.peer = f"hr{tag}", f"hr{tag}p"
        self._made: List[str] = []
        try:
            for name in (self.ns, self.peer):
                sh("ip", "netns", "add", name)
                self._made.append(name)
            self._veth("eth0", "p-eth0", ETH_ADDR, ETH_GW + "/24", tag)
            if ib:
                self.add_ib(ib_addr)
            if default_route:
                self.add_default()
            if ipv6:
                self.add_ipv6(default_route)
        except BaseException:
            self.close()
            raise

    def _veth(self, name: str, peer_name: str, addr: str, peer_addr: str, tag: str) -> None:
        a, b = f"a{tag}{name[:2]}", f"b{tag}{name[:2]}"
        sh("ip", "link", "add", a, "netns", self.ns, "type", "veth",
           "peer", "name", b, "netns", self.peer)
        self.ip("link", "set", a, "name", name)
        sh("ip", "-n", self.peer, "link", "set", b, "name", peer_name)
        self.ip("addr", "add", addr, "dev", name)
        sh("ip", "-n", self.peer, "addr", "add", peer_addr, "dev", peer_name)
        self.ip("link", "set", name, "up")
        sh("ip", "-n", self.peer, "link", "set", peer_name, "up")
        sh("ip", "-n", self.peer, "link", "set", "lo", "up")
        self.ip("link", "set", "lo", "up")

    def add_ib(self, addr: str = IB_ADDR) -> None:
        """The IPoIB interface with its /16 (on Azure the guest agent does this late)."""
        peer = str(ipaddress.ip_interface(addr).network.network_address + 1)
        self._veth("ib0", "p-ib0", addr, f"{peer}/{addr.split('/')[1]}", uuid.uuid4().hex[:6])

    def add_ipv6(self, default_route: bool = True) -> None:
        """IPv6 on both links (no DAD, so addresses are usable at once)."""
        for dev, peer_dev, addr, peer in (("eth0", "p-eth0", ETH6_ADDR, ETH6_GW + "/64"),
                                          ("ib0", "p-ib0", IB6_ADDR, IB6_PEER)):
            self.ip("-6", "addr", "add", addr, "dev", dev, "nodad")
            sh("ip", "-n", self.peer, "-6", "addr", "add", peer, "dev", peer_dev, "nodad")
        if default_route:
            self.ip("-6", "route", "replace", "default", "via", ETH6_GW, "dev", "eth0")

    def add_default(self) -> None:
        self.ip("route", "replace", "default", "via", ETH_GW, "dev", "eth0")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "-n", self.ns, *args, check=check)

    def route_get_dev(self, address: str) -> Optional[str]:
        """The device ``ip -4 route get`` names, or None when there is no route."""
        proc = self.ip("-j", "-4", "route", "get", address, check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)[0].get("dev")

    def routes(self, *selector: str) -> List[dict]:
        return json.loads(self.ip("-j", "-4", "route", "show", *selector).stdout)

    def run_cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """The console script exactly as a unit runs it, inside the namespace."""
        return sh("ip", "netns", "exec", self.ns, sys.executable,
                  "-m", "cloudinit_hostrouting", *args, check=False, timeout=timeout)

    def close(self) -> None:
        for name in reversed(self._made):
            sh("ip", "netns", "delete", name, check=False, timeout=10)
        self._made.clear()
