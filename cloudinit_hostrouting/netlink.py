"""The kernel edge: every rtnetlink call this package makes goes through ``Kernel``.

Two backends return the same records (rtnl.py):

* ``rtnl``: a codec on the standard library alone.  The two boot units use it,
  because it costs microseconds where importing pyroute2 costs ~150 ms.
* ``pyroute2`` (pyroute2_backend.py): another network namespace (``--netns``;
  Python before 3.12 has no ``os.setns``), the guard's event subscription, and
  azure-suggest.

``Kernel(netns)`` picks the codec without a namespace and pyroute2 with one;
callers that need pyroute2 anyway say so.  No module outside these three opens
a netlink socket or builds a netlink message.

``install`` is the only way this package adds or changes a route, and it never
touches a route that is not ours; see its docstring.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: its enums and selectors cost ~2 ms at boot
import errno
import ipaddress
import os

from . import rtnl
from .analysis import Answer, Rule, TableRoute, Tables, own_region, split_exact_clashes
from .constants import (
    FR_ACT_TO_TBL,
    IP6_DEFAULT_METRIC,
    MAIN_TABLE,
    OUR_PROTOS,
    PROTOS,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RTN_TYPES,
    RTN_UNICAST,
    RTPROT_HOSTROUTING,
    RULE_ACTIONS,
)
from .records import NamedTuple
from .rtnl import Address, Event, Link, Route, RouteOp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

    from .pyroute2_backend import EventFeed, Pyroute2

RTNL, PYROUTE2 = "rtnl", "pyroute2"
# What RTM_GETROUTE's error means: the kernel answers these route types with an errno.
LOOKUP_ERRORS = {errno.EINVAL: "blackhole", errno.EHOSTUNREACH: "unreachable",
                 errno.EACCES: "prohibit", errno.ENETUNREACH: "unreachable",
                 errno.EAGAIN: "throw"}
OUR_PROTO_NAMES = frozenset(PROTOS[p] for p in OUR_PROTOS)
# Addresses per batched ask, and routes per verification step: the kernel's full
# route records, probes and answers for at most this many are alive at once (all
# 10,000 at once added 8 MiB to apply-routes' peak).
LOOKUP_CHUNK = 1024

# What install() did with a route.  The first four leave it installed.
CREATED, REPLACED, UNCHANGED, NOT_IN_EFFECT = "created", "replaced", "unchanged", "not-in-effect"
REFUSED, FAILED = "refused", "failed"
INSTALLED = frozenset({CREATED, REPLACED, UNCHANGED, NOT_IN_EFFECT})

if TYPE_CHECKING:
    Prefix = Tuple[int, int]  # (network address as an int, prefix length)


def family_of(version: int) -> int:
    """AF_INET or AF_INET6 for an ``ipaddress`` version number."""
    return socket.AF_INET if version == 4 else socket.AF_INET6


class DefaultRoute(NamedTuple):
    """The default route of the main table with the lowest metric."""

    ifname: str
    ifindex: int
    gateway: Optional[str]


class RouteError(Exception):
    """A route could not be installed; ``str()`` is the reason, for humans."""


class Want(NamedTuple):
    """A route to install in the main table, with its device already resolved."""

    destination: Any  # IPv4Network or IPv6Network
    gateway: str
    ifindex: int
    dev: str
    metric: Optional[int]

    def describe(self) -> str:
        metric = f" metric {self.metric}" if self.metric is not None else ""
        return f"{self.destination} via {self.gateway} dev {self.dev}{metric}"


class Installed(NamedTuple):
    """What ``install`` did with one route; ``error`` says why, for humans."""

    status: str  # created, replaced, unchanged, not-in-effect, refused, failed
    error: Optional[str]

    @property
    def installed(self) -> bool:
        return self.status in INSTALLED


# What a change the kernel carried out made of its route: one record each, shared.
DONE = {"create": Installed(CREATED, None), "replace": Installed(REPLACED, None)}


class Lost(NamedTuple):
    """Notifications were lost (``reason``, e.g. ENOBUFS after a burst)."""

    reason: str


class Batch(NamedTuple):
    """What the event feed hands over at once.

    ``lost`` is set when notifications were lost since the previous batch; the
    feed had already subscribed anew when it said so, so one complete re-read
    of the kernel's state after this batch misses nothing.
    """

    events: List[Event]
    lost: Optional[str] = None


class FeedError(RuntimeError):
    """The event feed is gone and could not be re-opened: its reader is deaf."""


class Kernel:
    """One rtnetlink socket (either backend) plus the interface-name cache lookups need."""

    edge: Union[rtnl.Rtnl, Pyroute2]

    def __init__(self, netns: Optional[str] = None, backend: Optional[str] = None):
        backend = backend or (RTNL if netns is None else PYROUTE2)
        if backend == RTNL:
            if netns is not None:
                raise ValueError("the rtnl codec works in its own namespace only")
            self.edge = rtnl.Rtnl()
        else:
            from .pyroute2_backend import Pyroute2

            self.edge = Pyroute2(netns)
        self.backend = backend
        self._names: Dict[int, str] = {}

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.edge.close()

    # --- reading ----------------------------------------------------------------

    def links(self) -> List[Link]:
        links = self.edge.links()
        self._names = {link.index: link.name for link in links}
        return links

    def addresses(self, version: int) -> List[Address]:
        return self.edge.addresses(family_of(version))

    def routes(self, version: int, table: Optional[int] = None) -> List[Route]:
        """Routes of one family, of one table or (None) of all."""
        routes = self.edge.routes(family_of(version))
        return routes if table is None else [r for r in routes if r.table == table]

    def rules(self, version: int) -> List[rtnl.Rule]:
        return self.edge.rules(family_of(version))

    def events(self) -> EventFeed:
        """Route, address and link notifications, both families (pyroute2 backend only).

        ``get(timeout)`` returns a ``Batch``, or raises ``FeedError`` when the
        subscription failed and could not be re-made.
        """
        if isinstance(self.edge, rtnl.Rtnl):
            raise RuntimeError("rtnetlink events need Kernel(backend=PYROUTE2)")
        return self.edge.events()

    def ifname(self, index: Optional[int]) -> Optional[str]:
        """Interface name for an index; re-reads links once on a miss (renames)."""
        if index is None:
            return None
        if index not in self._names:
            self.links()
        return self._names.get(index)

    def ifindex(self, name: str) -> Optional[int]:
        """Interface index for a name, or None if no such interface exists now."""
        self.links()
        for index, known in self._names.items():
            if known == name:
                return index
        return None

    def forget_links(self) -> None:
        """Drop the name cache after link events (renames, re-created interfaces)."""
        self._names = {}

    def default_route(self, ifname: Optional[str] = None,
                      version: int = 4) -> Optional[DefaultRoute]:
        """The lowest-metric default route of the main table (on ``ifname``)."""
        best: Optional[Tuple[int, DefaultRoute]] = None
        for route in self.routes(version, MAIN_TABLE):
            if route.dst_len != 0 or route.type != RTN_UNICAST:
                continue
            oif = _oif(route)
            name = self.ifname(oif)
            if oif is None or name is None or (ifname is not None and name != ifname):
                continue
            if best is None or route.metric < best[0]:
                best = (route.metric, DefaultRoute(name, oif, route.gateway))
        return best[1] if best else None

    def answer(self, address: Any) -> Answer:
        """Ask the kernel where ``address`` goes (RTM_GETROUTE honours ip rules)."""
        return self._answer_of(self.edge.get(family_of(address.version), str(address)))

    def answers(self, addresses: Sequence[Any]) -> List[Answer]:
        """``answer`` for each address, asked in batches, one family at a time.

        Verifying 10,000 routes, or checking 4,096 CIDRs, asks that many
        questions: one round trip each was most of the units' time.
        """
        out: Dict[int, Answer] = {}
        for version in (4, 6):
            picked = [i for i, address in enumerate(addresses) if address.version == version]
            family = family_of(version)
            for first in range(0, len(picked), LOOKUP_CHUNK):
                part = picked[first:first + LOOKUP_CHUNK]
                # inet_ntop of the bytes: str() of an ipaddress object costs four times more.
                found = self.edge.get_many(family, [socket.inet_ntop(family, addresses[i].packed)
                                                    for i in part])
                out.update(zip(part, map(self._answer_of, found)))
        return [out[i] for i in range(len(addresses))]

    def _answer_of(self, found: Union[Route, int]) -> Answer:
        if isinstance(found, int):
            return Answer(None, LOOKUP_ERRORS.get(found, "error"))
        return Answer(self.ifname(_oif(found)), RTN_TYPES.get(found.type) or str(found.type))

    def tables(self, version: int, known: Sequence[Any] = ()) -> Tables:
        """All routes in tables that rules can reach, and rule selectors, of one family.

        One dump of each; the analysis indexes them once for every expected CIDR.
        ``known`` are networks built already (the config's): a route with one of
        their prefixes shares that object instead of building its own, which for
        10,000 routes of ours saves 10,000 network objects.
        """
        rules, reachable = [], set()
        for rule in self.rules(version):
            if rule.action == FR_ACT_TO_TBL:
                reachable.add(rule.table)
            if rule.dst and rule.dst_len:
                verb = f"lookup {rule.table}" if rule.action == FR_ACT_TO_TBL else \
                    RULE_ACTIONS.get(rule.action, f"action {rule.action}")
                rules.append(Rule(ipaddress.ip_network(f"{rule.dst}/{rule.dst_len}"),
                                  rule.priority, verb))
        networks = {_prefix(net): net for net in known if net.version == version}
        routes = [self.table_route(r, networks) for r in self.routes(version)
                  if r.table in reachable]
        return Tables(routes, rules)

    def table_route(self, route: Route,
                    networks: Optional[Dict[Prefix, Any]] = None) -> TableRoute:
        """A route as the analysis and every message describe it (its network taken
        from ``networks`` by prefix where it is there)."""
        start = int.from_bytes(socket.inet_pton(route.family, route.dst), "big") \
            if route.dst else 0
        network = networks.get((start, route.dst_len)) if networks else None
        return TableRoute(
            network=_network_of(route.family, start, route.dst_len) if network is None
            else network,
            table=route.table,
            kind=RTN_TYPES.get(route.type) or str(route.type),
            ifname=self.ifname(_oif(route)),
            gateway=route.gateway,
            proto=PROTOS.get(route.proto) or str(route.proto),
            scope_link=route.scope == RT_SCOPE_LINK,
            metric=route.metric,
        )

    def default_from(self, tables: Tables) -> Optional[DefaultRoute]:
        """The default route ``default_route`` would find, read from a dump already made."""
        best = tables.default()
        if best is None or best.ifname is None:
            return None
        index = next(i for i, name in self._names.items() if name == best.ifname)
        return DefaultRoute(best.ifname, index, best.gateway)

    def tagged(self, proto: int, version: int) -> List[Any]:
        """Destinations of main-table routes carrying ``proto`` (ours are told by it)."""
        return [ipaddress.ip_network(f"{r.dst}/{r.dst_len}")
                for r in self.routes(version, MAIN_TABLE) if r.proto == proto and r.dst]

    # --- changing -------------------------------------------------------------------

    def delete(self, destination: Any, proto: int) -> None:
        """Delete a route *only* if it carries ``proto``: the kernel checks the tag."""
        [code] = self.edge.execute([RouteOp(
            "delete", family_of(destination.version), str(destination.network_address),
            destination.prefixlen, None, None, None, proto)])
        if code not in (0, errno.ESRCH):
            raise RouteError(f"kernel refused: {os.strerror(code)}")

    def install(self, wants: Sequence[Want],
                proto: int = RTPROT_HOSTROUTING) -> List[Installed]:
        """Install routes tagged ``proto``, never touching a route that is not ours.

        Per family, the main table is read once.  A route's key is (destination,
        tos, metric): IPv4 without a metric means 0, IPv6 1024, and IPv6 has no
        tos.  Then, for each route:

        * the destination is the prefix of a route that is not ours: refused,
          whatever the metric (the same metric would replace that route, a
          lower one silently disable it, a higher one never take effect), with
          both routes named and the halves to route instead;
        * no route has the key: created with NLM_F_CREATE|NLM_F_EXCL, so the
          kernel refuses if one appeared meanwhile (reported naming it; without
          EXCL, IPv6 would append an ECMP sibling to it);
        * a route of ours has the key: replaced, or left alone when identical.
          Ours means ``proto``; static routes (214) may also take over a
          guard-made one (215), never the other way round.

        Then every route of ours is checked to take effect: the kernel is asked
        about an address of the route's own region (the part no more-specific
        prefix covers), which must go out of the route's device.  One that does
        not (a policy rule, a local address, more-specific routes) stays
        installed, since it is ours and harmless and takes effect once the
        culprit goes, and is reported ``not-in-effect`` naming the culprit.
        """
        results: List[Installed] = [Installed(FAILED, "not attempted")] * len(wants)
        for version in sorted({w.destination.version for w in wants}):
            items = [(i, w) for i, w in enumerate(wants) if w.destination.version == version]
            self._install(version, items, proto, results)
            # Once _install has returned, its dump of the main table is freed.
            self._verify(version, [(i, w) for i, w in items if results[i].installed], results)
        return results

    def _install(self, version: int, items: List[Tuple[int, Want]], proto: int,
                 results: List[Installed]) -> None:
        mine = OUR_PROTOS if proto == RTPROT_HOSTROUTING else frozenset({proto})
        main = self.routes(version, MAIN_TABLE)
        held = _by_prefix(main)
        ops: List[RouteOp] = []
        pending: List[Tuple[int, Want]] = []
        taken: Set[Any] = set()  # main-table prefixes, for the refusals' advice
        family = family_of(version)
        for i, want in items:
            same = held.get(_prefix(want.destination))
            holder = None
            if same:  # at first boot no route has the prefix: nothing to weigh
                foreign = [r for r in same if r.proto not in mine]
                if foreign:
                    taken = taken or {self.table_route(r).network for r in main}
                    results[i] = Installed(REFUSED, self._refusal(want, foreign, taken))
                    continue
                holder = _holder(same, want)
                if holder is not None and _same(holder, want, proto):
                    results[i] = Installed(UNCHANGED, None)
                    continue
            dest = want.destination
            ops.append(RouteOp("create" if holder is None else "replace", family,
                               socket.inet_ntop(family, dest.network_address.packed),
                               dest.prefixlen, want.gateway, want.ifindex, want.metric, proto))
            pending.append((i, want))
        raced = []
        for (i, want), op, code in zip(pending, ops, self.edge.execute(ops) if ops else []):
            if code == 0:
                results[i] = DONE[op.cmd]
            elif code == errno.EEXIST and op.cmd == "create":
                raced.append((i, want))
            else:
                results[i] = Installed(FAILED, _explain(code, want.gateway))
        if raced:
            self._settle_races(version, raced, proto, results)

    def _refusal(self, want: Want, foreign: List[Route], taken: Set[Any]) -> str:
        """Why ``want`` is refused, naming the route that is not ours and what to do instead."""
        metric = _metric(want)
        culprit = next((r for r in foreign if r.metric == metric), None) or \
            min(foreign, key=lambda r: r.metric)
        theirs = self.table_route(culprit).describe()
        dest = want.destination
        if culprit.metric == metric:
            what = f"{dest} would replace {theirs} (not ours)"
        elif metric < culprit.metric:
            what = (f"{dest} metric {metric} would silently disable {theirs} (not ours), "
                    "which has the same prefix")
        else:
            what = (f"{dest} would never take effect: {theirs} (not ours) has the same "
                    "prefix and a lower metric")
        parts = split_exact_clashes([dest], taken)
        hint = f"route only the ranges that must leave via {want.dev}, e.g. the cluster CIDR"
        if len(parts) == 2:
            hint += f", or its halves {parts[0]} and {parts[1]}"
        elif parts:
            hint += ", or its parts " + ", ".join(str(p) for p in parts)
        return f"{what}: {hint}"

    def _settle_races(self, version: int, raced: List[Tuple[int, Want]], proto: int,
                      results: List[Installed]) -> None:
        """EEXIST on a create: name what holds the key now.

        An identical route of ours is a success: the codec resends a batch whose
        ACKs the kernel dropped, and the first attempt may have made it.
        """
        held = _by_prefix(self.routes(version, MAIN_TABLE))
        for i, want in raced:
            found = _holder(held.get(_prefix(want.destination), []), want)
            if found is not None and _same(found, want, proto):
                results[i] = Installed(CREATED, None)
            elif found is None:
                results[i] = Installed(FAILED, "the kernel reported a route with this "
                                               "destination and metric, but none is there now")
            else:
                whose = "ours" if found.proto in OUR_PROTOS else "not ours"
                results[i] = Installed(REFUSED, (
                    f"{want.destination} collides with {self.table_route(found).describe()} "
                    f"({whose}), which appeared while installing; it was left as it is"))

    def _verify(self, version: int, items: List[Tuple[int, Want]],
                results: List[Installed]) -> None:
        """Check that each route takes effect: the probes of LOOKUP_CHUNK routes at a
        time first, then one batched ask for them."""
        if not items:
            return
        tables = self.tables(version, [want.destination for _, want in items])
        for first in range(0, len(items), LOOKUP_CHUNK):
            part = items[first:first + LOOKUP_CHUNK]
            regions = [own_region(want.destination, tables) for _, want in part]
            answers = iter(self.answers([probe for _, probe in regions if probe is not None]))
            for (i, want), (holes, probe) in zip(part, regions):
                answer = None if probe is None else next(answers)
                problem = self._effect(want, tables, holes, probe, answer)
                if problem is not None:
                    results[i] = Installed(NOT_IN_EFFECT, problem)

    def _effect(self, want: Want, tables: Tables, holes: Tuple[Any, ...], probe: Any,
                answer: Optional[Answer]) -> Optional[str]:
        """None if ``want`` decides where its own region goes, else why not.

        ``holes`` and ``probe`` are its own region (``own_region``), ``answer``
        the kernel's for the probe (None without a probe).
        """
        if probe is None or answer is None:
            covering = [str(rule.describe()) for rule in tables.rules if rule.network in holes]
            for hole in holes:
                covering.extend(r.describe() for r in tables.by_prefix.get(
                    (int(hole.network_address), hole.prefixlen), [])
                    if r.proto not in OUR_PROTO_NAMES)
            if not covering:
                return None  # more-specific routes of ours carry all of it
            more = f" and {len(covering) - 1} more" if len(covering) > 1 else ""
            return (f"{want.describe()} is installed but never takes effect: more-specific "
                    f"routes cover all of it, e.g. {covering[0]}{more}")
        if answer.kind == "unicast" and answer.ifname == want.dev:
            return None
        where = f"via {answer.ifname}" if answer.kind == "unicast" else f"to {answer.kind}"
        culprit = tables.culprit(probe, answer) or "a route or rule the dumps do not show"
        return (f"{want.describe()} is installed but does not take effect: {probe} goes "
                f"{where} because of: {culprit}")


def _oif(route: Route) -> Optional[int]:
    """The route's output interface; for a multipath route, its first hop's."""
    if route.oif is None and route.hops:
        return route.hops[0].oif
    return route.oif


def _metric(want: Want) -> int:
    """The metric the kernel gives ``want`` (part of its key)."""
    if want.metric is not None:
        return want.metric
    return 0 if want.destination.version == 4 else IP6_DEFAULT_METRIC


def _prefix(net: Any) -> Prefix:
    return int(net.network_address), net.prefixlen


def _by_prefix(routes: List[Route]) -> Dict[Prefix, List[Route]]:
    out: Dict[Prefix, List[Route]] = {}
    for r in routes:
        start = int.from_bytes(socket.inet_pton(r.family, r.dst), "big") if r.dst else 0
        out.setdefault((start, r.dst_len), []).append(r)
    return out


def _holder(same_prefix: List[Route], want: Want) -> Optional[Route]:
    """The route holding ``want``'s key: same prefix, metric and (IPv4) tos 0."""
    metric = _metric(want)
    return next((r for r in same_prefix if r.metric == metric and r.tos == 0), None)


def _same(route: Route, want: Want, proto: int) -> bool:
    """Is ``route`` exactly what installing ``want`` with ``proto`` would make?"""
    return (route.proto == proto and route.type == RTN_UNICAST and not route.hops
            and route.scope == RT_SCOPE_UNIVERSE and route.oif == want.ifindex
            and route.gateway is not None and _packed(route.gateway) == _packed(want.gateway))


def _packed(address: str) -> bytes:
    """An address's bytes: equal exactly when ``ip_address`` objects are, at a tenth of
    the cost (checked for every route apply-routes installs)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def _network_of(family: int, start: int, plen: int) -> Any:
    """A route's destination as an ``ipaddress`` network, built from its integer value:
    half the cost of parsing ``dst/len`` text, once per route of every dump."""
    if family == socket.AF_INET:
        return ipaddress.IPv4Network((start, plen))
    return ipaddress.IPv6Network((start, plen))


def _explain(code: int, gateway: str) -> str:
    if code == errno.ENETUNREACH:
        return f"gateway {gateway} is not reachable on that interface (no connected route)"
    if code == errno.ENODEV:
        return "the interface disappeared"
    if code == errno.EPERM:
        return "permission denied (routes need root or CAP_NET_ADMIN)"
    if code == errno.ENOBUFS:
        return "the kernel's answer was lost twice (ENOBUFS); run again to know the outcome"
    return f"kernel refused: {os.strerror(code)}"
