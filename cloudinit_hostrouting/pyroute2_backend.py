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

import contextlib
import errno
import os
import queue
import socket
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Union

from .constants import MAIN_TABLE
from .netlink import Batch, FeedError, Lost
from .rtnl import Address, Event, Hop, Link, Route, RouteOp, Rule

# Test-only: the event socket's SO_RCVBUF in bytes, so a test can overflow it.
RCVBUF_ENV = "CLOUDINIT_HOSTROUTING_TEST_EVENT_RCVBUF"
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

    def get_many(self, family: int, addresses: List[str]) -> List[Union[Route, int]]:
        """``get`` for each address: pyroute2 waits for each answer anyway."""
        return [self.get(family, address) for address in addresses]

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

    def events(self) -> EventFeed:
        """Route, address and link notifications of both families, from now on."""
        return EventFeed(self.netns)


def _describe(err: BaseException) -> str:
    """One line for an error; pyroute2 0.9 raises OSError(ENOBUFS, None), without text."""
    if isinstance(err, OSError) and err.errno:
        return f"{errno.errorcode.get(err.errno, err.errno)}: {os.strerror(err.errno)}"
    return f"{type(err).__name__}: {err}"


class _Dead(NamedTuple):
    reason: str


class EventFeed:
    """A reader thread's batches of notifications, and what became of its socket.

    The thread blocks in ``get()`` and hands batches over a queue.  Waiting with
    select() on the socket instead misses events on pyroute2 0.9, which buffers
    messages in Python where select() cannot see them; and 0.9 binds a socket to
    the thread (event loop) that made it, so the thread makes its own, and
    re-makes it there.  Subscription happens before the constructor returns, so
    no event after it is missed.

    A socket error (ENOBUFS when a burst overflows the receive buffer: the
    kernel has dropped notifications) is survived: the thread closes the
    socket, subscribes anew, and only then reports the loss, so that a reader
    who re-reads everything on ``Batch.lost`` misses nothing.  Anything else
    (a failed re-subscription, an unexpected exception) ends the thread and is
    raised to the reader by ``get``: the feed never goes quiet while looking
    alive.
    """

    def __init__(self, netns: Optional[str]):
        self.netns = netns
        self._rcvbuf = _rcvbuf()
        self._queue: queue.Queue[Union[List[Event], Lost, _Dead]] = queue.Queue()
        self._failure: Optional[str] = None
        subscribed = threading.Event()
        threading.Thread(target=self._pump, args=(subscribed,), name="rtnetlink-events",
                         daemon=True).start()
        if not subscribed.wait(timeout=10):
            raise FeedError("could not subscribe to rtnetlink events within 10 s")
        if self._failure is not None:
            raise FeedError(self._failure)

    def get(self, timeout: float) -> Batch:
        """Every notification that arrives within ``timeout`` (none: an empty batch).

        Raises FeedError once the thread has died.
        """
        items = []
        try:
            items.append(self._queue.get(timeout=timeout))
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        events: List[Event] = []
        lost = None
        for item in items:
            if isinstance(item, _Dead):
                raise FeedError(item.reason)
            if isinstance(item, Lost):
                lost = item.reason
            else:
                events.extend(item)
        return Batch(events, lost)

    def _subscribe(self) -> Any:
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV4_ROUTE,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_IPV6_ROUTE,
            RTMGRP_LINK,
        )

        sock = _open(self.netns)
        try:
            if self._rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind(groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_IFADDR
                      | RTMGRP_IPV6_IFADDR | RTMGRP_LINK)
        except BaseException:
            sock.close()
            raise
        return sock

    def _pump(self, subscribed: threading.Event) -> None:
        try:
            sock = self._subscribe()
        except BaseException as err:
            self._failure = f"cannot subscribe to rtnetlink events: {_describe(err)}"
            return
        finally:
            subscribed.set()
        try:
            while True:
                try:
                    msgs = sock.get()
                except OSError as err:
                    sock = self._resubscribe(sock, _describe(err))
                    continue
                self._queue.put([Event(m["event"],
                                       m["proto"] if m["event"] in ROUTE_EVENTS else None)
                                 for m in msgs])
        except BaseException as err:  # the reader must never die silently
            self._queue.put(_Dead(str(err) if isinstance(err, FeedError) else
                                  f"the rtnetlink event reader failed: {_describe(err)}"))

    def _resubscribe(self, old: Any, reason: str) -> Any:
        """A new subscription in place of ``old``, whose socket failed with ``reason``."""
        with contextlib.suppress(Exception):
            old.close()
        try:
            sock = self._subscribe()
        except Exception as err:
            raise FeedError(f"the rtnetlink event socket failed ({reason}) and could not be "
                            f"re-opened: {_describe(err)}") from err
        self._queue.put(Lost(reason))
        return sock


def _rcvbuf() -> Optional[int]:
    """The test-only receive buffer size for the event socket, from RCVBUF_ENV.

    Tests shrink it to force ENOBUFS with a modest burst; nothing else sets it.
    """
    text = os.environ.get(RCVBUF_ENV)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise FeedError(f"{RCVBUF_ENV}={text!r} is not a number of bytes") from None
