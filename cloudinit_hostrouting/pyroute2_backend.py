"""The pyroute2 backend of the kernel edge: the only module that imports pyroute2.

It gives the same records as the stdlib codec (rtnl.py), so the facade
(netlink.py) cannot tell the two apart, and a differential test can hold them to
that.  It serves what the codec cannot: another network namespace (``--netns``,
without ``os.setns`` before Python 3.12) and the guard's event subscription.
The import cost (~150 ms) is irrelevant there; the units use the codec.

It hides the pyroute2 0.7 (Debian 12) / 0.8 / 0.9 (PyPI) differences that bite:
``priority`` not ``metric``, ``gateway`` not ``via``, ``get_attr`` because
``.get('RTA_OIF')`` is None on 0.7, ``IPRoute(netns=)`` (0.9, which would create a
missing namespace) versus ``NetNS`` (0.7), and sockets bound to the thread that
made them (0.9).
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from typing import Any, Dict, List, Optional, Union

from .constants import MAIN_TABLE
from .rtnl import Address, Event, Hop, Link, Route, RouteOp, Rule

COMMANDS = {"create": "add", "replace": "replace", "delete": "del"}  # add is CREATE|EXCL
ROUTE_EVENTS = ("RTM_NEWROUTE", "RTM_DELROUTE")


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


def _gateway(msg: Any) -> Optional[str]:
    via = msg.get_attr("RTA_VIA")
    return msg.get_attr("RTA_GATEWAY") or (via["addr"] if via else None)


def _route(msg: Any) -> Route:
    hops = tuple(Hop(hop["oif"], _gateway(hop), hop["hops"] + 1)
                 for hop in msg.get_attr("RTA_MULTIPATH") or ())
    return Route(msg["family"], msg.get_attr("RTA_TABLE") or msg["table"],
                 msg.get_attr("RTA_DST"), msg["dst_len"], msg["tos"], msg["type"],
                 msg["proto"], msg["scope"], msg.get_attr("RTA_PRIORITY") or 0,
                 msg.get_attr("RTA_OIF"), _gateway(msg), msg.get_attr("RTA_PREFSRC"), hops)


def _rule(msg: Any) -> Rule:
    return Rule(msg["family"], msg.get_attr("FRA_PRIORITY") or 0, msg["action"],
                msg.get_attr("FRA_TABLE") or msg["table"], msg.get_attr("FRA_DST"),
                msg["dst_len"], msg.get_attr("FRA_SRC"), msg["src_len"], msg["tos"],
                msg.get_attr("FRA_FWMARK") or 0, msg.get_attr("FRA_IIFNAME"),
                msg.get_attr("FRA_OIFNAME"))


def _mac(text: Optional[str]) -> bytes:
    """pyroute2 prints IFLA_ADDRESS as aa:bb:...; the records carry its bytes."""
    return bytes.fromhex(text.replace(":", "")) if text else b""


class Pyroute2:
    """The edge's interface over one pyroute2 socket."""

    def __init__(self, netns: Optional[str] = None):
        from pyroute2.netlink.exceptions import NetlinkError

        self.netns = netns
        self.error = NetlinkError
        self.ipr = _open(netns)

    def close(self) -> None:
        self.ipr.close()

    def links(self) -> List[Link]:
        return [Link(m["index"], m.get_attr("IFLA_IFNAME"), m["ifi_type"],
                     _mac(m.get_attr("IFLA_ADDRESS"))) for m in self.ipr.get_links()]

    def addresses(self, family: int) -> List[Address]:
        return [Address(m["index"], m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"),
                        m["prefixlen"]) for m in self.ipr.get_addr(family=family)]

    def routes(self, family: int) -> List[Route]:
        return [_route(m) for m in self.ipr.get_routes(family=family, table=None)]

    def rules(self, family: int) -> List[Rule]:
        return [_rule(m) for m in self.ipr.get_rules(family=family)]

    def get(self, family: int, address: str) -> Union[Route, int]:
        try:
            msgs = self.ipr.route("get", dst=address, family=family)
        except self.error as err:
            return int(err.code)
        return _route(next(iter(msgs)))

    def execute(self, ops: List[RouteOp]) -> List[int]:
        """One request per change (pyroute2 waits for each ACK); the errno of each."""
        codes = []
        for op in ops:
            args: Dict[str, Any] = dict(dst=op.dst, dst_len=op.dst_len, family=op.family,
                                        table=MAIN_TABLE, proto=op.proto)
            if op.gateway is not None and ":" in op.gateway and op.family == socket.AF_INET:
                args["via"] = {"family": socket.AF_INET6, "addr": op.gateway}  # RFC 5549
            elif op.gateway is not None:
                args["gateway"] = op.gateway
            if op.oif is not None:
                args["oif"] = op.oif
            if op.metric is not None:
                args["priority"] = op.metric
            try:
                self.ipr.route(COMMANDS[op.cmd], **args)
            except self.error as err:
                codes.append(int(err.code))
            else:
                codes.append(0)
        return codes

    def events(self) -> queue.Queue[List[Event]]:
        """Batches of route, address and link notifications, both families.

        A reader thread blocks in ``get()`` and hands batches over a queue.
        Waiting with select() on the socket instead misses events on pyroute2 0.9,
        which buffers messages in Python where select() cannot see them; and 0.9
        binds a socket to the thread (event loop) that made it, so the thread
        makes its own.  Subscription happens before this returns, so no event
        after it is missed.
        """
        feed: queue.Queue[List[Event]] = queue.Queue()
        subscribed = threading.Event()

        def pump() -> None:
            from pyroute2.netlink.rtnl import (
                RTMGRP_IPV4_IFADDR,
                RTMGRP_IPV4_ROUTE,
                RTMGRP_IPV6_IFADDR,
                RTMGRP_IPV6_ROUTE,
                RTMGRP_LINK,
            )

            sock = _open(self.netns)
            sock.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_IFADDR
                      | RTMGRP_IPV6_IFADDR | RTMGRP_LINK)
            subscribed.set()
            while True:
                feed.put([Event(m["event"], m["proto"] if m["event"] in ROUTE_EVENTS else None)
                          for m in sock.get()])

        threading.Thread(target=pump, name="rtnetlink-events", daemon=True).start()
        if not subscribed.wait(timeout=10):
            raise RuntimeError("could not subscribe to rtnetlink events")
        return feed
