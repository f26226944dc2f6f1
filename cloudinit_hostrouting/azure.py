"""Azure helper: ask IMDS what this VM is, and suggest the ``host_routing`` it needs.

On Azure InfiniBand sizes (ND96isr_H100_v5 and friends) the guest agent puts a
/16 on ``ib0``.  Its connected route is more specific than the default route,
so any cluster CIDR inside that /16 silently leaves through ``ib0``.  This
module turns what Azure and the kernel know into a ready-to-paste block:

* ``fetch_instance`` is the only function that does HTTP (IMDS, with the
  header, no proxy, api-version fallback, bounded retries and one deadline);
* ``read_kernel`` is the only function that reads the kernel (pyroute2);
* everything between them (``parse_instance``, ``is_infiniband_size``,
  ``shadowed_parts``, ``suggest``, the renderers) is pure, so tests feed it
  exact inputs and assert exact outputs.

``add_parser``/``run`` are the ``azure-suggest`` subcommand; ``suggest_at_boot``
is what the cloud-init module calls when ``host_routing.azure.suggest`` is true.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from .config import ConfigError, load_file
from .constants import (
    ARPHRD_INFINIBAND,
    MAIN_TABLE,
    RT_SCOPE_LINK,
    RTN_UNICAST,
    RTPROT_KERNEL,
    RUN_DIR,
)

LOG = logging.getLogger(__name__)

DEFAULT_IMDS_URL = "http://169.254.169.254/metadata/instance"
# Pinned first, older second: cloud-init does the same, and a 400 from IMDS
# means "bad or unsupported api-version" (or a missing header, which we send).
API_VERSIONS = ("2021-08-01", "2019-06-01")
# IMDS allows about 5 requests/s; a first back-off of 0.25 s doubling to 2 s
# stays under that even when every answer is an instant 429.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 2.0
MAX_ATTEMPTS = 10
MAX_BODY_BYTES = 1 << 20
RETRY_STATUSES = frozenset({404, 410, 429}) | frozenset(range(500, 600))

# Azure reserves this range for the RDMA (IPoIB) network.  Used as the assumed
# IB CIDR when the guest agent has not assigned ib0's address yet.
AZURE_RDMA_RANGE = ipaddress.IPv4Network("172.16.0.0/16")

SUGGESTION_FILE = "azure-suggestion.yaml"
COMMENT_WIDTH = 88

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ImdsError(Exception):
    """IMDS could not give us a usable instance document; ``str()`` says why."""


# ---------------------------------------------------------------------------
# IMDS: the only HTTP in the package
# ---------------------------------------------------------------------------

def _with_api_version(url: str, version: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "api-version"]
    query.append(("api-version", version))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _read_body(response: Any, stop_at: float) -> bytes:
    """Read at most MAX_BODY_BYTES, checking the deadline between chunks.

    The socket timeout bounds each recv; checking between chunks stops a
    server that trickles bytes from stretching one attempt past the deadline.
    """
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = response.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ImdsError(f"IMDS answer is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if time.monotonic() >= stop_at:
            raise socket.timeout("deadline reached while reading the answer")


def fetch_instance(
    url: str = DEFAULT_IMDS_URL,
    deadline: float = 10.0,
    *,
    api_versions: Sequence[str] = API_VERSIONS,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = BACKOFF_FIRST_S,
) -> Dict[str, Any]:
    """GET the IMDS instance document and return it as a dict, or raise ImdsError.

    ``deadline`` is the number of seconds the whole call may take, retries
    included: each attempt's socket timeout is what remains, and no back-off
    sleeps past it.  Behaviour follows Azure's IMDS guidance:

    * ``Metadata: true`` is sent; proxies are bypassed whatever ``http_proxy``
      says (IMDS is link-local; a proxy would either fail or answer for the
      wrong host), and no ``X-Forwarded-For`` is ever sent;
    * a 400 means the api-version is not supported there, so the next, older
      version in ``api_versions`` is tried at once (no back-off);
    * 404, 410, 429, 5xx, connection errors and timeouts are retried with
      exponential back-off, at most ``max_attempts`` requests in all;
    * other 4xx answers and a body that is not a JSON object fail at once:
      something that is not IMDS is answering, and retrying will not help.
    """
    # Imported here, not at the top: the CLI registers azure-suggest in every
    # process, including the boot-path units, which must not pay ~80 ms for HTTP.
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stop_at = time.monotonic() + deadline
    versions = list(api_versions)
    wait = backoff
    last = "no attempt made"
    unreachable = False
    attempts = 0
    while attempts < max_attempts:
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            break
        attempts += 1
        request = urllib.request.Request(
            _with_api_version(url, versions[0]),
            headers={"Metadata": "true", "User-Agent": "cloudinit-hostrouting"},
        )
        try:
            with opener.open(request, timeout=remaining) as response:
                body = _read_body(response, stop_at)
            return _decode(body, url)
        except urllib.error.HTTPError as err:
            try:
                detail = err.read(500).decode("utf-8", "replace").strip()
            except OSError:
                detail = ""
            err.close()
            last = f"HTTP {err.code} {err.reason}" + (f": {detail}" if detail else "")
            unreachable = False
            if err.code == 400 and len(versions) > 1:
                LOG.info("IMDS refused api-version %s (%s); trying %s",
                         versions[0], last, versions[1])
                versions.pop(0)
                continue
            if err.code not in RETRY_STATUSES:
                raise ImdsError(f"IMDS at {url} refused the request "
                                f"(api-version {versions[0]}): {last}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", err)
            last = f"{type(reason).__name__}: {reason}"
            unreachable = True
        LOG.debug("IMDS attempt %d failed: %s", attempts, last)
        pause = min(wait, stop_at - time.monotonic())
        if attempts == max_attempts or pause <= 0:
            break
        time.sleep(pause)
        wait = min(wait * 2, BACKOFF_MAX_S)
    if unreachable:
        raise ImdsError(f"IMDS unreachable at URL: {url} ({last}) (not on Azure?)")
    raise ImdsError(f"IMDS at {url} gave no instance document in {attempts} attempt(s) "
                    f"within {deadline:g} s; last answer: {last}")


def _decode(body: bytes, url: str) -> Dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except ValueError as err:
        raise ImdsError(f"IMDS at {url} returned malformed JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ImdsError(f"IMDS at {url} returned JSON that is not an object")
    return doc


# ---------------------------------------------------------------------------
# The instance document, parsed (pure)
# ---------------------------------------------------------------------------

class Nic(NamedTuple):
    """One VNet NIC as IMDS lists it (IB interfaces are never listed)."""

    mac: str
    addresses: Tuple[ipaddress.IPv4Address, ...]
    subnets: Tuple[ipaddress.IPv4Network, ...]


class Instance(NamedTuple):
    """What we need from the instance document."""

    vm_size: str
    nics: Tuple[Nic, ...]
    warnings: Tuple[str, ...] = ()


def parse_instance(doc: Mapping[str, Any]) -> Instance:
    """Pick the size and the NICs out of an IMDS instance document.

    ``compute.vmSize`` is required (``compute.sku`` is the *image* SKU, not
    the size, and is ignored).  The network part is optional: a NIC entry or
    address that cannot be read is skipped with a warning, because a partial
    answer still lets the kernel's default route fill in the gateway.
    """
    compute = doc.get("compute")
    vm_size = compute.get("vmSize") if isinstance(compute, dict) else None
    if not isinstance(vm_size, str) or not vm_size.strip():
        raise ImdsError("IMDS instance document has no compute.vmSize")
    warnings: List[str] = []
    network = doc.get("network")
    raw_nics = network.get("interface") if isinstance(network, dict) else None
    if not isinstance(raw_nics, list) or not raw_nics:
        warnings.append("IMDS instance document lists no network.interface")
        raw_nics = []
    nics = []
    for i, raw in enumerate(raw_nics):
        ipv4 = raw.get("ipv4") if isinstance(raw, dict) else None
        if not isinstance(ipv4, dict):
            warnings.append(f"network.interface[{i}] has no ipv4 section; ignored")
            continue
        addresses = []
        for j, entry in enumerate(ipv4.get("ipAddress") or []):
            try:
                addresses.append(ipaddress.IPv4Address(entry["privateIpAddress"]))
            except (TypeError, KeyError, ValueError):
                warnings.append(f"network.interface[{i}].ipv4.ipAddress[{j}]"
                                ".privateIpAddress is missing or not IPv4; ignored")
        subnets = []
        for j, entry in enumerate(ipv4.get("subnet") or []):
            try:
                subnets.append(ipaddress.IPv4Network(
                    f"{entry['address']}/{entry['prefix']}", strict=False))
            except (TypeError, KeyError, ValueError):
                warnings.append(f"network.interface[{i}].ipv4.subnet[{j}] is missing "
                                "address/prefix or not IPv4; ignored")
        nics.append(Nic(str(raw.get("macAddress", "")), tuple(addresses), tuple(subnets)))
    return Instance(vm_size.strip(), tuple(nics), tuple(warnings))


_IB_ND_SIZES = frozenset(s.lower() for s in (
    "ND96isr_H100_v5", "ND96isr_H200_v5", "ND96asr_v4", "ND96amsr_A100_v4",
))
# HB, HC and HX sizes whose capability letters include "r" (RDMA), with an
# optional constrained-core count: HB120rs_v3, HB120-96rs_v3, HC44rs, HX176rs.
_IB_HPC_SIZE = re.compile(r"^h[bcx]\d+(?:-\d+)?[a-z]*r[a-z]*(?:_v\d+)?$")


def is_infiniband_size(vm_size: str) -> bool:
    """True if Azure documents ``vm_size`` as SR-IOV InfiniBand with IPoIB.

    The rule, after dropping case and a ``Standard_`` prefix:

    * the ND sizes Azure lists with InfiniBand, exactly: ND96isr_H100_v5,
      ND96isr_H200_v5, ND96asr_v4, ND96amsr_A100_v4.  ND96isr_MI300X_v5 is not
      listed as InfiniBand, so an "isr" in the name alone is not enough;
    * the HPC families HB, HC and HX when the capability letters include
      ``r`` (RDMA), e.g. HB60rs, HB120rs_v2/v3, HB120-96rs_v3, HB176rs_v4,
      HC44rs, HX176rs.

    The older RDMA sizes H16r, H16mr and NC24r are not SR-IOV (no ib0 with
    an IPoIB /16), so they are deliberately outside both rules.
    """
    name = vm_size.strip().lower()
    if name.startswith("standard_"):
        name = name[len("standard_"):]
    return name in _IB_ND_SIZES or bool(_IB_HPC_SIZE.match(name))


# ---------------------------------------------------------------------------
# The kernel: the only netlink reads in this module
# ---------------------------------------------------------------------------

class IbRoute(NamedTuple):
    """A connected route on an InfiniBand interface, or the assumed RDMA range."""

    cidr: ipaddress.IPv4Network
    dev: str
    src: Optional[ipaddress.IPv4Address] = None
    assumed: bool = False

    def __str__(self) -> str:
        if self.assumed:
            return f"{self.cidr} (Azure's RDMA range; {self.dev} has no IPv4 address yet)"
        src = f" src {self.src}" if self.src is not None else ""
        return f"{self.cidr} dev {self.dev} proto kernel scope link{src}"


class IbInterface(NamedTuple):
    """An InfiniBand interface and its IPv4 addresses (possibly none yet)."""

    name: str
    ifindex: int
    link_type: int
    addresses: Tuple[ipaddress.IPv4Interface, ...]


class KernelView(NamedTuple):
    """What the kernel says about IB interfaces and the IPv4 default route."""

    ib_interfaces: Tuple[IbInterface, ...]
    ib_routes: Tuple[IbRoute, ...]
    default_dev: Optional[str]
    default_gateway: Optional[ipaddress.IPv4Address]
    default_addresses: Tuple[ipaddress.IPv4Address, ...]


def is_ib_interface(name: str, link_type: int) -> bool:
    """IPoIB links have link type ARPHRD_INFINIBAND; Azure names them ``ib*``.

    Both count: the name catches renamed or emulated links (a veth named ib0
    in tests is ``link/ether``), the type catches IPoIB links with other names.
    """
    return name.startswith("ib") or link_type == ARPHRD_INFINIBAND


def read_kernel(netns: Optional[str] = None) -> KernelView:
    """Read IB interfaces, their connected routes and the default route.

    One netlink socket, three dumps (links, IPv4 addresses, main-table IPv4
    routes).  ``netns`` names an existing network namespace (tests); None is
    the host's.  Only ``proto kernel scope link`` unicast routes count as IB
    routes: those are the ones the kernel adds with the address, and the ones
    that shadow cluster CIDRs.
    """
    from .netlink import PYROUTE2, Kernel

    with Kernel(netns, backend=PYROUTE2) as kernel:
        links = {link.index: (link.name, link.kind) for link in kernel.links()}
        addrs: Dict[int, List[ipaddress.IPv4Interface]] = {}
        for addr in kernel.addresses(4):
            addrs.setdefault(addr.index, []).append(
                ipaddress.IPv4Interface(f"{addr.address}/{addr.prefixlen}"))
        ib = [IbInterface(name, index, kind, tuple(addrs.get(index, ())))
              for index, (name, kind) in sorted(links.items())
              if is_ib_interface(name, kind)]
        ib_names = {i.ifindex: i.name for i in ib}
        routes = []
        for route in kernel.routes(4, MAIN_TABLE):
            if (route.oif in ib_names and route.proto == RTPROT_KERNEL
                    and route.scope == RT_SCOPE_LINK and route.type == RTN_UNICAST):
                routes.append(IbRoute(
                    ipaddress.IPv4Network(f"{route.dst}/{route.dst_len}"), ib_names[route.oif],
                    ipaddress.IPv4Address(route.prefsrc) if route.prefsrc else None))
        default = kernel.default_route()
    return KernelView(
        ib_interfaces=tuple(ib),
        ib_routes=tuple(sorted(routes)),
        default_dev=default.ifname if default else None,
        default_gateway=(ipaddress.IPv4Address(default.gateway)
                         if default and default.gateway else None),
        default_addresses=tuple(a.ip for a in addrs.get(default.ifindex, ()))
        if default else (),
    )


# ---------------------------------------------------------------------------
# Analysis and suggestion (pure)
# ---------------------------------------------------------------------------

class Shadow(NamedTuple):
    """``part`` of ``expected`` goes out of an IB interface because of ``ib``."""

    expected: ipaddress.IPv4Network
    part: ipaddress.IPv4Network
    ib: IbRoute


def shadowed_parts(expected_cidr: ipaddress.IPv4Network,
                   ib_routes: Iterable[IbRoute]) -> List[Shadow]:
    """Every part of ``expected_cidr`` that an IB connected route captures.

    Two CIDRs either nest or are disjoint, so each overlap is the smaller of
    the two: an IB 10.5.0.0/16 inside an expected 10.0.0.0/8 shadows exactly
    10.5.0.0/16 (upstream's single probe of 10.0.0.1 misses it); an expected
    10.0.5.0/24 inside an IB 10.0.0.0/16 is shadowed whole.  A longest-prefix
    route only shadows what is more specific than the route it beats, so a
    part counts only when the IB prefix is longer than 0 (not a default).
    """
    out = []
    for route in ib_routes:
        if route.cidr.prefixlen == 0 or not expected_cidr.overlaps(route.cidr):
            continue
        part = route.cidr if route.cidr.subnet_of(expected_cidr) else expected_cidr
        out.append(Shadow(expected_cidr, part, route))
    return sorted(out, key=lambda s: (s.part, s.ib))


def override_routes(shadows: Iterable[Shadow]) -> List[ipaddress.IPv4Network]:
    """The fewest destinations that take every shadowed part back from IB.

    A part narrower than its IB route wins by being more specific.  A part that
    *is* the IB route gets its two halves instead: a route with the same
    prefix would replace the kernel's own connected route (or lose to it on
    metric), while the halves win on prefix and leave the kernel's route
    alone.  A destination already covered by a wider one is dropped unless
    some IB route between the two would beat the wider one.
    """
    wanted: Dict[ipaddress.IPv4Network, List[IbRoute]] = {}
    for shadow in shadows:
        if shadow.part == shadow.ib.cidr and shadow.part.prefixlen < 32:
            dests = list(shadow.part.subnets(prefixlen_diff=1))
        else:
            dests = [shadow.part]
        for dest in dests:
            wanted.setdefault(dest, []).append(shadow.ib)
    keep = []
    for dest, culprits in wanted.items():
        covered = any(
            other != dest and dest.subnet_of(other)
            and all(ib.cidr.prefixlen < other.prefixlen for ib in culprits)
            for other in wanted)
        if not covered:
            keep.append(dest)
    return sorted(keep)


@dataclass
class Suggestion:
    """A ``host_routing`` block for an IB size, with the reasons behind it."""

    vm_size: str
    document: Dict[str, Any]
    comments: List[str]
    shadows: List[Shadow]
    ib_routes: List[IbRoute]
    gateway: Optional[ipaddress.IPv4Address]
    primary: Optional[Dict[str, str]]
    warnings: List[str] = field(default_factory=list)


def choose_primary_nic(nics: Sequence[Nic],
                       kernel_addresses: Sequence[ipaddress.IPv4Address]
                       ) -> Tuple[Optional[Nic], str]:
    """The NIC that carries the default route, and how it was chosen.

    IMDS has no primary flag and does not promise NIC order.  The kernel
    knows which interface holds the default route, so the NIC whose private
    IP is on that interface wins; without a match, Azure's convention that
    the first listed NIC is the primary one is the fallback.
    """
    wanted = set(kernel_addresses)
    for nic in nics:
        if wanted.intersection(nic.addresses):
            return nic, "its private IP is on the default-route interface"
    if nics:
        return nics[0], "first NIC listed by IMDS (no private IP matched the default route)"
    return None, "IMDS lists no NIC"


def _subnet_of(nic: Nic) -> Optional[ipaddress.IPv4Network]:
    for subnet in nic.subnets:
        if any(a in subnet for a in nic.addresses):
            return subnet
    return nic.subnets[0] if nic.subnets else None


def suggest(instance: Instance, kernel: KernelView,
            expected_cidrs: Sequence[ipaddress.IPv4Network]) -> Suggestion:
    """Build the ``host_routing`` block for an InfiniBand size.

    Routes go via the primary NIC's VNet gateway, which on Azure is the first
    host address of its subnet; the kernel's default gateway is the fallback
    when IMDS gives no subnet.  ``dev`` is left out on purpose: the units then
    use the interface of the default route at boot and wait for DHCP, where a
    fixed ``dev`` with a gateway not yet on-link would fail.
    """
    warnings = list(instance.warnings)
    ib_routes = list(kernel.ib_routes)
    if not ib_routes:
        names = ", ".join(i.name for i in kernel.ib_interfaces) or "none found"
        warnings.append(
            f"No IPv4 address on an InfiniBand interface yet (IB interfaces: {names}). "
            "The Azure guest agent assigns it asynchronously, up to a minute after boot; "
            f"this analysis assumes Azure's RDMA range {AZURE_RDMA_RANGE}. "
            "Run azure-suggest again once ib0 has its address.")
        dev = kernel.ib_interfaces[0].name if kernel.ib_interfaces else "ib0"
        ib_routes = [IbRoute(AZURE_RDMA_RANGE, dev, None, assumed=True)]
    expected = list(dict.fromkeys(expected_cidrs))
    shadows = [s for cidr in expected for s in shadowed_parts(cidr, ib_routes)]

    nic, chosen_by = choose_primary_nic(instance.nics, kernel.default_addresses)
    subnet = _subnet_of(nic) if nic else None
    primary = None
    if nic is not None:
        primary = {"mac": nic.mac, "chosen_by": chosen_by,
                   "address": str(nic.addresses[0]) if nic.addresses else "",
                   "subnet": str(subnet) if subnet else ""}
    gateway = subnet.network_address + 1 if subnet is not None else kernel.default_gateway
    if subnet is None:
        warnings.append("IMDS gives no subnet for the primary NIC; using the kernel's "
                        f"default gateway ({kernel.default_gateway or 'none'}).")
    elif kernel.default_gateway is not None and kernel.default_gateway != gateway:
        warnings.append(f"The kernel's default gateway {kernel.default_gateway} is not "
                        f"{gateway}, the first host of VNet subnet {subnet}; check which "
                        "one the cluster traffic should use.")
    if kernel.default_dev is None:
        warnings.append("The kernel has no IPv4 default route now; STRICT checks fail "
                        "until it has one (DHCP not done?).")
    for n in instance.nics:
        for sub in n.subnets:
            for ib in ib_routes:
                if sub.overlaps(ib.cidr):
                    warnings.append(
                        f"VNet subnet {sub} (NIC {n.mac or '?'}) overlaps the InfiniBand "
                        f"range {ib.cidr}: VNet hosts outside {sub} but inside {ib.cidr} "
                        "go out of the IB interface. Re-address the VNet or the IB "
                        "network.")
    for shadow in shadows:
        if shadow.part == shadow.ib.cidr:
            warnings.append(
                f"Expected CIDR {shadow.expected} contains the whole InfiniBand range "
                f"{shadow.ib.cidr}: routing it via the VNet takes IPoIB traffic to those "
                "peers off the IB interface. Narrow the expected CIDR if the cluster "
                "does not really use that range.")

    dests = override_routes(shadows)
    block: Dict[str, Any] = {}
    if dests:
        routes = []
        for dest in dests:
            route = {"destination": str(dest)}
            if gateway is not None:
                route["gateway"] = str(gateway)
            routes.append(route)
        block["static_routes"] = {"enabled": True, "routes": routes}
    if expected:
        block["route_overlap"] = {"mode": "STRICT",
                                  "expected_cidrs": [str(c) for c in expected]}
    comments = _comments(instance.vm_size, shadows, ib_routes, gateway, subnet,
                         kernel.default_dev, expected)
    return Suggestion(instance.vm_size, {"host_routing": block}, comments, shadows,
                      ib_routes, gateway, primary, warnings)


def _comments(vm_size: str, shadows: Sequence[Shadow], ib_routes: Sequence[IbRoute],
              gateway: Optional[ipaddress.IPv4Address],
              subnet: Optional[ipaddress.IPv4Network], default_dev: Optional[str],
              expected: Sequence[ipaddress.IPv4Network]) -> List[str]:
    """Paragraphs for the reader; lines starting with two spaces are list items."""
    lines = [f"host_routing suggested by cloudinit-hostrouting azure-suggest for {vm_size}, "
             "an InfiniBand size."]
    routes = "; ".join(str(r) for r in ib_routes)
    if not expected:
        lines.append("No expected CIDRs were given, so nothing was checked against the "
                     f"InfiniBand routes: {routes}.")
        return lines
    culprits = list(dict.fromkeys(s.ib for s in shadows))
    if not culprits:
        lines.append(f"No expected CIDR is shadowed by an InfiniBand route now ({routes}). "
                     "The STRICT check keeps it that way at every boot.")
        return lines
    for ib in culprits:
        lines.append(f"Override the InfiniBand route {ib}: it is more specific than the "
                     "default route, so the kernel sends these expected ranges out of "
                     f"{ib.dev} instead of {default_dev or 'the default interface'}:")
        lines.extend(f"  {s.part} (of expected {s.expected})" for s in shadows if s.ib == ib)
    via = f"via {gateway}" if gateway is not None else "via the default gateway at boot"
    origin = f", the first host of VNet subnet {subnet}" if subnet is not None else ""
    lines.append(f"The static routes below are more specific still, {via}{origin}; IB "
                 "peers outside them keep using InfiniBand. STRICT keeps gated units from "
                 "starting if a shadow is back at boot.")
    return lines


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
    """The same block under ``host_routing``, with the analysis beside it."""
    analysis = {
        "vm_size": suggestion.vm_size,
        "infiniband": True,
        "ib_routes": [str(r) for r in suggestion.ib_routes],
        "shadows": [{"expected": str(s.expected), "part": str(s.part),
                     "ib_cidr": str(s.ib.cidr), "dev": s.ib.dev, "assumed": s.ib.assumed}
                    for s in suggestion.shadows],
        "gateway": str(suggestion.gateway) if suggestion.gateway else None,
        "primary_nic": suggestion.primary,
        "warnings": suggestion.warnings,
        "comments": suggestion.comments,
    }
    out = dict(suggestion.document)
    out["analysis"] = analysis
    return json.dumps(out, indent=2) + "\n"


def not_infiniband_line(vm_size: str) -> str:
    """The one-line answer for sizes without an IB /16."""
    return (f"{vm_size} is not an InfiniBand size: no IB route can shadow cluster "
            "CIDRs, so no host_routing override is needed.")


# ---------------------------------------------------------------------------
# Command line: azure-suggest
# ---------------------------------------------------------------------------

def ipv4_only(cidrs: Sequence[Any]) -> List[ipaddress.IPv4Network]:
    """The IPv4 members of ``cidrs``: IPoIB addresses on Azure are IPv4."""
    return [c for c in cidrs if isinstance(c, ipaddress.IPv4Network)]


def _expected_from_args(args: argparse.Namespace) -> List[ipaddress.IPv4Network]:
    expected: List[ipaddress.IPv4Network] = []
    if args.config:
        # The IPoIB network is IPv4, so only IPv4 CIDRs can be shadowed by it.
        expected.extend(ipv4_only(load_file(args.config).expected_cidrs))
    for text in args.expected_cidr:
        try:
            expected.append(ipaddress.IPv4Network(text, strict=False))
        except ValueError as err:
            raise ValueError(f"--expected-cidr {text!r}: {err}. Fix: give an IPv4 CIDR "
                             "such as 10.0.5.0/24.") from err
    if not expected:
        raise ValueError("no expected CIDRs: give --expected-cidr CIDR, or --config FILE "
                         "with host_routing.route_overlap.expected_cidrs")
    return list(dict.fromkeys(expected))


def run(args: argparse.Namespace) -> int:
    """``azure-suggest``: print the suggestion; 0 ok, 1 IMDS failed, 2 usage."""
    try:
        expected = _expected_from_args(args)
        if args.timeout <= 0:
            raise ValueError("--timeout must be positive")
        if args.netns is not None and not os.path.exists(f"/run/netns/{args.netns}"):
            raise ValueError(f"--netns {args.netns!r}: no such network namespace")
    except (ConfigError, ValueError, OSError) as err:
        print(f"azure-suggest: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        instance = parse_instance(fetch_instance(args.imds_url or DEFAULT_IMDS_URL,
                                                 args.timeout))
    except ImdsError as err:
        print(f"azure-suggest: {err}", file=sys.stderr)
        return EXIT_FAILED
    if not is_infiniband_size(instance.vm_size):
        line = not_infiniband_line(instance.vm_size)
        if args.format == "json":
            line = json.dumps({"analysis": {"vm_size": instance.vm_size,
                                            "infiniband": False, "message": line}})
        print(line)
        return EXIT_OK
    try:
        kernel = read_kernel(args.netns)
    except Exception as err:  # pyroute2 raises many types; any means "cannot look"
        print(f"azure-suggest: cannot read the kernel's routes: {err}", file=sys.stderr)
        return EXIT_FAILED
    suggestion = suggest(instance, kernel, expected)
    sys.stdout.write(render_json(suggestion) if args.format == "json"
                     else render_yaml(suggestion))
    return EXIT_OK


# ---------------------------------------------------------------------------
# First boot
# ---------------------------------------------------------------------------

def suggest_at_boot(cfg: Mapping[str, Any], run_dir: str = RUN_DIR,
                    deadline_s: float = 10.0,
                    imds_url: Optional[str] = None) -> Optional[str]:
    """Run the detection at first boot; write and return the suggestion text.

    For ``host_routing.azure.suggest: true``; ``cfg`` is the cloud-config
    mapping (its ``host_routing`` key gives the expected CIDRs) and
    ``imds_url`` None means Azure's.  It never raises and never takes much
    longer than ``deadline_s`` (the IMDS deadline; the netlink reads take
    milliseconds): a boot must not fail or stall because advice could not be
    had.  The text (a suggestion, the one-line non-IB answer, or a comment
    saying why there is none) is written atomically to
    ``run_dir/azure-suggestion.yaml`` for whoever debugs the node, and logged.
    Returns the text, or None when no suggestion could be made.
    """
    from .config import parse
    from .effects import write_atomic

    text: Optional[str] = None
    try:
        expected = ipv4_only(parse(cfg.get("host_routing") or {}).expected_cidrs)
        instance = parse_instance(fetch_instance(imds_url or DEFAULT_IMDS_URL, deadline_s))
        if is_infiniband_size(instance.vm_size):
            text = render_yaml(suggest(instance, read_kernel(None), expected))
        else:
            text = f"# {not_infiniband_line(instance.vm_size)}\n"
        LOG.info("azure-suggest:\n%s", text)
        note = text
    except Exception as err:  # never fail the boot over advice
        LOG.warning("azure-suggest: no suggestion: %s", err)
        note = f"# azure-suggest could not make a suggestion: {err}\n"
    try:
        write_atomic(os.path.join(run_dir, SUGGESTION_FILE), note)
    except OSError as err:
        LOG.warning("azure-suggest: cannot write %s: %s", run_dir, err)
    return text
