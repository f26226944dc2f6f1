"""Route-collision fuzz: no config, however it collides, changes a route that is not ours.

A namespace holds foreign routes of every kind a node has: kernel (connected,
both families), static, DHCP-protocol, the default routes of both families,
blackhole and unreachable routes, and routes in other tables reached by rules.
Hypothesis generates configs whose destinations are those very prefixes, their
neighbours (a bit shorter or longer) or random ones, with every mix of dev,
gateway and metric, and runs ``apply-routes`` on each, as the unit does.  After
every run:

* every route that is not ours (all tables, both families, as ``ip -j route``
  prints them) is exactly as it was before the first run;
* every configured destination equal to the prefix of a foreign main-table
  route was refused, by a line naming both routes, and nothing else was;
* nothing printed a traceback, and the exit code says whether all went in.

CI runs a fixed seed and ``CI_EXAMPLES`` examples (about half a minute); set
``HR_FUZZ_EXAMPLES`` for a longer local run.  The negative control runs the
same check against an install that replaces anything and shows it catches that.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from netns import ETH6_GW, ETH_GW, NDHost
from test_edge_differential import settle

CI_EXAMPLES = 300
EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", CI_EXAMPLES))
IB_GW, IB6_GW = "10.0.0.1", "fd00:a::1"
FOREIGN_SETUP = (
    "route add 10.50.0.0/16 via 10.1.0.1 dev eth0 proto static metric 100",
    "route add 10.51.0.0/16 via 10.0.0.1 dev ib0 proto static",
    "route add 10.52.0.0/16 via 10.1.0.1 dev eth0 proto dhcp",
    "route add default via 10.0.0.1 dev ib0 proto dhcp metric 100",
    "route add 10.0.5.0/25 dev ib0",
    "route add blackhole 10.53.0.0/16",
    "route add unreachable 10.54.0.0/16 proto static",
    "route add 10.55.0.0/16 dev ib0 table 100",
    "rule add to 10.55.0.0/16 lookup 100 priority 100",
    "route add 10.56.0.0/16 via 10.0.0.1 dev ib0 table 1000",
    "rule add to 10.56.0.0/16 lookup 1000 priority 101",
    "-6 route add fd00:52::/48 via fd00:1::1 dev eth0 proto dhcp",
    "-6 route add fd00:54::/48 via fd00:a::1 dev ib0 proto static metric 50",
    "-6 route add blackhole fd00:53::/48",
)
PREFIXES4 = ["10.1.0.0/24", "10.0.0.0/16", "10.0.5.0/25", "10.50.0.0/16", "10.51.0.0/16",
             "10.52.0.0/16", "10.53.0.0/16", "10.54.0.0/16", "10.55.0.0/16", "10.56.0.0/16",
             "0.0.0.0/0", "10.0.5.0/24"]
PREFIXES6 = ["fd00:1::/64", "fd00:a::/48", "fd00:52::/48", "fd00:53::/48", "fd00:54::/48",
             "::/0"]


def all_routes(host: NDHost) -> List[Dict[str, Any]]:
    return [dict(r, family=family) for family in ("-4", "-6") for r in json.loads(
        host.ip("-j", family, "route", "show", "table", "all").stdout)]


def not_ours(routes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in routes if r.get("protocol") not in ("214", "215")]


def main_prefix(route: Dict[str, Any]) -> Optional[str]:
    """The prefix a main-table route holds (as ip -j prints routes), None for other tables."""
    if route.get("table", "main") != "main":
        return None
    dst = route["dst"]
    if dst == "default":
        dst = "0.0.0.0/0" if route["family"] == "-4" else "::/0"
    return str(ipaddress.ip_network(dst))


class Namespace:
    """The fuzz namespace and the foreign routes as they were before any run."""

    def __init__(self) -> None:
        self.host = settle(NDHost(ipv6=True))
        for command in FOREIGN_SETUP:
            self.host.ip(*command.split())
        self.foreign = not_ours(all_routes(self.host))
        self.held: Dict[str, List[Dict[str, Any]]] = {}
        for route in self.foreign:
            prefix = main_prefix(route)
            if prefix:
                self.held.setdefault(prefix, []).append(route)


@pytest.fixture(scope="module")
def space() -> Iterator[Namespace]:
    ns = Namespace()
    yield ns
    ns.host.close()


def run_apply(host: NDHost, config: Path, replace_anything: bool) -> subprocess.CompletedProcess:
    """apply-routes as the unit runs it; or, for the negative control, with every
    protocol counted as ours, so that the install replaces whatever holds a key."""
    if replace_anything:
        code = ("import sys\nimport cloudinit_hostrouting.netlink as n\n"
                "n.OUR_PROTOS = frozenset(range(256))\n"
                "from cloudinit_hostrouting.cli import main\nsys.exit(main(sys.argv[1:]))\n")
        prefix = [sys.executable, "-c", code]
    else:
        prefix = [sys.executable, "-m", "cloudinit_hostrouting"]
    return subprocess.run(["ip", "netns", "exec", host.ns, *prefix, "apply-routes",
                           "--config", str(config), "--wait", "0"],
                          capture_output=True, text=True, timeout=60, check=False)


def check_example(space: Namespace, tmp: Path, routes: Sequence[Dict[str, Any]],
                  replace_anything: bool = False) -> List[str]:
    """Run one config and assert every promise; our routes are removed afterwards.

    Returns the kinds of problem reported (REFUSED, FAILED, NOT IN EFFECT, or
    "config error"), for the fuzz statistics.
    """
    config = tmp / "fuzz.json"
    config.write_text(json.dumps({"host_routing": {
        "static_routes": {"enabled": True, "routes": list(routes)}}}))
    proc = run_apply(space.host, config, replace_anything)
    try:
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output, output
        assert not_ours(all_routes(space.host)) == space.foreign, output
        if proc.returncode == 2:  # refused by config validation: says where, touches nothing
            assert "error:" in proc.stderr, output
            return ["config error"]
        lines = proc.stderr.splitlines()
        ours = {main_prefix(r) for r in all_routes(space.host) if r.get("protocol") == "214"}
        for route in routes:
            dest = str(ipaddress.ip_network(route["destination"]))
            refused = [ln for ln in lines if ln.startswith(f"REFUSED: {dest} ")]
            theirs = space.held.get(dest, [])
            if not theirs:
                assert not refused, output
                continue
            # A route whose dev or gateway could not be resolved never reached the
            # install; every other one that collides is refused, naming both routes.
            assert dest not in ours, output
            if not any(ln.startswith(f"FAILED: {dest}: ") for ln in lines):
                assert len(refused) == 1, output
                assert "(not ours)" in refused[0] and any(_names(t, refused[0]) for t in theirs), \
                    (refused[0], theirs)
        problems = [ln for ln in lines
                    if ln.startswith(("REFUSED: ", "FAILED: ", "NOT IN EFFECT: "))]
        assert proc.returncode == (1 if problems else 0), output
        return sorted({ln.split(":")[0] for ln in problems})
    finally:
        for family in ("-4", "-6"):
            space.host.ip(family, "route", "flush", "proto", "214", check=False)


def _names(route: Dict[str, Any], line: str) -> bool:
    """Does a refusal line name this foreign route, as our describe() writes it?"""
    dst = main_prefix(route)
    if dst is None:
        return False
    want = [f" {dst} " if route.get("type", "unicast") == "unicast" else
            f" {route['type']} {dst} ", f"proto {route.get('protocol', 'boot')}"]
    if route.get("dev") and route.get("type", "unicast") == "unicast":
        want.append(f"dev {route['dev']}")
    if route.get("gateway"):
        want.append(f"via {route['gateway']}")
    return all(w in line for w in want)


# --- the generator -------------------------------------------------------------------

def _near(prefix: str, delta: int) -> str:
    net = ipaddress.ip_network(prefix)
    plen = min(max(net.prefixlen + delta, 1), net.max_prefixlen)
    return str(ipaddress.ip_network((net.network_address, plen), strict=False))


@st.composite
def destinations(draw: Any, version: int) -> str:
    pool = PREFIXES4 if version == 4 else PREFIXES6
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.sampled_from(pool))
    if choice == 1:
        return _near(draw(st.sampled_from(pool)), draw(st.integers(-2, 2)))
    space = ipaddress.ip_network("10.0.0.0/8" if version == 4 else "fd00::/16")
    offset = draw(st.integers(0, space.num_addresses - 1))
    plen = draw(st.integers(space.prefixlen, space.max_prefixlen))
    return str(ipaddress.ip_network((int(space.network_address) + offset, plen), strict=False))


@st.composite
def route_configs(draw: Any) -> Dict[str, Any]:
    version = draw(st.sampled_from([4, 4, 6]))
    route: Dict[str, Any] = {"destination": draw(destinations(version))}
    dev = draw(st.sampled_from([None, "eth0", "ib0"]))
    if dev:
        route["dev"] = dev
    gateways = {4: {"eth0": ETH_GW, "ib0": IB_GW, None: ETH_GW},
                6: {"eth0": ETH6_GW, "ib0": IB6_GW, None: ETH6_GW}}[version]
    gateway = draw(st.sampled_from(["auto", "matching", "unreachable"]))
    if gateway == "matching":
        route["gateway"] = gateways[dev]
    elif gateway == "unreachable":
        route["gateway"] = "10.9.9.9" if version == 4 else "fd00:9::9"
    metric = draw(st.sampled_from([None, 0, 50, 100, 256, 1024, 4000]))
    if metric is not None:
        route["metric"] = metric
    return route


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(routes=st.lists(route_configs(), min_size=1, max_size=6,
                       unique_by=lambda r: str(ipaddress.ip_network(r["destination"]))))
def test_fuzz_no_foreign_route_ever_changes(space: Namespace, tmp_path_factory: Any,
                                            routes: List[Dict[str, Any]]) -> None:
    for kind in check_example(space, tmp_path_factory.mktemp("fuzz"), routes):
        event(kind)  # --hypothesis-show-statistics: how often each outcome was hit


def test_negative_control_a_replace_anything_install_is_caught(
        space: Namespace, tmp_path: Path) -> None:
    """The same check against an install that replaces any route: it must fail."""
    colliding = [{"destination": "10.0.0.0/16", "dev": "eth0"}]
    check_example(space, tmp_path, colliding)  # the real install passes...
    with pytest.raises(AssertionError):
        check_example(space, tmp_path, colliding, replace_anything=True)
    # ...and the namespace is put back for the tests after this one.
    space.host.ip("route", "del", "10.0.0.0/16", check=False)
    space.host.ip("route", "add", "10.0.0.0/16", "dev", "ib0", "proto", "kernel", "scope",
                  "link", "src", "10.0.200.5")
    assert not_ours(all_routes(space.host)) == space.foreign
