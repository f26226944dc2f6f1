"""Turn a ``host_routing`` mapping into small typed objects, or say what is wrong.

Shape comes from the schema (``schema.check_shape``); this module adds what a
schema cannot say: that strings are IPv4 or IPv6 networks and addresses of one
family per route, that link-local gateways name their interface, that no
destination appears twice once host bits are masked, that routes are opted in,
that no destination, gateway or expected CIDR is one that makes no sense here
(the default route, loopback, multicast, ...; see ``_SPECIAL``), and that no
gate unit would close an ordering cycle with our units (``gates.py``).
Everything is checked before anything is written, and every problem is reported
at once so a user fixes their user-data in one round trip.
"""

from __future__ import annotations

import ipaddress

from .gates import refusal
from .loader import FileError, load_path
from .records import NamedTuple
from .schema import (
    GATE_UNIT_SCHEMA,
    MAX_ADDRESS_TEXT,
    MAX_EXPECTED_CIDRS,
    MAX_GATE_UNITS,
    MAX_ROUTES,
    MAX_SHOWN_PROBLEMS,
    ConfigError,
    Problem,
    check_shape,
    show,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, Union

    IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
    IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

__all__ = ["ConfigError", "HostRouting", "Problem", "Route", "load_file", "parse"]

DEFAULT_GATE_UNITS = ("systemd-nspawn@.service",)
WARN, STRICT = "WARN", "STRICT"


# Records are NamedTuples, not dataclasses: the units import this module on
# the boot path, and ``dataclasses`` pulls in inspect, ast and dis.


class Route(NamedTuple):
    """One static route; ``gateway``/``dev`` of None are resolved at boot."""

    destination: IPNetwork
    gateway: Optional[IPAddress] = None
    dev: Optional[str] = None
    metric: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"destination": str(self.destination)}
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        if self.dev is not None:
            out["dev"] = self.dev
        if self.metric is not None:
            out["metric"] = self.metric
        return out


class HostRouting(NamedTuple):
    """The validated, normalised ``host_routing`` section."""

    routes: Tuple[Route, ...] = ()
    mode: str = WARN
    expected_cidrs: Tuple[IPNetwork, ...] = ()
    gate_units: Tuple[str, ...] = DEFAULT_GATE_UNITS
    azure_suggest: bool = False
    guard: bool = False
    auto_mitigate: bool = False
    prometheus_textfile: Optional[str] = None
    warnings: Tuple[str, ...] = ()
    anticipate_ipoib: str = "auto"  # auto, always, never (overlap.anticipation)
    wait_for_ipoib: int = 0  # seconds, out of the check's one wait budget

    @property
    def strict(self) -> bool:
        return self.mode == STRICT

    def to_dict(self) -> Dict[str, Any]:
        """The normalised mapping: what the module writes for the units to read."""
        return {
            "static_routes": {
                "enabled": bool(self.routes),
                "routes": [r.to_dict() for r in self.routes],
            },
            "route_overlap": {
                "mode": self.mode,
                "expected_cidrs": [str(c) for c in self.expected_cidrs],
                # Defaults are left out, so configs written before these keys stay byte-equal.
                **({"anticipate_ipoib": self.anticipate_ipoib}
                   if self.anticipate_ipoib != "auto" else {}),
                **({"wait_for_ipoib": self.wait_for_ipoib} if self.wait_for_ipoib else {}),
            },
            "gate_units": list(self.gate_units),
            "guard": {
                "enabled": self.guard, "auto_mitigate": self.auto_mitigate,
                **({"prometheus_textfile": self.prometheus_textfile}
                   if self.prometheus_textfile else {}),
            },
            "azure": {"suggest": self.azure_suggest},
        }

    def to_json(self) -> str:
        """Stable text, so an unchanged config rewrites nothing."""
        import json  # the module writes this; the units only read it (jsonio)

        return json.dumps({"host_routing": self.to_dict()}, indent=2, sort_keys=True) + "\n"


def parse(raw: Any) -> HostRouting:
    """Validate ``raw`` (the value of the ``host_routing`` key) completely.

    Raises ConfigError listing every problem; returns a HostRouting whose
    ``warnings`` name things accepted but worth knowing (masked host bits).
    """
    shape = check_shape(raw)
    if not isinstance(raw, dict):
        raise ConfigError(shape)
    # Semantic checks run even after shape errors, on whatever is well-formed,
    # so one round trip shows every problem; a path gets one message at most.
    problems: List[Problem] = []
    warnings: List[str] = []
    static = _mapping(raw.get("static_routes"))
    routes = _parse_routes(static, problems, warnings)
    overlap = _mapping(raw.get("route_overlap"))
    expected = _parse_expected(overlap.get("expected_cidrs"), problems, warnings)
    guard = _mapping(raw.get("guard"))
    textfile = guard.get("prometheus_textfile")
    if isinstance(textfile, str) and ".." in textfile.split("/"):
        problems.append(Problem("host_routing.guard.prometheus_textfile",
                                guard["prometheus_textfile"], "climbs with '..'",
                                "Fix: give the plain absolute path."))
    if guard.get("auto_mitigate") and not guard.get("enabled"):
        problems.append(Problem("host_routing.guard.auto_mitigate", True,
                                "needs the guard, which is not enabled",
                                "Fix: set host_routing.guard.enabled: true as well."))
    gates = raw.get("gate_units", DEFAULT_GATE_UNITS)
    for i, unit in enumerate(_items(gates, MAX_GATE_UNITS)):
        problem = gate_unit_problem(unit, f"host_routing.gate_units[{i}]")
        if problem is not None:
            problems.append(problem)
    if gates == []:
        warnings.append("host_routing.gate_units is empty: the checks run, but no unit "
                        "waits for them, so even STRICT blocks nothing")
    shape_paths = {p.path for p in shape}
    problems = shape + [p for p in problems if p.path not in shape_paths]
    if problems:
        raise ConfigError(problems)
    return HostRouting(
        routes=tuple(routes),
        mode=overlap.get("mode", WARN).upper(),
        expected_cidrs=tuple(expected),
        gate_units=tuple(gates),
        azure_suggest=raw.get("azure", {}).get("suggest", False),
        guard=guard.get("enabled", False),
        auto_mitigate=guard.get("auto_mitigate", False),
        prometheus_textfile=guard.get("prometheus_textfile"),
        warnings=tuple(_capped_warnings(warnings)),
        anticipate_ipoib=overlap.get("anticipate_ipoib", "auto"),
        wait_for_ipoib=overlap.get("wait_for_ipoib", 0),
    )


def _capped_warnings(warnings: List[str]) -> List[str]:
    """At most MAX_SHOWN_PROBLEMS warnings and a count: 10,000 slips, one screen."""
    more = len(warnings) - MAX_SHOWN_PROBLEMS
    return warnings if more <= 0 else [*warnings[:MAX_SHOWN_PROBLEMS],
                                       f"and {more} more warning(s) like these"]


def gate_unit_problem(unit: Any, path: str) -> Optional[Problem]:
    """Why ``unit`` cannot be gated (see gates.py), or None if it can.

    Also used alone by the module's fail-closed path, to keep every gate unit
    of an invalid STRICT section that is itself fine.
    """
    shape = check_shape(unit, GATE_UNIT_SCHEMA, path)
    if shape:
        return shape[0]
    why = refusal(unit)
    return None if why is None else Problem(path, unit, why[0], why[1])


def _mapping(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any, limit: int) -> List[Any]:
    """A list's items for the semantic checks, or none when the shape check refused it.

    An oversize list has already been reported with its limit; checking each
    of its 70,000 items would only make the refusal slow.
    """
    return value if isinstance(value, list) and len(value) <= limit else []


# Canonical decimal texts of IPv4 octets and prefix lengths: "7", never "07" or "+7".
_OCTETS = {str(n): n for n in range(256)}
_V4_PREFIXES = {str(n): n for n in range(33)}


def _canonical_ipv4(text: str) -> Optional[Tuple[int, int]]:
    """(address, prefix length) of ``text`` written exactly as ipaddress writes an IPv4
    network ("a.b.c.d/n"), host bits allowed; None for anything else.

    Such text means what ``ip_network(text, strict=False)`` makes of it, and it is
    the ``str()`` of that network unless host bits are set; every other text goes
    through ipaddress, which then also words the error.  This skips parsing the
    text twice and printing it once per route (10,000 routes, both units).
    """
    address, slash, prefix = text.partition("/")
    plen = _V4_PREFIXES.get(prefix) if slash else None
    parts = address.split(".")
    if plen is None or len(parts) != 4:
        return None
    try:
        a, b, c, d = [_OCTETS[part] for part in parts]
    except KeyError:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d, plen


def _network(text: Any, path: str, problems: List[Problem],
             warnings: List[str]) -> Optional[IPNetwork]:
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_TEXT:
        return None  # the shape check has reported it
    if "%" in text:
        problems.append(Problem(path, text, "has an IPv6 zone id (the %... part)",
                                "Fix: write the network without it; a route names its "
                                "interface in dev."))
        return None
    quick = _canonical_ipv4(text)
    if quick is not None:
        net4 = ipaddress.IPv4Network(quick, strict=False)
        if int(net4.network_address) != quick[0]:
            warnings.append(f"{path}: {text!r} has host bits set; using {net4}")
        return net4
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as err:
        problems.append(Problem(path, text, f"is not an IPv4 or IPv6 CIDR ({err})",
                                "Fix: write it as A.B.C.D/N or X:X::/N, e.g. 10.0.5.0/24."))
        return None
    if "/" not in text:
        problems.append(Problem(path, text, "has no prefix length",
                                f"Fix: write {net} for a single host."))
        return None
    if str(net) != text:
        warnings.append(f"{path}: {text!r} has host bits set; using {net}")
    return net


def _parse_routes(static: Dict[str, Any], problems: List[Problem],
                  warnings: List[str]) -> List[Route]:
    raw_routes = _items(static.get("routes", []), MAX_ROUTES)
    if raw_routes and static.get("enabled") is not True:
        problems.append(Problem(
            "host_routing.static_routes.enabled", static.get("enabled"),
            "routes are given but static routes are not enabled",
            "Fix: set enabled: true to install them, or remove the routes."))
    routes: List[Route] = []
    seen: Dict[IPNetwork, int] = {}
    gateways: Dict[str, Tuple[Optional[IPAddress], Optional[str]]] = {}
    devs: Dict[str, str] = {}
    for i, item in enumerate(raw_routes):
        path = f"host_routing.static_routes.routes[{i}]"
        if not isinstance(item, dict):
            continue
        dest = _network(item.get("destination"), f"{path}.destination", problems, warnings)
        if dest is not None and _refuse_destination(dest, item, path, problems):
            dest = None
        gateway = _gateway(item, dest, path, problems, gateways)
        if dest is None:
            continue
        first = seen.setdefault(dest, i)
        if first != i:
            problems.append(Problem(
                f"{path}.destination", item["destination"],
                f"duplicates routes[{first}] ({dest})",
                "Fix: keep one route per destination."))
            continue
        dev = item.get("dev")  # one string per name, not per route: 10,000 routes, one eth0
        routes.append(Route(dest, gateway, devs.setdefault(dev, dev) if isinstance(dev, str)
                            else dev, item.get("metric")))
    return routes


def _gateway(item: Dict[str, Any], dest: Optional[IPNetwork], path: str,
             problems: List[Problem],
             known: Dict[str, Tuple[Optional[IPAddress], Optional[str]]]) -> Optional[IPAddress]:
    """The route's gateway if it is an address of the destination's family.

    ``known`` holds what ``_gateway_address`` said of each text already seen: routes
    mostly share a few gateways, and each is parsed and judged once.
    """
    text = item.get("gateway")
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_TEXT:
        return None
    if text not in known:
        known[text] = _gateway_address(text)
    gateway, why = known[text]
    if gateway is None:
        problems.append(Problem(
            f"{path}.gateway", text, "is not an IPv4 or IPv6 address",
            "Fix: give an address such as 172.16.1.2 or fe80::1 (name the interface in "
            "dev, not with %), or leave gateway out to use the default gateway of dev."))
        return None
    if dest is not None and gateway.version != dest.version:
        problems.append(Problem(
            f"{path}.gateway", text,
            f"is IPv{gateway.version} but destination {dest} is IPv{dest.version}",
            "Fix: use a gateway of the destination's family; mixed-family routes "
            "are not possible."))
        return None
    if why:
        problems.append(Problem(f"{path}.gateway", text, why if why.startswith("is") else
                                f"is {why}",
                                "Fix: give the router's own address, or leave gateway "
                                "out to use the default gateway of dev."))
        return None
    if "dev" not in item and gateway.is_link_local:
        problems.append(Problem(
            f"{path}.gateway", text, "is link-local, which only means something on one link",
            "Fix: add dev with the interface the gateway is on."))
        return None
    if dest is not None and gateway in dest:
        problems.append(Problem(
            f"{path}.gateway", text, f"is inside the route's own destination {dest}",
            "Fix: a next hop must be reachable without this route; give the router on "
            "the link you route through."))
        return None
    return gateway


def _gateway_address(text: str) -> Tuple[Optional[IPAddress], Optional[str]]:
    """``text`` as an address (None if it is none), and why no route may use it as a
    next hop whatever its destination (None if it may)."""
    try:
        if "%" in text:
            raise ValueError("zone index")
        gateway = ipaddress.ip_address(text)
    except ValueError:
        return None, None
    why = _special_span(gateway.version, int(gateway), int(gateway), subnet=True)
    if gateway.is_unspecified:
        why = "unspecified, which means no gateway at all (on-link routes are not supported)"
    elif isinstance(gateway, ipaddress.IPv6Address) and gateway.ipv4_mapped is not None:
        why = "an IPv4-mapped IPv6 address, which is never a next hop"
    return gateway, why


# Ranges that are never a route's destination or a next hop, and never route
# via the default interface (so an expected CIDR touching them never passes).
# Decided deliberately; the README's configuration reference says the same:
# - 240.0.0.0/4 ("reserved") is allowed: Linux routes it and some clusters use
#   it for pods; only its 255.255.255.255 is refused.
# - documentation, shared (100.64/10) and private ranges are ordinary here.
def _span(net: IPNetwork) -> Tuple[int, int, int]:
    """(version, first, last address) as integers: ipaddress's ``subnet_of`` and
    ``overlaps`` build objects on every call, most of validating 10,000 routes."""
    first = int(net.network_address)
    return net.version, first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


_SPECIAL = tuple((*_span(ipaddress.ip_network(net)), name) for net, name in (
    ("0.0.0.0/8", "the 'this network' range 0.0.0.0/8, which is never routed"),
    ("127.0.0.0/8", "the loopback range 127.0.0.0/8, which never leaves the host"),
    ("224.0.0.0/4", "the multicast range 224.0.0.0/4, which is not routed this way"),
    ("255.255.255.255/32", "the limited broadcast address, which is never routed"),
    ("::/128", "the unspecified address ::, which is never routed"),
    ("::1/128", "the loopback address ::1, which never leaves the host"),
    ("::ffff:0:0/96", "the IPv4-mapped range ::ffff:0:0/96, which is never routed as IPv6"),
    ("ff00::/8", "the multicast range ff00::/8, which is not routed this way"),
))
_LINK_LOCAL = tuple(_span(ipaddress.ip_network(n)) for n in ("169.254.0.0/16", "fe80::/10"))


def _special(net: IPNetwork, subnet: bool) -> Optional[str]:
    """"is (in) ..." if ``net`` is inside (``subnet``) or overlaps a special range."""
    return _special_span(*_span(net), subnet)


# By family: each of the 24,000 checks of a 10,000-route config walks only its own.
_SPECIAL_OF = {version: [s for s in _SPECIAL if s[0] == version] for version in (4, 6)}


def _special_span(version: int, first: int, last: int, subnet: bool) -> Optional[str]:
    for _, s_first, s_last, name in _SPECIAL_OF[version]:
        if subnet and s_first <= first and last <= s_last:
            return f"is {name}" if s_first == s_last else f"is in {name}"
        if not subnet and first <= s_last and s_first <= last:
            return f"overlaps {name}"
    return None


def _link_local(net: IPNetwork, subnet: bool) -> bool:
    version, first, last = _span(net)
    return any((ll_first <= first and last <= ll_last) if subnet
               else (first <= ll_last and ll_first <= last)
               for ll_version, ll_first, ll_last in _LINK_LOCAL if ll_version == version)


def _refuse_destination(dest: IPNetwork, item: Dict[str, Any], path: str,
                        problems: List[Problem]) -> bool:
    """Report a destination that makes no sense for this tool; True if reported."""
    text = item["destination"]
    if dest.prefixlen == 0:
        problems.append(Problem(
            f"{path}.destination", text, f"is the IPv{dest.version} default route",
            "Fix: this tool never replaces the default route; route only the ranges "
            "that must leave via dev, e.g. the cluster CIDR."))
        return True
    why = _special(dest, subnet=True)
    if why:
        problems.append(Problem(f"{path}.destination", text, why,
                                "Fix: route only unicast ranges that must leave via dev."))
        return True
    if "dev" not in item and _link_local(dest, subnet=True):
        problems.append(Problem(
            f"{path}.destination", text, "is link-local, which only means something on one link",
            "Fix: add dev with the interface it is on."))
        return True
    return False


def _parse_expected(raw: Any, problems: List[Problem],
                    warnings: List[str]) -> List[IPNetwork]:
    out: List[IPNetwork] = []
    seen: Dict[IPNetwork, int] = {}
    for i, text in enumerate(_items(raw, MAX_EXPECTED_CIDRS)):
        path = f"host_routing.route_overlap.expected_cidrs[{i}]"
        net = _network(text, path, problems, warnings)
        if net is None:
            continue
        why = "contains every address" if net.prefixlen == 0 else _special(net, subnet=False)
        if why is None and net.version == 6 and _link_local(net, subnet=False):
            # IPv4 link-local is fine: Azure IMDS, 169.254.169.254, routes via
            # the default gateway and is worth checking.
            why = "overlaps the link-local range fe80::/10, which is on every link"
        if why:
            problems.append(Problem(path, text, f"can never route via the default "
                                    f"interface: it {why}",
                                    "Fix: list the cluster's own ranges (VNet, pod and "
                                    "service CIDRs)."))
            continue
        first = seen.setdefault(net, i)
        if first != i:
            problems.append(Problem(path, text, f"duplicates expected_cidrs[{first}]",
                                    "Fix: list each CIDR once."))
            continue
        out.append(net)
    return out


def load_file(path: str) -> HostRouting:
    """Read a YAML or JSON file with a top-level ``host_routing`` key and parse it.

    OSError if it cannot be read; ConfigError for everything else, including
    a file the module wrote to fail closed, whose stored message is raised
    again word for word, so the units fail with it at every boot.
    """
    data = load_path(path)
    if isinstance(data, dict) and FAILED_CLOSED_KEY in data:
        raise _failed_closed_error(data[FAILED_CLOSED_KEY])
    if not isinstance(data, dict) or "host_routing" not in data:
        raise FileError(f"has no top-level host_routing mapping (got {show(data)})",
                        "Fix: put the settings under a host_routing: key")
    return parse(data["host_routing"])


# The key of the config file the module writes when it fails closed.
FAILED_CLOSED_KEY = "host_routing_failed_closed"


def failed_closed_json(err: ConfigError) -> str:
    """The config file that keeps a STRICT node failing closed: ``err``'s own text.

    Only strings go in, never the raw input, so this cannot fail however odd
    that input was (non-string keys, recursion, 5,000-digit integers);
    ``ensure_ascii`` keeps even lone surrogates writable.
    """
    import json  # the module's, not the units'

    return json.dumps({FAILED_CLOSED_KEY: {
        "why": "host_routing was invalid at first boot and asked for STRICT, so every "
               "gated unit stays blocked. Fix the user-data and boot a new instance.",
        "error": err.lines(),
    }}, indent=2, ensure_ascii=True) + "\n"


class _StoredError(ConfigError):
    """A failed-closed config file's stored error, repeated as it was written."""

    def __init__(self, lines: List[str]):
        self.stored = lines
        super().__init__([Problem("", None, line, "") for line in lines])

    def lines(self) -> List[str]:
        return [*self.stored, "  (stored at first boot: STRICT fails closed until the "
                              "user-data is fixed and a new instance boots)"]


def _failed_closed_error(stored: Any) -> ConfigError:
    lines = stored.get("error") if isinstance(stored, dict) else None
    if not (isinstance(lines, list) and lines and all(isinstance(x, str) for x in lines)):
        lines = ["invalid host_routing: failed closed at first boot (the stored message "
                 "is unreadable)"]
    return _StoredError(lines[:MAX_SHOWN_PROBLEMS + 2])
