"""Complete shadow analysis against the real kernel: every kind of shadow, both families.

Each test shapes a namespace's routing (tests/netns.py), runs ``check-overlap``
as the unit does, and reads the markers and status.json it wrote.  The
property test at the end generates random route tables and policy rules and
compares our reported ranges with the kernel's own answers (``ip route get``
one ``ip route get`` per address) for sampled addresses: no disagreement is allowed.
A second one does the same for apply-routes' verification of the routes it
installs (each route's own region, asked in one batch).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns import ETH6_GW, ETH_GW, NDHost, sh

pytestmark = pytest.mark.ndhost(ipv6=True)  # the host fixture (conftest.py) is dual-stack


def run_check(host: NDHost, tmp_path: Path, expected: Sequence[str], mode: str = "WARN",
              routes: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """check-overlap as the unit runs it; returns exit code, marker lines and status."""
    body: Dict[str, Any] = {"route_overlap": {"mode": mode, "expected_cidrs": list(expected)}}
    if routes:
        body["static_routes"] = {"enabled": True, "routes": routes}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"host_routing": body}))
    if routes:
        applied = host.run_cli("apply-routes", "--config", str(cfg))
        assert applied.returncode == 0, applied.stderr
    run_dir = tmp_path / "run"
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir", str(run_dir),
                        "--wait", "2")
    detected = run_dir / "route-overlap.detected"
    return {
        "rc": proc.returncode,
        "stdout": proc.stdout,
        "lines": detected.read_text().splitlines() if detected.exists() else [],
        "ok": (run_dir / "route-overlap.ok").exists(),
        "status": json.loads((run_dir / "status.json").read_text()),
    }


def shadowed(result: Dict[str, Any], cidr: str) -> List[Dict[str, Any]]:
    return next(c for c in result["status"]["cidrs"] if c["cidr"] == cidr)["shadowed"]


def test_regression_slash8_with_ib_slash16_inside_is_caught(tmp_path: Path) -> None:
    """Upstream's network+1 probe passes this; a whole /16 of the cluster is blackholed."""
    host = NDHost(ib_addr="10.5.200.5/16")
    try:
        # What upstream looks at: the probe is fine...
        assert host.route_get_dev("10.0.0.1") == "eth0"
        # ...while the kernel sends 10.5.0.0/16 to ib0.
        assert host.route_get_dev("10.5.3.3") == "ib0"
        result = run_check(host, tmp_path, ["10.0.0.0/8"], mode="STRICT")
        assert result["rc"] == 1 and not result["ok"]
        assert result["lines"] == ["OVERLAP: expected CIDR 10.0.0.0/8 (probe 10.5.0.1) routes "
                                   "via ib0, expected eth0"]
        [bad] = shadowed(result, "10.0.0.0/8")
        assert bad["range"] == "10.5.0.0/16" and bad["cidrs"] == ["10.5.0.0/16"]
        assert bad["interface"] == "ib0"
        assert bad["culprit"] == "10.5.0.0/16 dev ib0 proto kernel scope link"

        fixed = run_check(host, tmp_path, ["10.0.0.0/8"], mode="STRICT",
                          routes=[{"destination": "10.5.0.0/17"},
                                  {"destination": "10.5.128.0/17"}])
        assert fixed["rc"] == 0 and fixed["ok"], fixed["lines"]
        assert host.route_get_dev("10.5.200.1") == "eth0"
    finally:
        host.close()


def test_more_specific_route_on_other_interface_and_extra_range_lines(
        host: NDHost, tmp_path: Path) -> None:
    host.ip("route", "add", "10.96.4.0/22", "dev", "ib0")
    host.ip("route", "add", "10.100.9.0/24", "via", "10.0.0.1", "dev", "ib0")
    result = run_check(host, tmp_path, ["10.96.0.0/12"])
    assert result["rc"] == 0  # WARN
    assert result["lines"] == [
        "OVERLAP: expected CIDR 10.96.0.0/12 (probe 10.96.4.1) routes via ib0, expected eth0",
        "  RANGE: 10.100.9.0/24 of 10.96.0.0/12 goes via ib0 (probe 10.100.9.1; route: "
        "10.100.9.0/24 via 10.0.0.1 dev ib0 proto boot)",
    ]
    ranges = [(b["range"], b["culprit"]) for b in shadowed(result, "10.96.0.0/12")]
    assert ranges == [("10.96.4.0/22", "10.96.4.0/22 dev ib0 proto boot scope link"),
                      ("10.100.9.0/24", "10.100.9.0/24 via 10.0.0.1 dev ib0 proto boot")]


@pytest.mark.parametrize("kind", ["blackhole", "unreachable", "prohibit"])
def test_blackhole_unreachable_prohibit_are_no_route(host: NDHost, tmp_path: Path,
                                                     kind: str) -> None:
    host.ip("route", "add", kind, "10.96.7.0/24")
    host.ip("-6", "route", "add", kind, "fd00:96:7::/48")
    result = run_check(host, tmp_path, ["10.96.0.0/12", "fd00:96::/32"], mode="STRICT")
    assert result["rc"] == 1
    assert ("NO-ROUTE: expected CIDR 10.96.0.0/12 (probe 10.96.7.1) has no IPv4 route; "
            "expected via eth0") in result["lines"]
    assert ("NO-ROUTE: expected CIDR fd00:96::/32 (probe fd00:96:7::1) has no IPv6 route; "
            "expected via eth0") in result["lines"]
    [v4] = shadowed(result, "10.96.0.0/12")
    assert (v4["range"], v4["route_type"], v4["status"]) == ("10.96.7.0/24", kind, "no-route")
    assert v4["culprit"] == f"{kind} 10.96.7.0/24 proto boot"
    [v6] = shadowed(result, "fd00:96::/32")
    assert (v6["range"], v6["route_type"]) == ("fd00:96:7::/48", kind)


def test_ip_rule_sending_part_of_a_cidr_to_another_table(host: NDHost, tmp_path: Path) -> None:
    host.ip("route", "add", "10.96.8.0/24", "dev", "ib0", "table", "100")
    host.ip("rule", "add", "to", "10.96.8.0/24", "lookup", "100", "priority", "100")
    assert host.route_get_dev("10.96.8.9") == "ib0"  # control: the rule is live
    result = run_check(host, tmp_path, ["10.96.0.0/12"])
    [bad] = shadowed(result, "10.96.0.0/12")
    assert bad["range"] == "10.96.8.0/24" and bad["interface"] == "ib0"
    assert bad["culprit"] == "10.96.8.0/24 dev ib0 table 100 proto boot scope link"


def test_rule_to_a_table_with_only_a_default_elsewhere(host: NDHost, tmp_path: Path) -> None:
    """The rule's selector alone is the boundary: table 101 holds no prefix inside the CIDR."""
    host.ip("route", "add", "default", "dev", "ib0", "table", "101")
    host.ip("rule", "add", "to", "10.97.0.0/16", "lookup", "101", "priority", "101")
    result = run_check(host, tmp_path, ["10.96.0.0/12"])
    [bad] = shadowed(result, "10.96.0.0/12")
    assert bad["range"] == "10.97.0.0/16" and bad["interface"] == "ib0"
    assert bad["culprit"] == "0.0.0.0/0 dev ib0 table 101 proto boot scope link"


def test_slash32_and_slash128(host: NDHost, tmp_path: Path) -> None:
    result = run_check(host, tmp_path, ["10.0.5.7/32", "fd00:a::7/128", "10.96.0.1/32"])
    assert result["lines"][:2] == [
        "OVERLAP: expected CIDR 10.0.5.7/32 (probe 10.0.5.7) routes via ib0, expected eth0",
        "OVERLAP: expected CIDR fd00:a::7/128 (probe fd00:a::7) routes via ib0, expected eth0",
    ]
    assert len(result["lines"]) == 2  # 10.96.0.1/32 is fine
    ok = next(c for c in result["status"]["cidrs"] if c["cidr"] == "10.96.0.1/32")
    assert ok["status"] == "ok" and ok["interface"] == "eth0"


def test_ipv6_shadow_fixed_by_ipv6_route_with_link_local_gateway(host: NDHost,
                                                                 tmp_path: Path) -> None:
    before = run_check(host, tmp_path, ["fd00:a:0:5::/64"], mode="STRICT")
    assert before["rc"] == 1
    assert before["lines"] == ["OVERLAP: expected CIDR fd00:a:0:5::/64 (probe fd00:a:0:5::1) "
                               "routes via ib0, expected eth0"]
    peer_ll = _link_local(host.peer, "p-eth0")
    after = run_check(host, tmp_path, ["fd00:a:0:5::/64"], mode="STRICT",
                      routes=[{"destination": "fd00:a:0:5::/64", "gateway": peer_ll,
                               "dev": "eth0"}])
    assert after["rc"] == 0 and after["ok"]
    route = json.loads(host.ip("-j", "-6", "route", "show", "fd00:a:0:5::/64").stdout)[0]
    assert (route["gateway"], route["dev"], route["protocol"]) == (peer_ll, "eth0", "214")


def test_ipv6_auto_gateway_uses_the_ipv6_default_route(host: NDHost, tmp_path: Path) -> None:
    result = run_check(host, tmp_path, ["fd00:a:0:5::/64"], mode="STRICT",
                       routes=[{"destination": "fd00:a:0:5::/64"}])
    assert result["rc"] == 0
    route = json.loads(host.ip("-j", "-6", "route", "show", "fd00:a:0:5::/64").stdout)[0]
    assert (route["gateway"], route["dev"]) == (ETH6_GW, "eth0")


def test_no_ipv6_default_route_fails_only_ipv6(tmp_path: Path) -> None:
    host = NDHost()  # IPv4 only
    try:
        result = run_check(host, tmp_path, ["10.96.0.0/12", "fd00:9::/64"], mode="STRICT")
        assert result["rc"] == 1
        assert result["lines"] == ["no-default-route-ipv6"]
        assert result["status"]["default_interface"] == "eth0"
    finally:
        host.close()


def _link_local(ns: str, dev: str) -> str:
    addrs = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev).stdout)
    return next(a["local"] for a in addrs[0]["addr_info"] if a["scope"] == "link")


# --- property: our ranges agree with the kernel, address by address -------------------

SPACE = ipaddress.ip_network("10.64.0.0/10")
TEST_PROTO = "77"  # our generated routes, so each example can flush exactly them


@st.composite
def prefixes(draw: Any) -> ipaddress.IPv4Network:
    plen = draw(st.integers(min_value=11, max_value=32))
    offset = draw(st.integers(min_value=0, max_value=SPACE.num_addresses - 1))
    return ipaddress.ip_network((int(SPACE.network_address) + offset, plen), strict=False)


ROUTE_KINDS = st.sampled_from(["eth0", "ib0", "blackhole", "unreachable", "prohibit"])


def _install(host: NDHost, routes: List[Any], rules: List[Any]) -> None:
    commands = []
    for net, kind, table in routes:
        where = f"dev {kind}" if kind in ("eth0", "ib0") else ""
        prefix = "" if where else kind
        gw = f"via {ETH_GW}" if kind == "eth0" else ""
        commands.append(f"route replace {prefix} {net} {gw} {where} table {table} "
                        f"proto {TEST_PROTO}")
    for prio, (net, table) in enumerate(rules, start=1000):
        commands.append(f"rule add to {net} lookup {table} priority {prio}")
    proc = subprocess.run(["ip", "-n", host.ns, "-force", "-batch", "-"], input="\n".join(
        " ".join(c.split()) for c in commands) + "\n", capture_output=True, text=True,
        timeout=20, check=False)
    assert proc.returncode == 0, proc.stderr


def _flush(host: NDHost, rules: List[Any]) -> None:
    for table in ("main", "100", "101"):
        host.ip("route", "flush", "table", table, "proto", TEST_PROTO, check=False)
    for prio in range(1000, 1000 + len(rules)):
        host.ip("rule", "del", "priority", str(prio), check=False)


def _kernel_devs(host: NDHost, addresses: List[str]) -> List[Optional[str]]:
    """The kernel's answer per address from ``ip route get`` (None: no route).

    A separate tool from our pyroute2 lookups, so the two cannot share a bug.
    """
    return [host.route_get_dev(address) for address in addresses]


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(routes=st.lists(st.tuples(prefixes(), ROUTE_KINDS, st.sampled_from(["main", "100"])),
                       max_size=8),
       rules=st.lists(st.tuples(prefixes(), st.sampled_from(["100", "101"])), max_size=2),
       expected=prefixes(),
       samples=st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=20,
                        max_size=20))
def test_property_ranges_match_kernel(module_host: NDHost, tmp_path_factory: Any,
                                      routes: List[Any], rules: List[Any],
                                      expected: ipaddress.IPv4Network,
                                      samples: List[int]) -> None:
    host = module_host
    _install(host, routes, rules)
    try:
        tmp = tmp_path_factory.mktemp("prop")
        result = run_check(host, tmp, [str(expected)])
        bad_nets = [ipaddress.ip_network(n) for b in shadowed(result, str(expected))
                    for n in b["cidrs"]]
        # Samples: random addresses in the CIDR plus every boundary our tables create.
        points = {int(expected.network_address) + s % expected.num_addresses for s in samples}
        for net, _, _ in routes + [(r[0], None, None) for r in rules]:
            for edge in (int(net.network_address) - 1, int(net.network_address),
                         int(net.broadcast_address), int(net.broadcast_address) + 1):
                if int(expected.network_address) <= edge <= int(expected.broadcast_address):
                    points.add(edge)
        addresses = [str(ipaddress.IPv4Address(p)) for p in sorted(points)]
        for address, dev in zip(addresses, _kernel_devs(host, addresses)):
            reported_bad = any(ipaddress.IPv4Address(address) in n for n in bad_nets)
            assert (dev != "eth0") == reported_bad, (address, dev, result["status"])
    finally:
        _flush(host, rules)


# --- property: apply-routes' verification agrees with the kernel ----------------------

PROBE = str(Path(__file__).with_name("edge_probe.py"))
GATEWAYS = {"eth0": ETH_GW, "ib0": "10.0.0.1"}


def verification_disagreements(host: NDHost, routes: List[Any], rules: List[Any],
                               wants: List[Any], samples: List[int],
                               fault: Optional[str] = None) -> List[Any]:
    """Install ``wants`` through the codec (``Kernel.install``) among ``routes`` and
    ``rules``; each verdict (in effect, or not) against the kernel's ``ip route get``.

    Where a route decides is its prefix minus every more-specific prefix, counted
    here from the test's own lists (a superset of the boundaries the tables show),
    so every address left is in the route's own region, and the kernel must send
    it out of the route's device exactly when the verdict says "in effect".
    Routes wholly covered by others have no such address and are not judged.
    """
    _install(host, routes, rules)
    try:
        request = {"install": [{"destination": str(net), "gateway": GATEWAYS[dev], "dev": dev}
                               for net, dev in wants]}
        proc = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, PROBE, "rtnl",
                               *(["--break", fault] if fault else [])],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        installed = json.loads(proc.stdout)["installed"]
        others = [net for net, _, _ in routes] + [net for net, _ in rules] + \
            [net for net, _ in wants]
        wrong = []
        for (net, dev), (status, error) in zip(wants, installed):
            if status not in ("created", "not-in-effect"):
                continue  # refused: the prefix is a route that is not ours
            inner = [o for o in others if o != net and o.subnet_of(net)]
            free = [a for a in (int(net.network_address) + s % net.num_addresses
                                for s in samples)
                    if not any(ipaddress.IPv4Address(a) in o for o in inner)]
            if not free:
                continue
            address = str(ipaddress.IPv4Address(free[0]))
            in_effect = host.route_get_dev(address) == dev
            if in_effect != (status == "created"):
                wrong.append((str(net), dev, address, status, error))
        return wrong
    finally:
        _flush(host, rules)
        host.ip("route", "flush", "proto", "214", check=False)


@st.composite
def verification_scenes(draw: Any) -> Any:
    """Random tables and rules, and routes to install: each one random, or near (around
    or inside) a prefix of the tables or rules, where holes and policy rules decide."""
    routes = draw(st.lists(st.tuples(prefixes(), ROUTE_KINDS,
                                     st.sampled_from(["main", "100"])), max_size=8))
    rules = draw(st.lists(st.tuples(prefixes(), st.sampled_from(["100", "101"])), max_size=3))
    if rules:  # table 100 holding a rule's own prefix: the rule then decides for what it covers
        routes += draw(st.lists(st.tuples(st.sampled_from([net for net, _ in rules]),
                                          ROUTE_KINDS, st.just("100")), max_size=2))
    anchors = [net for net, _, _ in routes] + [net for net, _ in rules]

    def near(base: ipaddress.IPv4Network) -> st.SearchStrategy[ipaddress.IPv4Network]:
        plens = st.integers(min_value=max(11, base.prefixlen - 4),
                            max_value=min(32, base.prefixlen + 4))
        offsets = st.integers(min_value=0, max_value=base.num_addresses - 1)
        return st.builds(lambda plen, offset: ipaddress.ip_network(
            (int(base.network_address) + offset, plen), strict=False), plens, offsets)

    where = st.one_of(prefixes(), *(near(a) for a in anchors)) if anchors else prefixes()
    wants = draw(st.lists(st.tuples(where, st.sampled_from(["eth0", "ib0"])), min_size=1,
                          max_size=4, unique_by=lambda w: w[0]))
    samples = draw(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=40,
                            max_size=40))
    return routes, rules, wants, samples


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scene=verification_scenes())
def test_property_verification_matches_kernel(module_host: NDHost, scene: Any) -> None:
    """Each route's own region (``own_region``) and its batched lookup decide "in effect"
    exactly as the kernel routes the rest of the route's prefix."""
    assert verification_disagreements(module_host, *scene) == []


def test_negative_control_verification_blind_to_holes_disagrees(module_host: NDHost) -> None:
    """A /16 via eth0 whose first /24 goes to ib0: blind to that hole, the verification
    probes inside it and calls a route that carries the rest "not in effect"."""
    net = ipaddress.ip_network
    routes = [(net("10.70.0.0/24"), "ib0", "main")]
    wants = [(net("10.70.0.0/16"), "eth0")]
    samples = list(range(0, 65536, 997))
    assert verification_disagreements(module_host, routes, [], wants, samples) == []
    assert verification_disagreements(module_host, routes, [], wants, samples,
                                      fault="own-region-no-holes") != []
