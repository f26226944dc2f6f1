"""Print, as JSON, everything the kernel edge reads and does, through one backend.

A test helper, run as a process so the stdlib codec can run inside a namespace
(``ip netns exec NS python edge_probe.py rtnl``; Python 3.11 has no os.setns)::

    edge_probe.py BACKEND [--netns NAME] [--break FAULT] < request.json

The request names addresses to look up (one at a time, and batched as
``many``) and routes to install (by device name); the answer holds links,
addresses, raw route and rule dumps, the analysis tables, default routes,
lookup answers, install results and the main tables afterwards.  ``--break``
plants one codec bug first (a wrong or dropped attribute id, a lost answer
taken as lost for good, answers handed to the wrong address), so tests can
show that comparing two backends, or the codec with the kernel, catches it.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import socket
import sys
from typing import Any, Callable, Dict, List, Optional

from cloudinit_hostrouting import netlink, rtnl
from cloudinit_hostrouting.analysis import Tables
from cloudinit_hostrouting.netlink import Kernel, Want

NETLINK_EXT_ACK = 11


def _move(table: Dict[int, str], old: int, new: int) -> Callable[[], None]:
    return lambda: table.__setitem__(new, table.pop(old))


BREAKS: Dict[str, Callable[[], None]] = {
    "route-oif-id": _move(rtnl.ROUTE_ATTRS, 4, 3),  # reads RTA_IIF as the output device
    "route-table-id": _move(rtnl.ROUTE_ATTRS, 15, 16),  # misses RTA_TABLE: 252 above 255
    "rule-dst-dropped": lambda: rtnl.RULE_ATTRS.pop(1),  # loses the "to" selector
    "hop-gateway-dropped": lambda: rtnl.HOP_ATTRS.pop(5),  # multipath hops lose gateways
    # Treats every ACK of a batch as read, so none the kernel dropped is sent again.
    "no-resend": lambda: setattr(rtnl.Rtnl, "_batch", _no_resend(rtnl.Rtnl._batch)),
    "dump-intr-ignored": lambda: setattr(rtnl, "NLM_F_DUMP_INTR", 0),
    # Takes every lookup a batch left unanswered as lost (ENOBUFS) instead of asking again.
    "no-lookup-resend": lambda: setattr(rtnl.Rtnl, "_lookups",
                                        _no_lookup_resend(rtnl.Rtnl._lookups)),
    # Verifies a route by its first address, as if no more-specific prefix were inside it.
    "own-region-no-holes": lambda: setattr(netlink, "own_region", _no_holes(netlink.own_region)),
    # Hands each batched answer to the next address (answers mapped by position, off by one).
    "lookups-shifted": lambda: setattr(rtnl.Rtnl, "get_many",
                                       _shifted(rtnl.Rtnl.get_many)),
}


def _no_lookup_resend(lookups: Callable[..., List[int]]) -> Callable[..., List[int]]:
    def broken(self: rtnl.Rtnl, messages: Any, chunk: List[int],
               found: Dict[int, Any]) -> List[int]:
        for index in lookups(self, messages, chunk, found):
            found[index] = errno.ENOBUFS
        return []
    return broken


def _no_holes(own_region: Callable[..., Any]) -> Callable[..., Any]:
    def broken(cidr: Any, tables: Any) -> Any:
        return (), own_region(cidr, Tables([], []))[1]
    return broken


def _shifted(get_many: Callable[..., List[Any]]) -> Callable[..., List[Any]]:
    def broken(self: rtnl.Rtnl, family: int, addresses: List[str]) -> List[Any]:
        found = get_many(self, family, addresses)
        return found[1:] + found[:1]
    return broken


def _no_resend(batch: Callable[..., List[int]]) -> Callable[..., List[int]]:
    return lambda self, *args: batch(self, *args) and []


def snapshot(kernel: Kernel, request: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "links": [[link.index, link.name, link.kind, link.address.hex()]
                  for link in kernel.links()],
        "answers": [list(kernel.answer(ipaddress.ip_address(a)))
                    for a in request.get("answers", [])],
    }
    if "many" in request:  # the batched lookups, both families mixed as the request has them
        out["many"] = [list(a) for a in kernel.answers(
            [ipaddress.ip_address(a) for a in request["many"]])]
    for version in (4, 6):
        tables = kernel.tables(version)
        out[f"addresses{version}"] = kernel.addresses(version)
        out[f"routes{version}"] = kernel.routes(version)
        out[f"rules{version}"] = kernel.rules(version)
        out[f"tables{version}"] = [r.describe() for r in tables.routes] + \
            [r.describe() for r in tables.rules]
        out[f"default{version}"] = kernel.default_route(version=version)
    wants = [Want(ipaddress.ip_network(w["destination"]), w["gateway"],
                  kernel.ifindex(w["dev"]) or 999, w["dev"], w.get("metric"))
             for w in request.get("install", [])]
    if wants:
        out["installed"] = kernel.install(wants, request.get("proto", 214))
        out["after4"] = kernel.routes(4, 254)
        out["after6"] = kernel.routes(6, 254)
    return out


def configure(sock: socket.socket, rcvbuf: Optional[int], acks: Optional[str]) -> None:
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if acks is not None:
        sock.setsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_CAP_ACK, int(acks == "capped"))
        sock.setsockopt(rtnl.SOL_NETLINK, NETLINK_EXT_ACK, int(acks == "extended"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=("rtnl", "pyroute2"))
    parser.add_argument("--netns")
    parser.add_argument("--break", dest="fault", choices=sorted(BREAKS))
    parser.add_argument("--rcvbuf", type=int, help="the codec socket's SO_RCVBUF")
    parser.add_argument("--acks", choices=("capped", "full", "extended"),
                        help="error ACKs with the request's header only, all of it, or "
                             "all of it plus extended-ACK attributes")
    args = parser.parse_args()
    if args.fault:
        BREAKS[args.fault]()
    request = json.load(sys.stdin)
    with Kernel(args.netns, backend=args.backend) as kernel:
        edge = kernel.edge
        if isinstance(edge, rtnl.Rtnl):
            configure(edge.sock, args.rcvbuf, args.acks)
        out = snapshot(kernel, request)
        if isinstance(edge, rtnl.Rtnl):
            out["overruns"], out["dump_retries"] = edge.overruns, edge.dump_retries
        json.dump(out, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
