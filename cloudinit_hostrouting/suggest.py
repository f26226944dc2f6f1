"""The Azure suggestion, pure: instance document + kernel tables + KVP pairs -> a block.

azure-suggest must never propose a block that STRICT then rejects, so it has
no shadow computation of its own: it runs the check's analysis
(``analysis.analyze``, with the IPoIB routes still to come from ``ib.ipoib_state``
as pending routes), turns every bad region into static routes
(``analysis.split_exact_clashes`` keeps them off existing prefixes), and runs
the same analysis again with those routes in place, until nothing is bad or
nothing more can be done.  ``Suggestion.verified`` says which: True means the
analysis check-overlap runs finds nothing once the block is applied.

Inputs are values, not devices: the IMDS document (a dict, from HTTP or from
cloud-init's datasource), a ``KernelSnapshot`` (one dump of the IPv4 tables,
links and addresses, and the kernel's own lookup, which the analysis needs as
its oracle), the KVP pairs and the user's config.  The caller owns every
effect (azure.py).
"""

from __future__ import annotations

import ipaddress
import json
import textwrap
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from .analysis import (
    PASSIVE_TYPES,
    Answer,
    Finding,
    PendingRoute,
    TableRoute,
    Tables,
    analyze,
    split_exact_clashes,
)
from .azure_instance import choose_primary_nic, parse_instance, subnet_of
from .config import STRICT, HostRouting, Route, parse
from .constants import MAIN_TABLE
from .ib import IbLink, ipoib_state
from .kvp import Pair
from .rtnl import Address, Link

if TYPE_CHECKING:
    from .config import IPNetwork

# Azure's usual IPoIB range.  Only assumed when nothing better is known: no IB
# address assigned and no KVP IPoIB_Data announcing one.
AZURE_RDMA_RANGE = ipaddress.IPv4Network("172.16.0.0/16")
ASSUMED = "Azure's usual RDMA range (assumed: no IB address, no KVP IPoIB_Data)"
# The source the analysis names for the routes this suggestion adds.
PROPOSED = "this suggestion"
YOURS = "your static_routes"
# Each round adds routes for what is still bad; regions only get smaller, so a
# few rounds settle it (nested shadows need one round per level).
MAX_ROUNDS = 8
COMMENT_WIDTH = 88

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


# ---------------------------------------------------------------------------
# The suggestion
# ---------------------------------------------------------------------------

class KernelSnapshot(NamedTuple):
    """One look at the kernel: IPv4 tables, links, IPv4 addresses, and its lookup."""

    tables: Tables
    links: Tuple[Link, ...]
    addresses: Tuple[Address, ...]
    lookup: Callable[[Any], Answer]


class Shadow(NamedTuple):
    """A bad region of an expected CIDR before the suggestion, and what causes it."""

    expected: IPv4Network
    finding: Finding

    def to_dict(self) -> Dict[str, Any]:
        f = self.finding
        return {"expected": str(self.expected), "range": f.region.describe(),
                "cidrs": [str(n) for n in f.region.networks()], "interface": f.answer.ifname,
                "status": f.status, "culprit": f.culprit}


@dataclass
class Suggestion:
    """A ``host_routing`` block for an IB size, with the reasons behind it."""

    vm_size: str
    document: Dict[str, Any]
    comments: List[str]
    shadows: List[Shadow]
    pending: List[PendingRoute]
    ib_links: List[IbLink]
    default_if: Optional[str]
    gateway: Optional[IPv4Address]
    primary: Optional[Dict[str, str]]
    verified: bool
    unresolved: List[Shadow] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def analysis(self) -> Dict[str, Any]:
        """What the block is based on, for ``--analysis`` (kept out of the user-data)."""
        return {
            "vm_size": self.vm_size,
            "infiniband": True,
            "default_interface": self.default_if,
            "gateway": str(self.gateway) if self.gateway else None,
            "primary_nic": self.primary,
            "ib_links": [link._asdict() for link in self.ib_links],
            "pending": [p.to_dict() for p in self.pending],
            "shadows": [s.to_dict() for s in self.shadows],
            "verified": self.verified,
            "unresolved": [s.to_dict() for s in self.unresolved],
            "warnings": self.warnings,
            "comments": self.comments,
        }


def _route(dest: IPNetwork, dev: str, gateway: Optional[str], metric: int,
           source: str) -> TableRoute:
    """A route the block will install, as the analysis sees it before it exists."""
    return TableRoute(dest, MAIN_TABLE, "unicast", dev, gateway, "static", False, metric,
                      source)


def _taken(tables: Tables) -> set:
    return {r.network for r in tables.routes
            if r.table == MAIN_TABLE and r.kind not in PASSIVE_TYPES}


def _bad(expected: Sequence[IPv4Network], tables: Tables, lookup: Callable[[Any], Answer],
         default_if: str) -> List[Shadow]:
    return [Shadow(cidr, f) for cidr in expected
            for f in analyze(cidr, tables, lookup, default_if) if f.status != "ok"]


def suggest(document: Any, kernel: KernelSnapshot, pairs: Sequence[Pair],
            expected: Sequence[IPNetwork],
            base: Optional[HostRouting] = None) -> Suggestion:
    """The block that makes check-overlap's analysis pass in STRICT, and why.

    ``base`` is the user's config (``--config``): its routes stay and count in
    the analysis, and its gate_units, guard and other settings are kept.
    Routes go via the primary NIC's VNet gateway, the first host of its
    subnet, or the kernel's default gateway when IMDS gives no subnet; ``dev``
    is left out on purpose, so the units use the default route's interface at
    boot and wait for DHCP.  The KVP pairs' routes are included unless the
    config says ``anticipate_ipoib: never``: a route for an expected range is
    harmless even where nothing assigns them.  Raises DocumentError when the
    document has no size.
    """
    instance = parse_instance(document)
    warnings = list(instance.warnings)
    state = ipoib_state(kernel.links, kernel.addresses, pairs)
    warnings.extend(state.problems)
    anticipate = base is None or base.anticipate_ipoib != "never"
    pending = list(state.pending) if anticipate else []
    if not pairs and not state.with_ipv4:
        dev = state.links[0].name if state.links else "ib0"
        pending = [PendingRoute(AZURE_RDMA_RANGE, dev, AZURE_RDMA_RANGE.network_address + 1,
                                ASSUMED)]
        names = ", ".join(link.name for link in state.links) or "none found"
        warnings.append(
            f"No IPv4 address on an InfiniBand interface yet (IB interfaces: {names}) and no "
            "KVP IPoIB_Data: this analysis assumes Azure's usual RDMA range "
            f"{AZURE_RDMA_RANGE} on {dev}. Run azure-suggest again once the addresses "
            "are known.")
    tables = kernel.tables.with_pending(pending) if pending else kernel.tables

    default = tables.default()
    default_if = default.ifname if default is not None else None
    kernel_gw = ipaddress.IPv4Address(default.gateway) if default and default.gateway \
        else None
    link_names = {link.index: link.name for link in kernel.links}
    on_default = [ipaddress.IPv4Address(a.address) for a in kernel.addresses
                  if link_names.get(a.index) == default_if and ":" not in a.address]
    nic, chosen_by = choose_primary_nic(instance.nics, on_default)
    subnet = subnet_of(nic) if nic else None
    primary = None if nic is None else {
        "mac": nic.mac, "chosen_by": chosen_by,
        "address": str(nic.addresses[0]) if nic.addresses else "",
        "subnet": str(subnet) if subnet else ""}
    gateway = subnet.network_address + 1 if subnet is not None else kernel_gw
    if subnet is None:
        warnings.append("IMDS gives no subnet for the primary NIC; using the kernel's "
                        f"default gateway ({kernel_gw or 'none'}).")
    elif kernel_gw is not None and kernel_gw != gateway:
        warnings.append(f"The kernel's default gateway {kernel_gw} is not {gateway}, the "
                        f"first host of VNet subnet {subnet}; check which one the cluster "
                        "traffic should use.")
    ib_nets = sorted({r.network for r in tables.routes
                      if r.ifname in {link.name for link in state.links}
                      or r.pending is not None})
    for n in instance.nics:
        for sub in n.subnets:
            for net in ib_nets:
                if isinstance(net, IPv4Network) and sub.overlaps(net):
                    warnings.append(
                        f"VNet subnet {sub} (NIC {n.mac or '?'}) overlaps the InfiniBand "
                        f"range {net}: VNet hosts outside {sub} but inside {net} go out of "
                        "the IB interface. Re-address the VNet or the IB network.")

    wanted = list(dict.fromkeys(expected))
    v4 = [c for c in wanted if isinstance(c, IPv4Network)]
    if len(v4) != len(wanted):
        warnings.append("IPv6 expected CIDRs are kept in the block but not analysed here: "
                        "the IPoIB network and the VNet gateway are IPv4.")
    own = [r for r in (base.routes if base else ()) if r.destination.version == 4]
    new: List[IPv4Network] = []
    shadows: List[Shadow] = []
    unresolved: List[Shadow] = []
    verified = False
    if default_if is None:
        warnings.append("The kernel has no IPv4 default route now, so nothing could be "
                        "analysed; STRICT checks fail until it has one (DHCP not done?).")
    else:
        gw_text = str(gateway) if gateway is not None else None
        mine = [_route(r.destination, r.dev or default_if,
                       str(r.gateway) if r.gateway else gw_text, r.metric or 0, YOURS)
                for r in own]
        for round_ in range(MAX_ROUNDS):
            trial = Tables(tables.routes + mine + [_route(d, default_if, gw_text, 0, PROPOSED)
                                                   for d in new], tables.rules)
            bad = _bad(v4, trial, kernel.lookup, default_if)
            if round_ == 0:
                shadows = bad
            if not bad:
                verified = True
                break
            taken = _taken(trial)
            more = [d for s in bad for d in split_exact_clashes(s.finding.region.networks(),
                                                                taken)
                    if d not in new and isinstance(d, IPv4Network)]
            if not more:
                unresolved = bad
                break
            new.extend(dict.fromkeys(more))
        else:
            unresolved = bad
        ruled = sorted({str(rule.network) for rule in tables.rules for d in new
                        if rule.network.overlaps(d)})
        if verified and ruled:
            # The analysis reads policy rules from the kernel's answers for routes that
            # exist; for routes still to be added it can only guess where a rule sends
            # the traffic, so it does not vouch for them.
            verified = False
            warnings.append(f"Policy rules select {', '.join(ruled)}, where routes are "
                            "suggested: whether those routes take effect depends on the "
                            "rules; run check-overlap after applying them.")
        for s in unresolved:
            warnings.append(f"{s.finding.region.describe()} of expected {s.expected} still "
                            f"goes via {s.finding.answer.ifname or s.finding.answer.kind} "
                            f"with the routes below ({s.finding.culprit or 'unknown'}): "
                            "a static route in the main table cannot change that; STRICT "
                            "will fail until it is fixed.")
    for s in shadows:
        part = s.finding.region.prefix
        if isinstance(part, IPv4Network) and part in _taken(tables) and part != s.expected \
                and not s.finding.region.holes:
            warnings.append(
                f"Expected CIDR {s.expected} contains the whole route {part} "
                f"({s.finding.culprit}): routing it via the VNet takes that traffic off "
                f"{s.finding.answer.ifname}. Narrow the expected CIDR if the cluster does "
                "not really use that range.")

    routes = list(base.routes if base else ()) + [
        Route(d, gateway) for d in sorted(new)]
    block = _block(base, routes, wanted)
    parse(block)  # the block is user-data: it must be valid, or this is a bug of ours
    comments = _comments(instance.vm_size, shadows, pending if anticipate else [], gateway,
                         subnet, default_if, v4, verified)
    return Suggestion(instance.vm_size, {"host_routing": block}, comments, shadows,
                      pending, list(state.links), default_if, gateway, primary, verified,
                      unresolved, warnings)


def _block(base: Optional[HostRouting], routes: Sequence[Route],
           expected: Sequence[IPNetwork]) -> Dict[str, Any]:
    """The host_routing mapping: the user's whole config when given, else the minimum."""
    if base is not None:
        out = base._replace(routes=tuple(routes), mode=STRICT,
                            expected_cidrs=tuple(expected)).to_dict()
        if not routes:
            del out["static_routes"]
        return out
    block: Dict[str, Any] = {}
    if routes:
        block["static_routes"] = {"enabled": True, "routes": [r.to_dict() for r in routes]}
    if expected:
        block["route_overlap"] = {"mode": STRICT, "expected_cidrs": [str(c) for c in expected]}
    return block


def _comments(vm_size: str, shadows: Sequence[Shadow], pending: Sequence[PendingRoute],
              gateway: Optional[IPv4Address], subnet: Optional[IPv4Network],
              default_if: Optional[str], expected: Sequence[IPv4Network],
              verified: bool) -> List[str]:
    """Paragraphs for the reader; lines starting with two spaces are list items."""
    lines = [f"host_routing suggested by cloudinit-hostrouting azure-suggest for {vm_size}, "
             "an InfiniBand size."]
    if pending:
        lines.append("Routes that are not there yet are included, as check-overlap "
                     "anticipates them:")
        lines.extend(f"  {p.describe()}" for p in pending)
    if not expected:
        lines.append("No IPv4 expected CIDRs were given, so nothing was checked.")
        return lines
    culprits = list(dict.fromkeys(s.finding.culprit or "an unknown route" for s in shadows))
    if not culprits:
        lines.append("check-overlap's analysis finds no expected CIDR shadowed. The STRICT "
                     "check keeps it that way at every boot.")
        return lines
    for culprit in culprits:
        group = [s for s in shadows if (s.finding.culprit or "an unknown route") == culprit]
        dev = group[0].finding.answer.ifname or group[0].finding.answer.kind
        lines.append(f"Override {culprit}: it is more specific than the default route, so "
                     f"the kernel sends these expected ranges out of {dev} instead of "
                     f"{default_if or 'the default interface'}:")
        lines.extend(f"  {s.finding.region.describe()} (of expected {s.expected})"
                     for s in group)
    via = f"via {gateway}" if gateway is not None else "via the default gateway at boot"
    origin = f", the first host of VNet subnet {subnet}" if subnet is not None else ""
    result = ("With them, check-overlap's analysis finds nothing: STRICT passes, and keeps "
              "gated units from starting if a shadow is back at boot." if verified else
              "Even with them, STRICT may fail: see the warnings.")
    lines.append(f"The static routes below are more specific still, {via}{origin}; other "
                 f"IB peers keep using InfiniBand. {result}")
    return lines


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

def _comment_block(paragraph: str, first: str = "") -> List[str]:
    if paragraph.startswith("  "):
        return [f"# {paragraph}"]
    return ["# " + line for line in textwrap.wrap(first + paragraph, COMMENT_WIDTH,
                                                  subsequent_indent=" " * len(first))]


def render_yaml(suggestion: Suggestion) -> str:
    """A whole ``#cloud-config`` document: the comments, then the block."""
    import yaml

    head = ["#cloud-config"]
    for paragraph in suggestion.comments:
        head += _comment_block(paragraph)
    for warning in suggestion.warnings:
        head += _comment_block(warning, "WARNING: ")
    body = yaml.safe_dump(suggestion.document, sort_keys=False, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def render_json(suggestion: Suggestion) -> str:
    """The user-data document alone, as JSON: host_routing at the top, nothing else.

    It is a ``--config`` file as it is, and cloud-config once ``#cloud-config``
    is put on the line above (JSON is YAML).  The analysis goes elsewhere
    (``--analysis``): an extra top-level key is a schema warning in user-data.
    """
    return json.dumps(suggestion.document, indent=2) + "\n"


def not_infiniband_line(vm_size: str) -> str:
    """The one-line answer for sizes without an IB /16."""
    return (f"{vm_size} is not an InfiniBand size: no IB route can shadow cluster "
            "CIDRs, so no host_routing override is needed.")
