"""The IMDS instance document, read: the VM size and the VNet NICs, never a traceback.

The document comes from IMDS over HTTP (imds.py) or from cloud-init's Azure
datasource (azure.datasource_document); either way it is untrusted input, so
every field is checked for its type and a bad entry becomes a warning.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class DocumentError(ValueError):
    """The instance document lacks what a suggestion needs; ``str()`` says what."""


class Nic(NamedTuple):
    """One VNet NIC as IMDS lists it (IB interfaces are never listed)."""

    mac: str
    addresses: Tuple[IPv4Address, ...]
    subnets: Tuple[IPv4Network, ...]


class Instance(NamedTuple):
    """What we need from the instance document."""

    vm_size: str
    nics: Tuple[Nic, ...]
    warnings: Tuple[str, ...] = ()


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


def parse_instance(doc: Any) -> Instance:
    """Pick the size and the NICs out of an IMDS instance document.

    ``compute.vmSize`` is required (``compute.sku`` is the *image* SKU, not
    the size, and is ignored); anything else may be missing or malformed: an
    entry that cannot be read is skipped with a warning, because a partial
    answer still lets the kernel's default route fill in the gateway.  Any
    value of any type gives an Instance or a DocumentError, never another
    exception.
    """
    compute = doc.get("compute") if isinstance(doc, Mapping) else None
    vm_size = compute.get("vmSize") if isinstance(compute, Mapping) else None
    if not isinstance(vm_size, str) or not vm_size.strip():
        raise DocumentError("IMDS instance document has no compute.vmSize")
    warnings: List[str] = []
    network = doc.get("network")
    raw_nics = _list(network.get("interface")) if isinstance(network, Mapping) else []
    if not raw_nics:
        warnings.append("IMDS instance document lists no network.interface")
    nics = []
    for i, raw in enumerate(raw_nics):
        ipv4 = raw.get("ipv4") if isinstance(raw, Mapping) else None
        if not isinstance(ipv4, Mapping):
            warnings.append(f"network.interface[{i}] has no ipv4 section; ignored")
            continue
        addresses = []
        for j, entry in enumerate(_list(ipv4.get("ipAddress"))):
            try:
                addresses.append(ipaddress.IPv4Address(entry["privateIpAddress"]))
            except (TypeError, KeyError, ValueError):
                warnings.append(f"network.interface[{i}].ipv4.ipAddress[{j}]"
                                ".privateIpAddress is missing or not IPv4; ignored")
        subnets = []
        for j, entry in enumerate(_list(ipv4.get("subnet"))):
            try:
                address, prefix = entry["address"], entry["prefix"]
                if not isinstance(address, str) or not isinstance(prefix, (str, int)) \
                        or isinstance(prefix, bool):
                    raise TypeError
                subnets.append(ipaddress.IPv4Network(f"{address}/{prefix}", strict=False))
            except (TypeError, KeyError, ValueError):
                warnings.append(f"network.interface[{i}].ipv4.subnet[{j}] is missing "
                                "address/prefix or not IPv4; ignored")
        mac = raw.get("macAddress")
        nics.append(Nic(mac if isinstance(mac, str) else "", tuple(addresses), tuple(subnets)))
    return Instance(vm_size.strip(), tuple(nics), tuple(warnings))


def choose_primary_nic(nics: Sequence[Nic], kernel_addresses: Sequence[IPv4Address]
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


def subnet_of(nic: Nic) -> Optional[IPv4Network]:
    """The subnet holding the NIC's private IP, else its first one."""
    for subnet in nic.subnets:
        if any(a in subnet for a in nic.addresses):
            return subnet
    return nic.subnets[0] if nic.subnets else None
