"""The JSON schema of ``host_routing``: the one source of truth for its shape.

The same dict is used three ways:

* ``check_shape`` walks it in pure Python.  The systemd units validate their
  config file on the boot critical path, where importing jsonschema would cost
  about 160 ms, so the walker covers exactly the keywords this schema uses.
* ``cloudinit-hostrouting validate`` merges it into cloud-init's own schema and
  runs cloud-init's validator over whole ``#cloud-config`` files.
* The README's configuration reference is generated from it (``schema --markdown``).

Each property's ``description`` ends with the fix we suggest, so an error can
name the path, the value and the fix without a second table to keep in sync.
Semantic checks the schema cannot express (address parsing, duplicates after
masking host bits) live in ``config.py``.
"""

from __future__ import annotations

import re

from .records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List

# Generous but bounded: 10,000 routes must work; a million is a mistake (or an
# attack on a boot-critical unit) and gets a clear error instead.  The largest
# config allowed, as the JSON the module writes, must stay well below
# loader.MAX_FILE_BYTES, or the units would refuse what the module accepted
# (tests/test_config.py checks it).
MAX_ROUTES = 16384
MAX_EXPECTED_CIDRS = 4096
MAX_GATE_UNITS = 64
# The longest address or CIDR text accepted (an IPv6 CIDR is at most 43).
MAX_ADDRESS_TEXT = 64
# The agent waits up to 120 s for the RDMA devices, then retries for 60 s.
MAX_WAIT_FOR_IPOIB_S = 600
ANTICIPATE_CHOICES = ("auto", "always", "never")
ANTICIPATE_PATTERN = "^(" + "|".join(ANTICIPATE_CHOICES) + ")$"

IFNAME_PATTERN = r"^[A-Za-z0-9_.-]{1,15}$"
# systemd unit names: [A-Za-z0-9:_.\-] plus one '@' (template or instance),
# a known suffix, 255 characters at most (systemd's UNIT_NAME_MAX).
UNIT_NAME_PATTERN = (
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?"
    r"\.(service|socket|target|device|mount|automount|swap|path|timer|slice|scope)$"
)
PROM_PATH_PATTERN = r"^/[A-Za-z0-9_./-]{1,250}\.prom$"
MODE_PATTERN = r"^([Ww][Aa][Rr][Nn]|[Ss][Tt][Rr][Ii][Cc][Tt])$"

_CIDR_DESC = (
    "An IPv4 or IPv6 network in CIDR form. Fix: write it as A.B.C.D/N or X:X::/N, "
    "e.g. 10.0.5.0/24 or fd00:5::/64."
)

GATE_UNIT_SCHEMA: Dict[str, Any] = {
    "type": "string",
    "maxLength": 255,
    "pattern": UNIT_NAME_PATTERN,
    "description": (
        "A unit that must wait for the checks. Fix: a systemd unit name such as "
        "systemd-nspawn@.service or kubelet.service."
    ),
}

ROUTE_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["destination"],
    "description": "One route. Fix: a mapping with destination and optional gateway, dev, metric.",
    "properties": {
        "destination": {
            "type": "string",
            "maxLength": MAX_ADDRESS_TEXT,
            "description": (
                "Destination of the route. Refused: any /0 (the default route), 0.0.0.0/8, "
                "loopback, multicast, 255.255.255.255, ::, ::ffff:0:0/96, zone ids, and "
                "link-local without dev; 240.0.0.0/4 is allowed. " + _CIDR_DESC),
        },
        "gateway": {
            "type": "string",
            "maxLength": MAX_ADDRESS_TEXT,
            "description": (
                "Next hop, of the destination's family; a link-local gateway needs dev. "
                "Defaults to the default gateway on dev, found at boot. Refused: 0.0.0.0 "
                "and :: (no on-link routes), 0.0.0.0/8, loopback, multicast, "
                "255.255.255.255, IPv4-mapped IPv6, zone ids, an address inside the "
                "destination. Fix: give an address such as 172.16.1.2 or fe80::1, or leave "
                "gateway out."
            ),
        },
        "dev": {
            "type": "string",
            "pattern": IFNAME_PATTERN,
            "description": (
                "Outbound interface. Defaults to the interface of the default route "
                "of the destination's family, found at boot. Fix: use a Linux interface "
                "name of 1-15 characters from A-Z a-z 0-9 _ . -, such as eth0, or leave "
                "dev out."
            ),
        },
        "metric": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4294967295,
            "description": (
                "Route metric (priority); lower wins. Fix: use a whole number "
                "from 0 to 4294967295, or leave metric out."
            ),
        },
    },
}

HOST_ROUTING_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "Host routing for InfiniBand VMs: more-specific static routes, an overlap "
        "check and the units that must wait for both. Fix: see the README."
    ),
    "properties": {
        "static_routes": {
            "type": "object",
            "additionalProperties": False,
            "description": "Static routes to install. Fix: a mapping with enabled and routes.",
            "properties": {
                "enabled": {
                    "type": "boolean",
                    "description": (
                        "Explicit opt-in for routes. Fix: set enabled: true when "
                        "routes are given, or remove the routes."
                    ),
                },
                "routes": {
                    "type": "array",
                    "maxItems": MAX_ROUTES,
                    "items": ROUTE_SCHEMA,
                    "description": (
                        "Routes to install; a route we did not install is never replaced. "
                        f"Fix: a list of at most {MAX_ROUTES} mappings with destination, "
                        "gateway, dev, metric."
                    ),
                },
            },
        },
        "route_overlap": {
            "type": "object",
            "additionalProperties": False,
            "description": (
                "The overlap check. Fix: a mapping with mode, expected_cidrs, "
                "anticipate_ipoib and wait_for_ipoib."
            ),
            "properties": {
                "anticipate_ipoib": {
                    "type": "string",
                    "pattern": ANTICIPATE_PATTERN,
                    "description": (
                        "Judge the table as it will be once the Azure guest agent has added "
                        "the IPoIB addresses the host announced in the Hyper-V KVP pool "
                        "(IPoIB_Data): each one's connected /16 counts as a route already. "
                        "auto (default): when /etc/waagent.conf has OS.EnableRDMA=y or an "
                        "InfiniBand link already has an IPv4 address; always; never. "
                        "Fix: one of auto, always, never."
                    ),
                },
                "wait_for_ipoib": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_WAIT_FOR_IPOIB_S,
                    "description": (
                        "Seconds the check waits, before judging, for every InfiniBand link "
                        "(by link type, KVP MAC or ib* name) to have its IPv4 address; "
                        "taken from the same bounded budget as the wait for the default "
                        "route. 0 (default) does not wait. Fix: a whole number from 0 to "
                        f"{MAX_WAIT_FOR_IPOIB_S}."
                    ),
                },
                "mode": {
                    "type": "string",
                    "pattern": MODE_PATTERN,
                    "description": (
                        "WARN only reports; STRICT keeps gated units from starting. "
                        "Fix: use WARN or STRICT (any case)."
                    ),
                },
                "expected_cidrs": {
                    "type": "array",
                    "maxItems": MAX_EXPECTED_CIDRS,
                    "uniqueItems": True,
                    "items": {
                        "type": "string",
                        "maxLength": MAX_ADDRESS_TEXT,
                        "description": "A CIDR that must route via the default interface. "
                        + _CIDR_DESC,
                    },
                    "description": (
                        "CIDRs that must route via the default interface. Refused, as they "
                        "could never pass: /0, zone ids, and ranges overlapping loopback, "
                        "multicast, 0.0.0.0/8, 255.255.255.255, ::ffff:0:0/96 or fe80::/10 "
                        "(169.254.169.254, Azure IMDS, is allowed). Fix: a list of at most "
                        f"{MAX_EXPECTED_CIDRS} distinct CIDRs."
                    ),
                },
            },
        },
        "gate_units": {
            "type": "array",
            "maxItems": MAX_GATE_UNITS,
            "uniqueItems": True,
            "items": GATE_UNIT_SCHEMA,
            "description": (
                "Units that start only after both checks (default: "
                "[systemd-nspawn@.service]). Only .service and .target units; refused "
                "because they would make an ordering cycle with our units or lock you "
                "out when STRICT fails: systemd's boot, shutdown and rescue targets, "
                "systemd's own services (systemd-nspawn@ excepted), cloud-init's units, "
                "network managers, ssh, gettys, D-Bus, the Azure agent and our own "
                "hostrouting-* units. Fix: a list of systemd unit names of the workloads "
                "that need the routes."
            ),
        },
        "guard": {
            "type": "object",
            "additionalProperties": False,
            "description": (
                "A long-running guard that keeps routes right after boot. Fix: a mapping "
                "with enabled, auto_mitigate and prometheus_textfile."
            ),
            "properties": {
                "enabled": {
                    "type": "boolean",
                    "description": (
                        "Run hostrouting-guard.service: re-install our routes when they "
                        "vanish and re-check on every route, address or link change. "
                        "Fix: true or false."
                    ),
                },
                "auto_mitigate": {
                    "type": "boolean",
                    "description": (
                        "Also route every newly shadowed expected range via the default "
                        "interface (tagged proto hostrouting-auto). Fix: true or false."
                    ),
                },
                "prometheus_textfile": {
                    "type": "string",
                    "pattern": PROM_PATH_PATTERN,
                    "description": (
                        "Where the guard keeps node_exporter textfile metrics current. "
                        "Fix: an absolute path ending in .prom, e.g. "
                        "/var/lib/node_exporter/textfile_collector/hostrouting.prom."
                    ),
                },
            },
        },
        "azure": {
            "type": "object",
            "additionalProperties": False,
            "description": "Azure helpers. Fix: a mapping with suggest.",
            "properties": {
                "suggest": {
                    "type": "boolean",
                    "description": (
                        "At first boot, take the IMDS document from cloud-init's Azure "
                        "datasource (or ask IMDS) and write a suggested host_routing "
                        "block. Fix: true or false."
                    ),
                },
            },
        },
    },
}


class Problem(NamedTuple):
    """One thing wrong with the input: where, what was there, and what to do."""

    path: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (got {show(self.value)}). {self.fix}"


# An error names at most this many problems, then how many more there are: a
# 70,000-route mistake must not become a 10 MB journal entry.
MAX_SHOWN_PROBLEMS = 20


class ConfigError(ValueError):
    """Invalid ``host_routing``; ``problems`` lists each one with path and fix.

    ``lines()`` is the capped text a user sees; it is also what a failed-closed
    STRICT config stores, so the units repeat it word for word at every boot.
    """

    def __init__(self, problems: List[Problem], title: str = "invalid host_routing"):
        self.problems = problems
        self.title = title
        super().__init__("\n".join(self.lines()))

    def lines(self) -> List[str]:
        """A heading with the count, the first problems, and how many were left out."""
        shown = [f"  - {p}" for p in self.problems[:MAX_SHOWN_PROBLEMS]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"  - and {more} more problem(s)")
        return [f"{self.title} ({len(self.problems)} problem(s)):", *shown]


def show(value: Any) -> str:
    """A short, total rendering of any input value for an error message.

    Total means it never raises and never does unbounded work: the value may
    be a recursive structure, nested 20,000 deep, a 5,000-digit integer (whose
    ``repr`` raises on Python 3.11+) or a megabyte string.
    """
    text = _brief(value, 3)
    return text if len(text) <= 80 else text[:77] + "..."


def _brief(value: Any, depth: int) -> str:
    if isinstance(value, str):
        return repr(value[:81]) if len(value) > 81 else repr(value)
    if isinstance(value, bytes):
        return repr(value[:40])
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 200 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, dict):
        if not value or depth == 0:
            return "{...}" if value else "{}"
        parts = [f"{_brief(k, 0)}: {_brief(v, depth - 1)}" for k, v in _first(value.items(), 4)]
        return "{" + ", ".join(parts + ["..."] * (len(value) > 4)) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value or depth == 0:
            return "[...]" if value else "[]"
        parts = [_brief(item, depth - 1) for item in _first(value, 4)]
        return "[" + ", ".join(parts + ["..."] * (len(value) > 4)) + "]"
    try:
        return repr(value)[:81]  # dates and times: their repr is short and safe
    except Exception:  # any object: an error message must not fail
        return f"<{type(value).__name__}>"


def _first(items: Any, n: int) -> List[Any]:
    out: List[Any] = []
    for item in items:
        if len(out) == n:
            break
        out.append(item)
    return out


def key_path(path: str, key: Any) -> str:
    """``path.key`` for any mapping key; non-string keys (YAML 1, 2024-01-01) too."""
    if isinstance(key, str):
        return f"{path}.{key[:64]}..." if len(key) > 64 else f"{path}.{key}"
    if type(key).__name__ in ("date", "datetime"):  # YAML 2024-01-01; no import needed
        return f"{path}.{key.isoformat()}"
    return f"{path}.{_brief(key, 0)}"


def fix_of(node: Dict[str, Any]) -> str:
    """The fix hint: the part of a schema node's description from 'Fix:' on."""
    desc = node.get("description", "")
    at = desc.find("Fix:")
    return desc[at:] if at >= 0 else "Fix: see the README's configuration reference."


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer" and isinstance(value, bool):
        return False  # YAML 'true' must not pass as the integer 1
    return isinstance(value, _TYPES[name])


def check_shape(value: Any, node: Dict[str, Any] = HOST_ROUTING_SCHEMA,
                path: str = "host_routing") -> List[Problem]:
    """Every way ``value`` breaks ``node``, each as a Problem with its path."""
    if _compile(node)(value):
        return []
    return list(_walk(value, node, path))


_COMPILED: Dict[str, Any] = {}


def _pattern(text: str) -> Any:
    """``text`` compiled once: ``re.fullmatch(text, ...)`` looks it up in re's cache
    at every call, and the units match it against each of 10,000 routes."""
    compiled = _COMPILED.get(text)
    if compiled is None:
        compiled = _COMPILED[text] = re.compile(text)
    return compiled


def _compile(node: Dict[str, Any]) -> Any:  # a (value) -> bool test
    """A test that is True exactly when ``_walk(value, node, ...)`` finds nothing: its
    checks, in the same terms, with each node's keywords read once, not once per
    value, and no path, fix or message built.

    A valid config (what the units read at every boot) is checked by this alone;
    ``_walk`` runs only on what fails it, to say why.  Made afresh for every
    check, so it always follows the schema it is given.
    """
    want = node.get("type")
    kind = _TYPES[want] if want else object
    if want == "object":
        props = {key: _compile(sub) for key, sub in node.get("properties", {}).items()}
        required = node.get("required", [])
        closed = node.get("additionalProperties") is False

        def clean(value: Any) -> bool:
            if not isinstance(value, dict) or any(key not in value for key in required):
                return False
            for key, sub in value.items():
                test = props.get(key) if isinstance(key, str) else None
                if test is not None:
                    if not test(sub):
                        return False
                elif closed:
                    return False
            return True
    elif want == "array":
        limit, unique = node.get("maxItems"), node.get("uniqueItems")
        item_clean = _compile(node["items"])

        def clean(value: Any) -> bool:
            if not isinstance(value, list) or (limit is not None and len(value) > limit):
                return False
            if unique:
                seen = set()
                for item in value:
                    if isinstance(item, (str, int)):
                        if item in seen:
                            return False
                        seen.add(item)
            return all(map(item_clean, value))
    elif want == "string":
        longest = node.get("maxLength")
        pattern = _pattern(node["pattern"]) if "pattern" in node else None

        def clean(value: Any) -> bool:
            return isinstance(value, str) and (longest is None or len(value) <= longest) \
                and (pattern is None or pattern.fullmatch(value) is not None)
    elif want == "integer":
        low, high = node.get("minimum"), node.get("maximum")

        def clean(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) \
                and (low is None or value >= low) and (high is None or value <= high)
    else:
        def clean(value: Any) -> bool:
            return isinstance(value, kind)
    return clean


def _walk(value: Any, node: Dict[str, Any], path: str) -> Iterator[Problem]:
    fix = fix_of(node)
    want = node.get("type")
    if want and not _type_ok(value, want):
        yield Problem(path, value, f"must be of type {want}, not {type(value).__name__}", fix)
        return
    if want == "object":
        props = node.get("properties", {})
        for key in node.get("required", []):
            if key not in value:
                yield Problem(path, value, f"missing required key '{key}'", fix_of(props[key]))
        for key, sub in value.items():
            if isinstance(key, str) and key in props:
                yield from _walk(sub, props[key], f"{path}.{key}")
            elif node.get("additionalProperties") is False:
                known = ", ".join(sorted(props))
                yield Problem(key_path(path, key), key, "unknown key",
                              f"Fix: check the spelling; known keys here: {known}.")
    elif want == "array":
        limit = node.get("maxItems")
        if limit is not None and len(value) > limit:
            yield Problem(path, f"<list of {len(value)} items>",
                          f"has {len(value)} items, more than the limit of {limit}", fix)
            return
        seen: Dict[Any, int] = {}
        for i, item in enumerate(value):
            if node.get("uniqueItems") and isinstance(item, (str, int)):
                if item in seen:
                    yield Problem(f"{path}[{i}]", item, f"duplicates {path}[{seen[item]}]",
                                  "Fix: remove the duplicate.")
                seen.setdefault(item, i)
            yield from _walk(item, node["items"], f"{path}[{i}]")
    elif want == "string":
        if "maxLength" in node and len(value) > node["maxLength"]:
            yield Problem(path, value, f"is longer than {node['maxLength']} characters", fix)
        # fullmatch, not search: "$" also matches before a final newline, so
        # search() would accept "eth0\n", or a YAML block scalar "STRICT\n".
        elif "pattern" in node and not _pattern(node["pattern"]).fullmatch(value):
            yield Problem(path, value, "is not valid here", fix)
    elif want == "integer":
        if value < node.get("minimum", value) or value > node.get("maximum", value):
            yield Problem(path, value,
                          f"is outside {node['minimum']}..{node['maximum']}", fix)


def markdown_reference(node: Dict[str, Any] = HOST_ROUTING_SCHEMA,
                       path: str = "host_routing") -> str:
    """A Markdown table of every key, generated so the README cannot drift."""
    rows = ["| key | type | meaning |", "|---|---|---|"]
    for key_path, sub in _leaves(node, path):
        rows.append(f"| `{key_path}` | {sub.get('type', '')} | {sub.get('description', '')} |")
    return "\n".join(rows) + "\n"


def _leaves(node: Dict[str, Any], path: str) -> Iterator[tuple]:
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _leaves(sub, f"{path}.{key}")
    if "items" in node and node["items"].get("type") == "object":
        yield from _leaves(node["items"], f"{path}[]")
