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

from .analysis import Answer, Rule, TableRoute, Tables
from .constants import (
    MAIN_TABLE,
    RT_SCOPE_LINK,
    RTN_UNICAST,
    RTPROT_HOSTROUTING,
    RTPROT_HOSTROUTING_AUTO,
)

RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
             6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
# What RTM_GETROUTE's error means: the kernel answers these route types with an errno.
LOOKUP_ERRORS = {errno.EINVAL: "blackhole", errno.EHOSTUNREACH: "unreachable",
                 errno.EACCES: "prohibit", errno.ENETUNREACH: "unreachable",
                 errno.EAGAIN: "throw"}
PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 9: "ra",
          16: "dhcp", RTPROT_HOSTROUTING: "hostrouting",
          RTPROT_HOSTROUTING_AUTO: "hostrouting-auto"}
RULE_ACTIONS = {6: "blackhole", 7: "unreachable", 8: "prohibit"}
FR_ACT_TO_TBL = 1


def family_of(version: int) -> int:
    """AF_INET or AF_INET6 for an ``ipaddress`` version number."""
    return socket.AF_INET if version == 4 else socket.AF_INET6


class DefaultRoute(NamedTuple):
    """The IPv4 default route of the main table with the lowest metric."""

    ifname: str
    ifindex: int
    gateway: Optional[str]


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

    def default_route(self, ifname: Optional[str] = None,
                      version: int = 4) -> Optional[DefaultRoute]:
        """The lowest-metric default route of the main table (on ``ifname``)."""
        best = None
        for msg in self.ipr.get_routes(family=family_of(version), table=MAIN_TABLE):
            if msg["dst_len"] != 0 or msg["type"] != RTN_UNICAST:
                continue
            oif = _oif(msg)
            name = self.ifname(oif)
            if oif is None or name is None or (ifname is not None and name != ifname):
                continue
            metric = msg.get_attr("RTA_PRIORITY") or 0
            if best is None or metric < best[0]:
                best = (metric, DefaultRoute(name, oif, msg.get_attr("RTA_GATEWAY")))
        return best[1] if best else None

    def answer(self, address: Any) -> Answer:
        """Ask the kernel where ``address`` goes (RTM_GETROUTE honours ip rules)."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            msgs = self.ipr.route("get", dst=str(address), family=family_of(address.version))
        except NetlinkError as err:
            return Answer(None, LOOKUP_ERRORS.get(err.code, "error"))
        msg = next(iter(msgs))
        return Answer(self.ifname(msg.get_attr("RTA_OIF")),
                      RTN_TYPES.get(msg["type"], str(msg["type"])))

    def tables(self, version: int) -> Tables:
        """All routes in tables that rules can reach, and rule selectors, of one family.

        One dump of each; the analysis indexes them once for every expected CIDR.
        """
        family = family_of(version)
        rules, reachable = [], set()
        for msg in self.ipr.get_rules(family=family):
            action, table = msg["action"], msg.get_attr("FRA_TABLE") or msg["table"]
            if action == FR_ACT_TO_TBL:
                reachable.add(table)
            dst = msg.get_attr("FRA_DST")
            if dst and msg["dst_len"]:
                verb = f"lookup {table}" if action == FR_ACT_TO_TBL else \
                    RULE_ACTIONS.get(action, f"action {action}")
                rules.append(Rule(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
                                  msg.get_attr("FRA_PRIORITY") or 0, verb))
        routes = []
        for msg in self.ipr.get_routes(family=family, table=None):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if table not in reachable:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
            routes.append(TableRoute(
                network=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
                table=table,
                kind=RTN_TYPES.get(msg["type"], str(msg["type"])),
                ifname=self.ifname(_oif(msg)),
                gateway=msg.get_attr("RTA_GATEWAY"),
                proto=PROTOS.get(msg["proto"], str(msg["proto"])),
                scope_link=msg["scope"] == RT_SCOPE_LINK,
                metric=msg.get_attr("RTA_PRIORITY") or 0,
            ))
        return Tables(routes, rules)

    def default_from(self, tables: Tables) -> Optional[DefaultRoute]:
        """The default route ``default_route`` would find, read from a dump already made."""
        best = tables.default()
        if best is None or best.ifname is None:
            return None
        index = next(i for i, name in self._names.items() if name == best.ifname)
        return DefaultRoute(best.ifname, index, best.gateway)

    def replace(self, destination: Any, gateway: str, ifindex: int, metric: Optional[int],
                proto: int = RTPROT_HOSTROUTING) -> None:
        """``ip route replace`` tagged with our protocol; RouteError says why not."""
        from pyroute2.netlink.exceptions import NetlinkError

        args: Dict[str, Any] = dict(
            dst=str(destination.network_address), dst_len=destination.prefixlen,
            gateway=gateway, oif=ifindex, family=family_of(destination.version),
            table=MAIN_TABLE, proto=proto,
        )
        if metric is not None:
            args["priority"] = metric
        try:
            self.ipr.route("replace", **args)
        except NetlinkError as err:
            raise RouteError(_explain(err.code, gateway)) from err

    def tagged(self, proto: int, version: int) -> List[Any]:
        """Destinations of main-table routes carrying ``proto`` (ours are told by it)."""
        family = family_of(version)
        return [ipaddress.ip_network(f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}")
                for msg in self.ipr.get_routes(family=family, table=MAIN_TABLE)
                if msg["proto"] == proto and msg.get_attr("RTA_DST")]

    def delete(self, destination: Any, proto: int) -> None:
        """Delete a route *only* if it carries ``proto``: the kernel checks the tag."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self.ipr.route("del", dst=str(destination.network_address),
                           dst_len=destination.prefixlen, table=MAIN_TABLE, proto=proto,
                           family=family_of(destination.version))
        except NetlinkError as err:
            if err.code != errno.ESRCH:
                raise RouteError(f"kernel refused: {os.strerror(err.code)}") from err

    def forget_links(self) -> None:
        """Drop the name cache after link events (renames, re-created interfaces)."""
        self._names = {}


def _oif(msg: Any) -> Optional[int]:
    """The route's output interface; for a multipath route, its first hop's."""
    oif = msg.get_attr("RTA_OIF")
    if oif is None:
        hops = msg.get_attr("RTA_MULTIPATH") or []
        oif = hops[0]["oif"] if hops else None
    return oif


def _explain(code: int, gateway: str) -> str:
    if code == errno.ENETUNREACH:
        return f"gateway {gateway} is not reachable on that interface (no connected route)"
    if code == errno.ENODEV:
        return "the interface disappeared"
    if code == errno.EPERM:
        return "permission denied (routes need root or CAP_NET_ADMIN)"
    return f"kernel refused: {os.strerror(code)}"
