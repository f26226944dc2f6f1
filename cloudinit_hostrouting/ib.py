"""Which links are InfiniBand (IPoIB) links, and what the KVP pool will give them.

One decision, used by check-overlap, the guard, azure-suggest and the
suggestion comment.  In order of trust:

1. the link type: IPoIB links are ``ARPHRD_INFINIBAND`` (32);
2. a KVP ``IPoIB_Data`` MAC: since WALinuxAgent PR #3150 the agent gives
   addresses to whatever link has a MAC the host listed, and the
   Ethernet-backend RDMA NICs are ``ethXX`` of type Ethernet;
3. the ``ib`` name prefix, as a last resort (Azure HPC images may rename
   links, e.g. ``ibP...``, so a name is a hint, never proof).

The KVP MAC of a link is computed the way the agent does
(``azurelinuxagent/pa/rdma/rdma.py``, ``update_iboip_interfaces``): a 6-byte
(Ethernet) address is the MAC itself; a 20-byte InfiniBand address, whose last
8 bytes are the port GUID, gives bytes 12-14 and 17-19 (the GUID minus its two
middle bytes, the EUI-64 filler), upper-case hex without separators.

Everything here is pure: links and addresses come from the kernel edge
(``netlink.Kernel.links()`` / ``addresses(4)``), pairs from ``kvp.read_ipoib``.
"""

from __future__ import annotations

import ipaddress

from .analysis import PendingRoute
from .constants import ARPHRD_INFINIBAND, IPOIB_PREFIXLEN
from .kvp import SOURCE, Pair
from .records import NamedTuple
from .rtnl import Address, Link

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

BY_TYPE, BY_KVP_MAC, BY_NAME = "link type", "KVP MAC", "name"


class IbLink(NamedTuple):
    """An InfiniBand link and why it counts as one (``BY_TYPE``, ``BY_KVP_MAC``, ``BY_NAME``)."""

    index: int  # type: ignore[assignment]  # as in rtnl.Link
    name: str
    reason: str
    mac: Optional[str]  # its KVP MAC, if its address has a form the agent reads


class Ipoib(NamedTuple):
    """The IPoIB picture at one moment: IB links, pending routes, and problems to report.

    ``pending`` holds one route per KVP pair whose link does not have its
    address yet; ``assigned`` the pairs whose address is already there.
    """

    links: Tuple[IbLink, ...]
    pending: Tuple[PendingRoute, ...]
    assigned: Tuple[Tuple[Pair, str], ...]  # (pair, interface name)
    problems: Tuple[str, ...]
    with_ipv4: FrozenSet[str]  # names of IB links that have some IPv4 address

    def missing(self) -> List[IbLink]:
        """IB links still without their IPv4 address: what wait_for_ipoib waits for.

        A link with a pending KVP address waits for that address; any other IB
        link for any IPv4 address.
        """
        pend = {p.ifname for p in self.pending}
        return [link for link in self.links
                if link.name in pend or link.name not in self.with_ipv4]

    def waiting_for(self) -> List[str]:
        """What wait_for_ipoib waits for: IB links without their address, and links
        the KVP pool names by a MAC that no interface has (yet)."""
        names = {link.name for link in self.links}
        return [link.name for link in self.missing()] + sorted(
            {p.ifname for p in self.pending if p.ifname not in names})


def unmatched_name(mac: str) -> str:
    """What reports call the link a KVP MAC names when no single interface has it."""
    return f"the link with MAC {mac}"


def kvp_mac(link: Link) -> Optional[str]:
    """The MAC the KVP pool would use for ``link``, or None for other address lengths."""
    raw = link.address
    if len(raw) == 6:
        octets = raw
    elif len(raw) == 20:
        octets = raw[12:15] + raw[17:20]
    else:
        return None
    return octets.hex().upper()


def infiniband_reason(link: Link, kvp_macs: Iterable[str] = ()) -> Optional[str]:
    """Why ``link`` is an InfiniBand link (see the module docstring), or None."""
    if link.kind == ARPHRD_INFINIBAND:
        return BY_TYPE
    mac = kvp_mac(link)
    if mac is not None and mac in set(kvp_macs):
        return BY_KVP_MAC
    if link.name.startswith("ib"):
        return BY_NAME
    return None


def infiniband_links(links: Iterable[Link], pairs: Sequence[Pair] = ()) -> List[IbLink]:
    """Every InfiniBand link, by the rules above, in index order."""
    macs = {p.mac for p in pairs}
    out = []
    for link in sorted(links, key=lambda lk: lk.index):
        reason = infiniband_reason(link, macs)
        if reason is not None:
            out.append(IbLink(link.index, link.name, reason, kvp_mac(link)))
    return out


def ipoib_state(links: Sequence[Link], addresses: Iterable[Address],
                pairs: Sequence[Pair]) -> Ipoib:
    """Match each KVP pair to its link by MAC and say which addresses are still to come.

    A pair whose address the link already has is ``assigned`` (its connected
    route is in the kernel's table already).  Otherwise the connected /16 the
    agent's ``ip addr add IP/16`` will bring is a pending route.  A MAC that no
    link has, or that two links share, is a problem line, and its route is still
    pending, on ``unmatched_name(mac)``: the device may appear later.
    """
    by_mac: Dict[str, List[Link]] = {}
    for link in links:
        mac = kvp_mac(link)
        if mac is not None:
            by_mac.setdefault(mac, []).append(link)
    v4: Dict[int, Set[ipaddress.IPv4Address]] = {}
    for addr in addresses:
        try:
            ip = ipaddress.ip_address(addr.address)
        except ValueError:
            continue
        if ip.version == 4:
            v4.setdefault(addr.index, set()).add(ip)
    pending: List[PendingRoute] = []
    assigned: List[Tuple[Pair, str]] = []
    problems: List[str] = []
    for pair in pairs:
        network = ipaddress.IPv4Interface(f"{pair.address}/{IPOIB_PREFIXLEN}").network
        found = by_mac.get(pair.mac, [])
        if len(found) != 1:
            # The device may come late (the agent waits 120 s for it): the /16 will
            # still appear, on a link that is not the default one, so it is pending.
            names = ", ".join(sorted(lk.name for lk in found))
            why = (f"matches several interfaces ({names})" if found
                   else "matches no interface (yet)")
            problems.append(f"{SOURCE}: MAC {pair.mac} (for {pair.address}) {why}: "
                            f"{network} is anticipated on {unmatched_name(pair.mac)}")
            pending.append(PendingRoute(network, unmatched_name(pair.mac), pair.address,
                                        SOURCE))
            continue
        link = found[0]
        if pair.address in v4.get(link.index, set()):
            assigned.append((pair, link.name))
            continue
        pending.append(PendingRoute(network, link.name, pair.address, SOURCE))
    ib = infiniband_links(links, pairs)
    return Ipoib(tuple(ib), tuple(pending), tuple(assigned), tuple(problems),
                 frozenset(lk.name for lk in ib if v4.get(lk.index)))
