"""rtnl: rtnetlink on the standard library alone, for the units' boot path.

The two oneshot units sit on every GPU node's boot critical path, where
``import pyroute2`` alone costs about 150 ms and each message 200-400 us.  This
codec imports in well under a millisecond and costs a few microseconds per
message.  It speaks only what the units need: dumps of links, addresses, routes
and rules, RTM_GETROUTE lookups, and batches of RTM_NEWROUTE/RTM_DELROUTE.

Batches are where raw netlink is subtle, so the rules are explicit:

* at most ``BATCH`` messages per sendmsg, and every ACK of a batch is read
  before the next one is sent;
* every message has its own sequence number, so every error ACK is mapped to
  its request, whether the ACK carries the whole request or only its header
  (NLM_F_CAPPED) and whether extended-ACK attributes follow;
* when the kernel drops ACKs because the receive buffer is full (ENOBUFS: the
  requests were carried out, their answers lost), the unanswered messages of
  that batch are sent again one at a time.  A create-exclusive sent again may
  then report EEXIST for a route it made itself; the caller decides (netlink.py
  compares the route found with the one asked for);
* lookups (``get_many``) are batched the same way, each with its own sequence
  number and exactly one answer (a route or an errno); after ENOBUFS, what
  is unanswered, or answered with an error (a reply the kernel could not
  queue fails its request with EAGAIN, which also means "throw"), is asked
  again one at a time;
* a dump flagged NLM_F_DUMP_INTR (the kernel's table changed while it was
  read) is read again, a bounded number of times.

Records are NamedTuples of ints and strings (addresses as ``inet_ntop`` text),
and the attribute tables below are data, so a test can break one on purpose.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~2 ms at boot
import contextlib
import errno
import os
import struct

from .constants import MAIN_TABLE, RT_SCOPE_UNIVERSE, RTN_UNICAST
from .records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

    T = TypeVar("T")

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error ACKs carry only the request's header, not all of it

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_GETADDR = 18, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_GETRULE = 34

NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
FLAGS = {"create": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE,
         "delete": 0}

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE, RTA_VIA = 1, 4, 5, 6, 15, 18
RT_SCOPE_NOWHERE = 255  # in a delete: match a route of any scope
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 8
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

BATCH = 128  # messages per sendmsg
DUMP_ATTEMPTS = 5  # reads of a dump that keeps being interrupted before giving up
RECV_SIZE = 1 << 16  # the kernel's dump datagrams are at most 32 KiB
RECV_TIMEOUT_S = 10  # the kernel answers in microseconds; a unit must never hang on it

# Attribute id -> field, per message type.  Ids absent here are skipped.
ROUTE_ATTRS: Dict[int, str] = {1: "dst", 4: "oif", 5: "gateway", 6: "metric", 7: "prefsrc",
                               9: "multipath", 15: "table", 18: "via"}
HOP_ATTRS: Dict[int, str] = {5: "gateway", 18: "via"}
RULE_ATTRS: Dict[int, str] = {1: "dst", 2: "src", 3: "iifname", 6: "priority", 10: "fwmark",
                              15: "table", 17: "oifname"}
LINK_ATTRS: Dict[int, str] = {1: "address", 3: "name"}
ADDR_ATTRS: Dict[int, str] = {1: "address", 2: "local"}

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg, and fib_rule_hdr (same layout)
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")
_NEXTHOP = struct.Struct("=HBBi")  # rtnexthop: len, flags, hops (weight - 1), ifindex
_U16, _U32, _I32 = struct.Struct("=H"), struct.Struct("=I"), struct.Struct("=i")


class Link(NamedTuple):
    """A network interface; ``kind`` is ifi_type (ARPHRD_*), ``address`` IFLA_ADDRESS."""

    index: int  # type: ignore[assignment]  # the name callers use; shadows tuple.index
    name: str
    kind: int
    address: bytes


class Address(NamedTuple):
    """An interface address (IFA_LOCAL, or IFA_ADDRESS where there is no local one)."""

    index: int  # type: ignore[assignment]  # as in Link
    address: str
    prefixlen: int


class Hop(NamedTuple):
    """One next hop of a multipath route."""

    oif: int
    gateway: Optional[str]
    weight: int


class Route(NamedTuple):
    """A route as the kernel reports it; ``gateway`` is RTA_GATEWAY or RTA_VIA's address."""

    family: int
    table: int
    dst: Optional[str]  # None for a default route
    dst_len: int
    tos: int
    type: int
    proto: int
    scope: int
    metric: int
    oif: Optional[int]
    gateway: Optional[str]
    prefsrc: Optional[str]
    hops: Tuple[Hop, ...]


class Rule(NamedTuple):
    """An ``ip rule``, with the selectors the kernel reports."""

    family: int
    priority: int
    action: int
    table: int
    dst: Optional[str]
    dst_len: int
    src: Optional[str]
    src_len: int
    tos: int
    fwmark: int
    iifname: Optional[str]
    oifname: Optional[str]


class RouteOp(NamedTuple):
    """One change to the main table: ``create`` (exclusive), ``replace`` or ``delete``."""

    cmd: str
    family: int
    dst: str
    dst_len: int
    gateway: Optional[str]
    oif: Optional[int]
    metric: Optional[int]
    proto: int


class Event(NamedTuple):
    """An rtnetlink notification: its message type name, and a route's protocol."""

    kind: str
    proto: Optional[int]


def _attrs(buf: memoryview, off: int, end: int) -> List[Tuple[int, int, int]]:
    """(type, start, stop) of each attribute between ``off`` and ``end``."""
    out = []
    while off + 4 <= end:
        length, atype = _ATTR.unpack_from(buf, off)
        if length < 4:
            break
        out.append((atype & NLA_TYPE_MASK, off + 4, off + length))
        off += (length + 3) & ~3
    return out


def _text(buf: memoryview, start: int, stop: int) -> str:
    return bytes(buf[start:stop]).split(b"\0", 1)[0].decode("utf-8", "replace")


def _via(buf: memoryview, start: int, stop: int) -> str:
    """RTA_VIA is a family followed by an address (an IPv4 route via an IPv6 hop)."""
    return socket.inet_ntop(_U16.unpack_from(buf, start)[0], buf[start + 2:stop])


def _hops(buf: memoryview, family: int, off: int, end: int) -> Tuple[Hop, ...]:
    hops = []
    while off + 8 <= end:
        length, _flags, weight, oif = _NEXTHOP.unpack_from(buf, off)
        if length < 8:
            break
        gateway = None
        for atype, start, stop in _attrs(buf, off + 8, off + length):
            name = HOP_ATTRS.get(atype)
            if name == "gateway":
                gateway = socket.inet_ntop(family, buf[start:stop])
            elif name == "via":
                gateway = _via(buf, start, stop)
        hops.append(Hop(oif, gateway, weight + 1))
        off += (length + 3) & ~3
    return tuple(hops)


_NO_HOPS: Tuple[Hop, ...] = ()


def parse_route(buf: memoryview, off: int, end: int) -> Route:
    """One route message.  The attribute walk is ``_attrs`` written out in place,
    the commonest attributes first: this runs for every route of every dump and
    every lookup's answer, 30,000 times when apply-routes installs 10,000 routes."""
    family, dst_len, _, tos, table, proto, scope, rtype, _ = _RTMSG.unpack_from(buf, off)
    dst = gateway = prefsrc = oif = None
    metric, hops = 0, _NO_HOPS
    names, unpack_attr, unpack_u32, ntop = ROUTE_ATTRS, _ATTR.unpack_from, _U32.unpack_from, \
        socket.inet_ntop
    off += _RTMSG.size
    while off + 4 <= end:
        length, atype = unpack_attr(buf, off)
        if length < 4:
            break
        name = names.get(atype & NLA_TYPE_MASK)
        start, stop = off + 4, off + length
        off += (length + 3) & ~3
        if name is None:
            continue
        if name == "table":
            table = unpack_u32(buf, start)[0]  # rtm_table says 252 above 255
        elif name == "dst":
            dst = ntop(family, buf[start:stop])
        elif name == "oif":
            oif = unpack_u32(buf, start)[0]
        elif name == "gateway":
            gateway = ntop(family, buf[start:stop])
        elif name == "metric":
            metric = unpack_u32(buf, start)[0]
        elif name == "prefsrc":
            prefsrc = ntop(family, buf[start:stop])
        elif name == "via":
            gateway = _via(buf, start, stop)
        elif name == "multipath":
            hops = _hops(buf, family, start, stop)
    return Route(family, table, dst, dst_len, tos, rtype, proto, scope, metric, oif, gateway,
                 prefsrc, hops)


def parse_rule(buf: memoryview, off: int, end: int) -> Rule:
    family, dst_len, src_len, tos, table, _, _, action, _ = _RTMSG.unpack_from(buf, off)
    found: Dict[str, Union[int, str]] = {}
    for atype, start, stop in _attrs(buf, off + _RTMSG.size, end):
        name = RULE_ATTRS.get(atype)
        if name in ("dst", "src"):
            found[name] = socket.inet_ntop(family, buf[start:stop])
        elif name in ("iifname", "oifname"):
            found[name] = _text(buf, start, stop)
        elif name is not None:
            found[name] = _U32.unpack_from(buf, start)[0]
    return Rule(family, int(found.get("priority", 0)), action, int(found.get("table", table)),
                _opt(found.get("dst")), dst_len, _opt(found.get("src")), src_len, tos,
                int(found.get("fwmark", 0)), _opt(found.get("iifname")),
                _opt(found.get("oifname")))


def _opt(value: Union[int, str, None]) -> Optional[str]:
    return None if value is None else str(value)


def parse_link(buf: memoryview, off: int, end: int) -> Link:
    _, kind, index, _, _ = _IFINFO.unpack_from(buf, off)
    name, address = "", b""
    for atype, start, stop in _attrs(buf, off + _IFINFO.size, end):
        field = LINK_ATTRS.get(atype)
        if field == "name":
            name = _text(buf, start, stop)
        elif field == "address":
            address = bytes(buf[start:stop])
    return Link(index, name, kind, address)


def parse_address(buf: memoryview, off: int, end: int) -> Address:
    family, prefixlen, _, _, index = _IFADDR.unpack_from(buf, off)
    found: Dict[str, str] = {}
    for atype, start, stop in _attrs(buf, off + _IFADDR.size, end):
        field = ADDR_ATTRS.get(atype)
        if field is not None:
            found[field] = socket.inet_ntop(family, buf[start:stop])
    return Address(index, found.get("local") or found.get("address", ""), prefixlen)


def _attr(atype: int, data: bytes) -> bytes:
    return _ATTR.pack(4 + len(data), atype) + data + b"\0" * (-len(data) % 4)


_U32_ATTR = struct.Struct("=HHI")  # an attribute holding one u32: header and value at once
_MAIN_TABLE_ATTR = _U32_ATTR.pack(8, RTA_TABLE, MAIN_TABLE)


def encode_route(op: RouteOp) -> Tuple[int, int, bytes]:
    """(message type, flags, body) of one route change in the main table."""
    if op.cmd == "delete":
        msg_type, scope, rtype = RTM_DELROUTE, RT_SCOPE_NOWHERE, 0
    else:
        msg_type, scope, rtype = RTM_NEWROUTE, RT_SCOPE_UNIVERSE, RTN_UNICAST
    parts = [_RTMSG.pack(op.family, op.dst_len, 0, 0, MAIN_TABLE, op.proto, scope, rtype, 0),
             _MAIN_TABLE_ATTR, _attr(RTA_DST, socket.inet_pton(op.family, op.dst))]
    if op.gateway is not None and ":" in op.gateway and op.family == socket.AF_INET:
        # An IPv4 route via an IPv6 next hop (RFC 5549), e.g. a default route learnt so.
        parts.append(_attr(RTA_VIA, _U16.pack(socket.AF_INET6)
                           + socket.inet_pton(socket.AF_INET6, op.gateway)))
    elif op.gateway is not None:
        parts.append(_attr(RTA_GATEWAY, socket.inet_pton(op.family, op.gateway)))
    if op.oif is not None:
        parts.append(_U32_ATTR.pack(8, RTA_OIF, op.oif))
    if op.metric is not None:
        parts.append(_U32_ATTR.pack(8, RTA_PRIORITY, op.metric))
    return msg_type, FLAGS[op.cmd], b"".join(parts)


def encode_lookup(family: int, address: str) -> Tuple[int, int, bytes]:
    """(message type, flags, body) of the RTM_GETROUTE lookup of one address."""
    packed = socket.inet_pton(family, address)
    return (RTM_GETROUTE, 0,
            _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, packed))


def split(buf: memoryview, size: int) -> List[Tuple[int, int, int, int, int]]:
    """(type, flags, seq, body start, end) of each message in one datagram."""
    out, off = [], 0
    while off + _HDR.size <= size:
        length, mtype, flags, seq, _ = _HDR.unpack_from(buf, off)
        if length < _HDR.size or off + length > size:
            break
        out.append((mtype, flags, seq, off + _HDR.size, off + length))
        off += (length + 3) & ~3
    return out


def ack_error(buf: memoryview, body: int) -> int:
    """The errno of an NLMSG_ERROR (0 for a plain ACK).

    Its body is ``int error`` and the request's header, then either the rest of
    the request or nothing (NLM_F_CAPPED), then perhaps extended-ACK
    attributes: only the first field is needed, so what follows never matters.
    """
    return -_I32.unpack_from(buf, body)[0]


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace of the calling process."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        # Smaller error ACKs; before Linux 4.3 they carry the request, which ack_error skips.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        # A bound on every read, at the socket so that reads stay plain blocking
        # calls (Python's own timeout mode would also delay MSG_DONTWAIT reads).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("ll", RECV_TIMEOUT_S, 0))
        self.sock.bind((0, 0))
        self.seq = 0
        self.view = memoryview(bytearray(RECV_SIZE))
        self.overruns = 0  # batches whose ACKs the kernel dropped (ENOBUFS)
        self.dump_retries = 0  # dumps read again after NLM_F_DUMP_INTR

    def close(self) -> None:
        self.sock.close()

    def _send(self, messages: Sequence[Tuple[int, int, bytes]]) -> List[int]:
        """Send messages in one datagram; their sequence numbers."""
        seqs, parts = [], []
        for msg_type, flags, body in messages:
            self.seq += 1
            seqs.append(self.seq)
            parts.append(_HDR.pack(_HDR.size + len(body), msg_type, flags | NLM_F_REQUEST,
                                   self.seq, 0) + body)
        self.sock.sendto(b"".join(parts), (0, 0))
        return seqs

    def _recv(self, flags: int = 0) -> List[Tuple[int, int, int, int, int]]:
        return split(self.view, self.sock.recv_into(self.view, RECV_SIZE, flags))

    def _dump(self, msg_type: int, body: bytes,
              parse: Callable[[memoryview, int, int], T]) -> List[T]:
        for _ in range(DUMP_ATTEMPTS):
            [seq] = self._send([(msg_type, NLM_F_DUMP, body)])
            out, interrupted, done = [], False, False
            while not done:
                for mtype, mflags, mseq, start, end in self._recv():
                    if mseq != seq:
                        continue  # a stale answer to an earlier request
                    interrupted = interrupted or bool(mflags & NLM_F_DUMP_INTR)
                    if mtype in (NLMSG_DONE, NLMSG_ERROR):
                        code = ack_error(self.view, start) if end - start >= 4 else 0
                        if code:
                            raise OSError(code, f"rtnetlink dump failed: {os.strerror(code)}")
                        done = True
                    else:
                        out.append(parse(self.view, start, end))
            if not interrupted:
                return out
            self.dump_retries += 1
        raise OSError(errno.EAGAIN, f"rtnetlink dump interrupted {DUMP_ATTEMPTS} times in a "
                                    "row: the kernel's tables keep changing")

    def links(self) -> List[Link]:
        body = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_EXT_MASK,
                                                   _U32.pack(RTEXT_FILTER_SKIP_STATS))
        return self._dump(RTM_GETLINK, body, parse_link)

    def addresses(self, family: int) -> List[Address]:
        return self._dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0), parse_address)

    def routes(self, family: int) -> List[Route]:
        """Every route of ``family``, in every table."""
        return self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                          parse_route)

    def rules(self, family: int) -> List[Rule]:
        return self._dump(RTM_GETRULE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                          parse_rule)

    def get(self, family: int, address: str) -> Union[Route, int]:
        """The kernel's route for ``address`` (RTM_GETROUTE), or the errno it answered."""
        [seq] = self._send([encode_lookup(family, address)])
        while True:
            for mtype, _, mseq, start, end in self._recv():
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    return ack_error(self.view, start)
                if mtype == RTM_NEWROUTE:
                    return parse_route(self.view, start, end)

    def get_many(self, family: int, addresses: Sequence[str]) -> List[Union[Route, int]]:
        """``get`` for each address, asked ``BATCH`` at a time instead of one round trip each.

        apply-routes verifies every route it installs with a lookup, and 10,000
        round trips were most of its time.  A batch whose answers the kernel
        dropped (ENOBUFS) is finished one address at a time with ``get``; see
        ``_lookups`` for which answers are kept.
        """
        found: Dict[int, Union[Route, int]] = {}
        messages = [encode_lookup(family, address) for address in addresses]
        for first in range(0, len(messages), BATCH):
            chunk = list(range(first, min(first + BATCH, len(messages))))
            for index in self._lookups(messages, chunk, found):
                found[index] = self.get(family, addresses[index])
        return [found[index] for index in range(len(messages))]

    def _lookups(self, messages: Sequence[Tuple[int, int, bytes]], chunk: List[int],
                 found: Dict[int, Union[Route, int]]) -> List[int]:
        """Send the lookups of ``chunk`` in one datagram and read their answers; the
        indexes to ask again.

        Each lookup has exactly one answer, a route or an error, and the kernel
        queues them inside sendmsg, as it does ACKs (see ``_batch``).  After
        ENOBUFS the routes that did arrive are kept, and every lookup left
        unanswered or answered with an error is asked again: a reply the kernel
        could not queue fails the request with EAGAIN, which also means "throw".
        """
        seqs = self._send([messages[i] for i in chunk])
        waiting = dict(zip(seqs, chunk))
        errors: List[int] = []
        recv_flags = 0
        while waiting:
            try:
                answers = self._recv(recv_flags)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                recv_flags = socket.MSG_DONTWAIT
                continue
            for mtype, _, seq, start, end in answers:
                if seq not in waiting:
                    continue  # a stale answer to an earlier request
                if mtype == NLMSG_ERROR:
                    index = waiting.pop(seq)
                    found[index] = ack_error(self.view, start)
                    errors.append(index)
                elif mtype == RTM_NEWROUTE:
                    found[waiting.pop(seq)] = parse_route(self.view, start, end)
        return sorted([*waiting.values(), *(errors if recv_flags else ())])

    def execute(self, ops: Sequence[RouteOp]) -> List[int]:
        """Carry out route changes in batches; the errno of each (0 when done)."""
        codes = [0] * len(ops)
        messages = [encode_route(op) for op in ops]
        for first in range(0, len(ops), BATCH):
            chunk = list(range(first, min(first + BATCH, len(ops))))
            for index in self._batch(messages, chunk, codes):
                if self._batch(messages, [index], codes):
                    codes[index] = errno.ENOBUFS  # even a lone ACK was lost: outcome unknown
        return codes

    def _batch(self, messages: Sequence[Tuple[int, int, bytes]], chunk: List[int],
               codes: List[int]) -> List[int]:
        """Send ``chunk`` in one datagram and read its ACKs; the indexes left unanswered.

        rtnetlink handles a datagram synchronously inside sendmsg, so once it has
        returned every ACK is either queued or dropped: after ENOBUFS, reading
        on without blocking collects the queued ones, and the rest are lost.
        """
        seqs = self._send([(mtype, flags | NLM_F_ACK, body)
                           for mtype, flags, body in (messages[i] for i in chunk)])
        waiting = dict(zip(seqs, chunk))
        recv_flags = 0
        while waiting:
            try:
                answers = self._recv(recv_flags)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                recv_flags = socket.MSG_DONTWAIT
                continue
            for mtype, _, seq, start, _ in answers:
                if mtype == NLMSG_ERROR and seq in waiting:
                    codes[waiting.pop(seq)] = ack_error(self.view, start)
        return sorted(waiting.values())
