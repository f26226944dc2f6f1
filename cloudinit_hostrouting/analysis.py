"""Complete shadow analysis: every sub-range of an expected CIDR that goes astray.

Upstream probes one address (network+1) per expected CIDR, so an expected
10.0.0.0/8 with an IB 10.5.0.0/16 inside it passes while a whole /16 of the
cluster is blackholed.  Here the route tables propose and the kernel decides:

1. Every route prefix (in every table a rule can reach) and every ``ip rule``
   destination selector that lies inside the expected CIDR is a boundary.
   Prefixes nest or are disjoint, so they form a tree; the *region* of a prefix
   is the prefix minus its children.  Within one region every address is
   covered by the same set of prefixes, so the kernel's answer is the same for
   all of them (multipath routes aside, which hash per flow).
2. One representative address per region is looked up with a real
   RTM_GETROUTE, which honours policy rules.  The kernel's answer is the truth;
   the tables only explain it (the *culprit* route named in the report).

Cost: the partition is built with sorting and bisection, so the work is
O((routes + CIDRs) log routes) plus one lookup per region, never routes x CIDRs.
This module is pure: lookups arrive through a callable (``analyze``), or as
answers already asked in one batch (``regions`` then ``judge``), so tests can
drive it against the real kernel (in a namespace) or reason about it directly.

Pending routes (``PendingRoute``) are routes the kernel does not have yet but
will: the connected /16 of an IPoIB address the host announced (kvp.py, ib.py)
and the guest agent adds after the boot check.  ``Tables.with_pending`` adds
them as boundaries, and ``analyze`` corrects the kernel's answer where one would
win: in the main table, by longest prefix (a tie goes to the route already
there unless it has a higher metric), unless the kernel's answer did not come
from the main table's best route (a policy rule decided first; then the
pending route changes nothing).  Where no main-table route matches, the
pending route is taken to win (the safe side for a gate).  A shadow from a
pending route is a finding like any other, its culprit naming the source.
"""

from __future__ import annotations

import bisect
import ipaddress

from .constants import MAIN_TABLE
from .records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import AbstractSet, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

IPNetwork = ipaddress._BaseNetwork  # IPv4Network or IPv6Network
IPAddress = ipaddress._BaseAddress

# Route types that do not decide where traffic for other addresses goes: the
# host's own addresses (local) and link broadcast/anycast/multicast entries.
# They are kept out of the regions, and representatives avoid them.
PASSIVE_TYPES = frozenset({"local", "broadcast", "anycast", "multicast"})
NO_ROUTE_TYPES = frozenset({"blackhole", "unreachable", "prohibit", "throw", "error"})


class TableRoute(NamedTuple):
    """One route from a kernel table, reduced to what the analysis needs."""

    network: IPNetwork
    table: int
    kind: str  # unicast, local, blackhole, ...
    ifname: Optional[str]
    gateway: Optional[str]
    proto: str
    scope_link: bool
    metric: int
    pending: Optional[str] = None  # where a route not in the kernel yet comes from

    def describe(self) -> str:
        """The route as ``ip route`` prints it (without src), e.g. for the report.

        A pending route says where it comes from and that it is not there yet.
        """
        if self.pending is not None:
            return f"{self.network} on {self.ifname}, from {self.pending}, not yet assigned"
        parts = [] if self.kind == "unicast" else [self.kind]
        parts.append(str(self.network))
        if self.gateway:
            parts.append(f"via {self.gateway}")
        if self.ifname and self.kind not in NO_ROUTE_TYPES:
            parts.append(f"dev {self.ifname}")
        if self.table != MAIN_TABLE:
            parts.append(f"table {self.table}")
        parts.append(f"proto {self.proto}")
        if self.scope_link:
            parts.append("scope link")
        if self.metric:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)


class PendingRoute(NamedTuple):
    """A connected route that will appear when ``address`` is added to ``ifname``."""

    network: IPNetwork
    ifname: str
    address: IPAddress
    source: str  # e.g. "KVP IPoIB_Data"

    def route(self) -> TableRoute:
        """As the kernel will hold it: main table, proto kernel, scope link, metric 0."""
        return TableRoute(self.network, MAIN_TABLE, "unicast", self.ifname, None, "kernel",
                          True, 0, self.source)

    def describe(self) -> str:
        return self.route().describe()

    def to_dict(self) -> Dict[str, str]:
        return {"route": str(self.network), "interface": self.ifname,
                "address": str(self.address), "source": self.source}


class Rule(NamedTuple):
    """An ``ip rule`` destination selector (rules without one add no boundary)."""

    network: IPNetwork
    priority: int
    action: str  # "lookup 100", "blackhole", ...

    def describe(self) -> str:
        return f"rule {self.priority}: to {self.network} {self.action}"


class Answer(NamedTuple):
    """The kernel's verdict for one address: interface and route type, or an error type."""

    ifname: Optional[str]
    kind: str


class Region(NamedTuple):
    """A prefix minus the more-specific prefixes inside it; ``probe`` lies in it."""

    prefix: IPNetwork
    holes: Tuple[IPNetwork, ...]
    probe: IPAddress

    def networks(self) -> List[IPNetwork]:
        """The region as an exact list of CIDRs."""
        out = [self.prefix]
        for hole in self.holes:
            nxt: List[IPNetwork] = []
            for net in out:
                if hole.subnet_of(net):
                    nxt.extend(net.address_exclude(hole))
                else:
                    nxt.append(net)
            out = nxt
        return sorted(out)

    def describe(self) -> str:
        if not self.holes:
            return str(self.prefix)
        return f"{self.prefix} except {', '.join(str(h) for h in self.holes)}"


class Finding(NamedTuple):
    """One region of an expected CIDR and where the kernel sends it."""

    region: Region
    answer: Answer
    status: str  # ok, overlap, no-route
    culprit: Optional[str]


class Tables:
    """One family's routes and rules, indexed once and shared by every expected CIDR."""

    def __init__(self, routes: Iterable[TableRoute], rules: Iterable[Rule]):
        self.routes = list(routes)
        # Once, not per expected CIDR: analyze() asks for every one of them.
        self.pending = [r for r in self.routes if r.pending is not None]
        self.rules = sorted(rules, key=lambda r: r.priority)
        self.by_prefix: Dict[Tuple[int, int], List[TableRoute]] = {}
        bounds: Dict[Tuple[int, int], bool] = {}  # (start, plen) -> passive only?
        for route in self.routes:
            key = _key(route.network)
            self.by_prefix.setdefault(key, []).append(route)
            bounds[key] = bounds.get(key, True) and route.kind in PASSIVE_TYPES
        for rule in self.rules:
            bounds[_key(rule.network)] = False
        self.prefixes = sorted(bounds)  # by start, then shorter prefix first
        self.starts = [start for start, _ in self.prefixes]
        self.passive = bounds

    def with_pending(self, pending: Iterable[PendingRoute]) -> Tables:
        """These tables plus routes that will appear (none already present is replaced)."""
        return Tables(self.routes + [p.route() for p in pending], self.rules)

    def anticipate(self, address: IPAddress, answer: Answer) -> Answer:
        """The kernel's answer for ``address`` once the pending routes exist.

        See the module docstring for the rule.
        """
        if answer.kind in PASSIVE_TYPES:
            return answer  # the host's own addresses: the local table comes first
        pending = self._best_main(address, True)
        if pending is None:
            return answer
        present = self._best_main(address, False)
        if present is not None:
            if present.network.prefixlen > pending.network.prefixlen or (
                    present.network.prefixlen == pending.network.prefixlen
                    and present.metric <= pending.metric):
                return answer  # more specific (a static route): it keeps deciding
            decided_by_main = present.kind == answer.kind and (
                present.ifname == answer.ifname or present.kind in NO_ROUTE_TYPES)
            if not decided_by_main:
                return answer  # a policy rule or another table answered first
        return Answer(pending.ifname, pending.kind)

    def _best_main(self, address: IPAddress, pending: bool) -> Optional[TableRoute]:
        """The main-table route the kernel picks for ``address`` among pending or present ones."""
        bits = address.max_prefixlen
        value = int(address)
        for plen in range(bits, -1, -1):
            start = value & (((1 << plen) - 1) << (bits - plen))
            found = [r for r in self.by_prefix.get((start, plen), [])
                     if r.table == MAIN_TABLE and (r.pending is not None) == pending
                     and r.kind not in PASSIVE_TYPES]
            if found:
                return min(found, key=lambda r: r.metric)
        return None

    def default(self) -> Optional[TableRoute]:
        """The main table's unicast default route with the lowest metric."""
        candidates = [r for r in self.by_prefix.get((0, 0), [])
                      if r.table == MAIN_TABLE and r.kind == "unicast" and r.ifname is not None]
        return min(candidates, key=lambda r: r.metric) if candidates else None

    def inside(self, cidr: IPNetwork) -> List[Tuple[int, int]]:
        """Boundary prefixes strictly inside or equal to ``cidr``, in tree order."""
        return self._inside(_key(cidr), cidr.max_prefixlen)

    def _inside(self, key: Tuple[int, int], bits: int) -> List[Tuple[int, int]]:
        start, plen = key
        # The last address by arithmetic: ``num_addresses`` is a cached property, two
        # more objects kept on every network asked (each of 10,000 routes verified).
        end = start | ((1 << (bits - plen)) - 1)
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_right(self.starts, end, lo)
        return [p for p in self.prefixes[lo:hi] if p[1] >= plen]

    def culprit(self, address: IPAddress, answer: Answer) -> Optional[str]:
        """The most specific route or rule that explains ``answer`` for ``address``."""
        bits = address.max_prefixlen
        value = int(address)
        best: Optional[TableRoute] = None
        for plen in range(bits, -1, -1):
            start = value & (((1 << plen) - 1) << (bits - plen))
            for route in self.by_prefix.get((start, plen), []):
                if route.kind in PASSIVE_TYPES and answer.kind not in PASSIVE_TYPES:
                    continue
                # A local answer names lo, not the device the address sits on.
                same_if = route.ifname == answer.ifname or route.kind in NO_ROUTE_TYPES \
                    or route.kind in PASSIVE_TYPES
                if route.kind == answer.kind and same_if and (
                        best is None or route.metric < best.metric):
                    best = route
            if best is not None:
                return best.describe()
        for rule in self.rules:
            if address in rule.network and rule.action == answer.kind:
                return rule.describe()
        return None


def _key(net: IPNetwork) -> Tuple[int, int]:
    return int(net.network_address), net.prefixlen


def _network(start: int, plen: int, like: IPNetwork) -> IPNetwork:
    return ipaddress.IPv4Network((start, plen)) if like.version == 4 else \
        ipaddress.IPv6Network((start, plen))


def _tree(cidr: IPNetwork, tables: Tables) -> Tuple[List[Tuple[int, int]],
                                                   Dict[Tuple[int, int], List[Tuple[int, int]]]]:
    """The boundary prefixes inside ``cidr`` as a tree: its nodes, and each node's children.

    Passive prefixes (the host's own addresses) are leaves: probes avoid them, but
    they hold no region of their own.
    """
    root = _key(cidr)
    bits = cidr.max_prefixlen
    inner = [p for p in tables._inside(root, bits) if p != root]
    if not inner:  # most expected CIDRs: nothing more specific inside
        return [root], {root: []}
    nodes = [root] + [p for p in inner if not tables.passive[p]]
    children: Dict[Tuple[int, int], List[Tuple[int, int]]] = {n: [] for n in nodes}
    stack: List[Tuple[int, int]] = [root]
    for pfx in inner:  # tree order: parents before children
        while not _contains(stack[-1], pfx, bits):
            stack.pop()
        children[stack[-1]].append(pfx)
        if not tables.passive[pfx]:
            stack.append(pfx)
    return nodes, children


def _region(node: Tuple[int, int], kids: Sequence[Tuple[int, int]], tables: Tables,
            like: IPNetwork) -> Tuple[Tuple[IPNetwork, ...], Optional[IPAddress]]:
    if kids:
        holes = tuple(_network(s, p, like) for s, p in kids if not tables.passive[(s, p)])
        probe = _representative(node, kids, like.max_prefixlen)
    else:  # most routes and CIDRs: no hole, and the probe is upstream's network+1
        start, plen = node
        holes, probe = (), (start if plen == like.max_prefixlen else start + 1)
    if probe is None:
        return holes, None
    return holes, (ipaddress.IPv4Address(probe) if like.version == 4
                   else ipaddress.IPv6Address(probe))


def regions(cidr: IPNetwork, tables: Tables) -> List[Region]:
    """The partition of ``cidr`` into regions, each with a representative probe.

    Regions that are entirely covered by more-specific prefixes, or hold only
    passive addresses (the host's own), get no probe and are left out.
    """
    nodes, children = _tree(cidr, tables)
    out = []
    for node in nodes:
        holes, probe = _region(node, children[node], tables, cidr)
        if probe is not None:
            prefix = cidr if node == nodes[0] else _network(node[0], node[1], cidr)
            out.append(Region(prefix, holes, probe))
    return out


def own_region(cidr: IPNetwork, tables: Tables) -> Tuple[Tuple[IPNetwork, ...],
                                                         Optional[IPAddress]]:
    """Where a route to ``cidr`` itself decides: the more-specific prefixes it does
    not decide (its holes), and a probe address in the rest (None when the holes
    and the host's own addresses cover all of it).

    Asking the kernel about that probe tells whether the route takes effect.
    Only the top of ``cidr``'s tree is needed: apply-routes asks this of every
    route it installs, some of which hold thousands of others.
    """
    root = _key(cidr)
    bits = cidr.max_prefixlen
    kids = []
    covered = -1  # the last address of the latest child that holds its own region
    for start, plen in tables._inside(root, bits):
        if start <= covered or (start, plen) == root:
            continue  # inside that child (prefixes nest or are disjoint), or cidr itself
        kids.append((start, plen))
        if not tables.passive[(start, plen)]:
            covered = start | ((1 << (bits - plen)) - 1)
    return _region(root, kids, tables, cidr)


def split_exact_clashes(networks: Iterable[IPNetwork],
                        taken: AbstractSet[IPNetwork]) -> List[IPNetwork]:
    """``networks``, with each one equal to a prefix in ``taken`` replaced by its halves.

    A route with exactly the prefix of an existing route would replace it (same
    metric) or compete with it on metric (either one silently loses).  Its two
    halves are more specific: they win on prefix and leave the existing route in
    place for everything else.  A half that is itself taken is split again; a
    taken host route (/32, /128) has no halves and is dropped.

    The one rule for apply-routes' refusal hint, the guard's auto-mitigation
    and azure-suggest's override routes.
    """
    out: List[IPNetwork] = []
    for net in networks:
        if net not in taken:
            out.append(net)
        elif net.prefixlen < net.max_prefixlen:
            out.extend(split_exact_clashes(net.subnets(prefixlen_diff=1), taken))
    return out


def _contains(outer: Tuple[int, int], inner: Tuple[int, int], bits: int) -> bool:
    start, plen = outer
    return inner[1] >= plen and (inner[0] >> (bits - plen) if plen else 0) == (
        start >> (bits - plen) if plen else 0)


def _representative(node: Tuple[int, int], kids: Sequence[Tuple[int, int]],
                    bits: int) -> Optional[int]:
    """An address of ``node`` outside its children: upstream's network+1 when possible.

    Children are disjoint and sorted by start, so one pass finds the first gap.
    """
    start, plen = node
    end = start + (1 << (bits - plen)) - 1
    spans = [(s, s + (1 << (bits - p)) - 1) for s, p in kids]
    preferred = start if plen == bits else start + 1
    if not any(lo <= preferred <= hi for lo, hi in spans):
        return preferred
    candidate = start
    for lo, hi in spans:
        if candidate < lo:
            break
        candidate = max(candidate, hi + 1)
    return candidate if candidate <= end else None


def analyze(cidr: IPNetwork, tables: Tables, lookup: Callable[[IPAddress], Answer],
            expected_if: str) -> List[Finding]:
    """Every region of ``cidr`` with the kernel's answer, bad ones with their culprit.

    With pending routes in ``tables``, the answer is the one the kernel will give
    once they exist (``Tables.anticipate``).
    """
    found = regions(cidr, tables)
    return judge(found, [lookup(region.probe) for region in found], tables, expected_if)


def judge(found: Sequence[Region], answers: Sequence[Answer], tables: Tables,
          expected_if: str) -> List[Finding]:
    """``analyze`` for regions whose probes the kernel has answered already, in order.

    check-overlap computes the regions of every expected CIDR first and asks the
    kernel about all their probes at once (``Kernel.answers``).
    """
    findings = []
    anticipating = bool(tables.pending)
    for region, answer in zip(found, answers):
        if anticipating:
            answer = tables.anticipate(region.probe, answer)
        if answer.kind in PASSIVE_TYPES or (
                answer.kind == "unicast" and answer.ifname == expected_if):
            status = "ok"
        elif answer.ifname is None or answer.kind in NO_ROUTE_TYPES:
            status = "no-route"
        else:
            status = "overlap"
        culprit = None if status == "ok" else tables.culprit(region.probe, answer)
        findings.append(Finding(region, answer, status, culprit))
    return findings
