"""The kernel edge: every rtnetlink call this package makes, through pyroute2.

One ``Kernel`` holds one netlink socket for the life of a command.  It hides
the pyroute2 0.7 (Debian 12) / 0.9 (PyPI) differences that bite: ``priority``
not ``metric``, ``gateway`` not ``via``, ``get_attr`` because ``.get('RTA_OIF')``
is None on 0.7, and how to enter a named network namespace.  Tests pass a
namespace name so the same code runs against a real kernel table.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any, Dict, List, NamedTuple, Optional

from .render import RTPROT_HOSTROUTING

MAIN_TABLE = 254
RTN_UNICAST = 1
RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole",
             7: "unreachable", 8: "prohibit", 9: "throw"}


class DefaultRoute(NamedTuple):
    """The IPv4 default route of the main table with the lowest metric."""

    ifname: str
    ifindex: int
    gateway: Optional[str]


class Lookup(NamedTuple):
    """What ``ip route get`` says for one address; ``ifname`` None means no route."""

    ifname: Optional[str]
    gateway: Optional[str]
    kind: str
    error: Optional[str] = None


class RouteError(Exception):
    """A route could not be installed; ``str()`` is the reason, for humans."""


def _open(netns: Optional[str]) -> Any:
    """A pyroute2 IPRoute, inside ``netns`` if given (which must already exist)."""
    from pyroute2 import IPRoute

    if netns is None:
        return IPRoute()
    if not os.path.exists(f"/run/netns/{netns}"):
        # pyroute2 0.9 would silently create a missing namespace.
        raise FileNotFoundError(f"network namespace {netns!r} does not exist")
    try:
        return IPRoute(netns=netns)  # pyroute2 >= 0.9
    except TypeError:
        from pyroute2 import NetNS  # pyroute2 0.7

        return NetNS(netns)


class Kernel:
    """A single rtnetlink socket plus the interface-name cache every lookup needs."""

    def __init__(self, netns: Optional[str] = None):
        self.ipr = _open(netns)
        self._names: Dict[int, str] = {}

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ipr.close()

    def _load_links(self) -> None:
        self._names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in self.ipr.get_links()}

    def ifname(self, index: Optional[int]) -> Optional[str]:
        """Interface name for an index; re-reads links once on a miss (renames)."""
        if index is None:
            return None
        if index not in self._names:
            self._load_links()
        return self._names.get(index)

    def ifindex(self, name: str) -> Optional[int]:
        """Interface index for a name, or None if no such interface exists now."""
        self._load_links()
        for index, known in self._names.items():
            if known == name:
                return index
        return None

    def default_route(self, ifname: Optional[str] = None) -> Optional[DefaultRoute]:
        """The lowest-metric IPv4 default route in the main table (on ``ifname``)."""
        best = None
        for msg in self.ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
                continue
            oif = msg.get_attr("RTA_OIF")
            if oif is None:  # multipath default: take the first hop's device
                hops = msg.get_attr("RTA_MULTIPATH") or []
                oif = hops[0]["oif"] if hops else None
            name = self.ifname(oif)
            if name is None or (ifname is not None and name != ifname):
                continue
            metric = msg.get_attr("RTA_PRIORITY") or 0
            if best is None or metric < best[0]:
                best = (metric, DefaultRoute(name, oif, msg.get_attr("RTA_GATEWAY")))
        return best[1] if best else None

    def route_get(self, address: ipaddress.IPv4Address) -> Lookup:
        """Ask the kernel where ``address`` goes (RTM_GETROUTE honours ip rules)."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            msgs = self.ipr.route("get", dst=str(address))
        except NetlinkError as err:
            return Lookup(None, None, "error", os.strerror(err.code))
        msg = next(iter(msgs))
        kind = RTN_TYPES.get(msg["type"], str(msg["type"]))
        return Lookup(self.ifname(msg.get_attr("RTA_OIF")), msg.get_attr("RTA_GATEWAY"), kind)

    def replace(self, destination: ipaddress.IPv4Network, gateway: str,
                ifindex: int, metric: Optional[int]) -> None:
        """``ip -4 route replace`` tagged with our protocol; RouteError says why not."""
        from pyroute2.netlink.exceptions import NetlinkError

        args: Dict[str, Any] = dict(
            dst=str(destination.network_address), dst_len=destination.prefixlen,
            gateway=gateway, oif=ifindex, family=socket.AF_INET,
            table=MAIN_TABLE, proto=RTPROT_HOSTROUTING,
        )
        if metric is not None:
            args["priority"] = metric
        try:
            self.ipr.route("replace", **args)
        except NetlinkError as err:
            raise RouteError(_explain(err.code, gateway)) from err

    def our_routes(self) -> List[str]:
        """Destinations of routes tagged with our protocol, for tests and status."""
        out = []
        for msg in self.ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE,
                                       proto=RTPROT_HOSTROUTING):
            out.append(f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}")
        return out


def _explain(code: int, gateway: str) -> str:
    if code == errno.ENETUNREACH:
        return f"gateway {gateway} is not reachable on that interface (no connected route)"
    if code == errno.ENODEV:
        return "the interface disappeared"
    if code == errno.EPERM:
        return "permission denied (routes need root or CAP_NET_ADMIN)"
    return f"kernel refused: {os.strerror(code)}"
