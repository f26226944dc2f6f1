"""The two kernel backends see and do exactly the same, in real namespaces.

The stdlib codec (what the boot units use) and pyroute2 (``--netns``, the guard,
azure-suggest) read the same namespace and install the same routes; the
results must be equal field by field: links, addresses, route and rule dumps,
the analysis tables, default routes, lookup answers (one at a time and batched),
install results with their error texts, and the main tables afterwards.
pyroute2 runs twice, inside the namespace and entering it by name
(``--netns``), so both ways in are covered.

The namespaces are a fixed one holding every shape the codec decodes
(multipath, RTA_VIA, tables above 255, link-local gateways, rule selectors,
every route type) and random tables from test_analysis_netns's hypothesis
generator.  Each backend is the other's oracle; the negative controls plant a
codec bug (a wrong or dropped attribute id) and show the comparison catches it.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns import ETH6_GW, ETH_GW, NDHost
from test_analysis_netns import ROUTE_KINDS, _flush, _install, _link_local, prefixes

from cloudinit_hostrouting.netlink import Kernel

PROBE = str(Path(__file__).with_name("edge_probe.py"))
WAYS = (("rtnl", True), ("pyroute2", True), ("pyroute2", False))  # (backend, inside the ns)


def probe(host: NDHost, backend: str, request: Dict[str, Any], inside: bool = True,
          fault: Optional[str] = None) -> Dict[str, Any]:
    argv = [sys.executable, PROBE, backend] + (["--break", fault] if fault else [])
    argv = ["ip", "netns", "exec", host.ns, *argv] if inside else [*argv, "--netns", host.ns]
    proc = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def flush_ours(host: NDHost) -> None:
    for family in ("-4", "-6"):
        host.ip(family, "route", "flush", "proto", "214", check=False)


def every_way(host: NDHost, request: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The snapshot through each backend, our routes removed after each install."""
    out = []
    for backend, inside in WAYS:
        out.append(probe(host, backend, request, inside))
        flush_ours(host)
    return out


def settle(host: NDHost) -> NDHost:
    """Wait (bounded) until IPv6 duplicate address detection is over in the namespace.

    The kernel adds a link-local address's local route only when DAD ends, a second
    or two after the link came up; snapshots taken before and after would differ.
    """
    deadline = time.monotonic() + 20
    while host.ip("-6", "addr", "show", "tentative").stdout.strip():
        assert time.monotonic() < deadline, "IPv6 addresses stayed tentative"
        time.sleep(0.1)
    return host


CODEC_ONLY = {"overruns", "dump_retries"}  # the codec's fault counters (test_rtnl_faults)


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    return sorted(k for k in (set(a) | set(b)) - CODEC_ONLY if a.get(k) != b.get(k))


def assert_same(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert not differences(a, b), {k: (a.get(k), b.get(k)) for k in differences(a, b)}


class Rich(NamedTuple):
    host: NDHost
    peer_ll: str  # the link-local address of eth0's peer, a gateway


@pytest.fixture(scope="module")
def rich() -> Iterator[Rich]:
    """One namespace holding every shape of route and rule the codec decodes."""
    host = settle(NDHost(ipv6=True))
    try:
        peer_ll = _link_local(host.peer, "p-eth0")
        for command in (
            "route add 10.200.0.0/16 nexthop via 10.1.0.1 dev eth0 weight 1 "
            "nexthop via 10.0.0.1 dev ib0 weight 3",
            "-6 route add fd00:200::/48 nexthop via fd00:1::1 dev eth0 "
            "nexthop via fd00:a::1 dev ib0",
            "route add 10.201.0.0/16 dev ib0 table 1000",
            "route add throw 10.207.0.0/16 table 1000",
            "rule add to 10.201.0.0/16 lookup 1000 priority 50",
            "rule add from 10.1.0.0/24 fwmark 7 iif eth0 lookup 1000 priority 51",
            "rule add to 10.202.0.0/16 oif ib0 tos 0x10 blackhole priority 52",
            "-6 rule add to fd00:201::/48 lookup 1000 priority 50",
            "-6 route add fd00:201::/48 dev ib0 table 1000",
            f"route add 10.203.0.0/16 via inet6 {peer_ll} dev eth0",
            f"-6 route add fd00:202::/48 via {peer_ll} dev eth0 metric 77",
            "route add blackhole 10.204.0.0/16 proto static",
            "route add unreachable 10.205.0.0/16 proto dhcp",
            "route add prohibit 10.206.0.0/16 metric 5",
            "route add 10.208.0.0/16 via 10.1.0.1 dev eth0 tos 0x10",
            "route add 10.209.0.0/16 via 10.1.0.1 dev eth0 proto dhcp metric 100",
        ):
            host.ip(*command.split())
        yield Rich(host, peer_ll)
    finally:
        host.close()


RICH_ANSWERS = ["10.0.5.1", "10.1.0.4", "10.1.0.1", "127.0.0.1", "10.200.1.1", "10.201.1.1",
                "10.202.1.1", "10.203.1.1", "10.204.1.1", "10.205.1.1", "10.206.1.1",
                "10.207.1.1", "10.96.0.1", "fd00:a::1", "fd00:1::4", "::1", "fd00:200::1",
                "fd00:201::1", "fd00:202::1", "fd00:9::1"]


def rich_wants(peer_ll: str) -> List[Dict[str, Any]]:
    return [
        {"destination": "10.0.5.0/24", "gateway": ETH_GW, "dev": "eth0"},
        {"destination": "10.0.0.0/16", "gateway": ETH_GW, "dev": "eth0"},
        {"destination": "10.60.0.0/16", "gateway": "10.9.9.9", "dev": "eth0"},
        {"destination": "10.61.0.0/16", "gateway": ETH_GW, "dev": "nosuch0"},
        {"destination": "fd00:a:0:5::/64", "gateway": peer_ll, "dev": "eth0"},
        {"destination": "10.62.0.0/16", "gateway": peer_ll, "dev": "eth0"},
        {"destination": "10.201.0.0/24", "gateway": ETH_GW, "dev": "eth0", "metric": 10},
        {"destination": "fd00:1::/64", "gateway": ETH6_GW, "dev": "eth0"},
        {"destination": "10.204.0.0/16", "gateway": ETH_GW, "dev": "eth0"},
        {"destination": "10.209.0.0/16", "gateway": ETH_GW, "dev": "eth0", "metric": 100},
    ]


def test_backends_agree_on_every_shape(rich: Rich) -> None:
    request = {"answers": RICH_ANSWERS, "many": RICH_ANSWERS,
               "install": rich_wants(rich.peer_ll)}
    codec, inside, by_name = every_way(rich.host, request)
    assert_same(codec, inside)
    assert_same(codec, by_name)
    # Batched lookups (get_many) answer as single ones do, on every kind of answer.
    assert codec["many"] == codec["answers"]
    assert len({tuple(a) for a in codec["many"]}) >= 6
    # Not equal by being empty: the shapes are really there, decoded as ip(8) says.
    assert [s for s, _ in codec["installed"]] == [
        "created", "refused", "failed", "failed", "created", "created", "not-in-effect",
        "refused", "refused", "refused"]
    assert codec["installed"][2][1] == ("gateway 10.9.9.9 is not reachable on that interface "
                                        "(no connected route)")
    multipath = next(r for r in codec["routes4"] if r[2] == "10.200.0.0")
    names = {link[0]: link[1] for link in codec["links"]}
    assert [(names[oif], gw, weight) for oif, gw, weight in multipath[12]] == \
        [(h["dev"], h["gateway"], h["weight"]) for h in rich_json(rich.host, "10.200.0.0/16")]
    assert next(r for r in codec["routes4"] if r[2] == "10.201.0.0")[1] == 1000
    via = next(r for r in codec["routes4"] if r[2] == "10.203.0.0")
    assert via[10] == rich.peer_ll
    rules = {r[1]: r for r in codec["rules4"]}
    assert rules[51][6:] == ["10.1.0.0", 24, 0, 7, "eth0", None]
    assert rules[52][4:6] == ["10.202.0.0", 16] and rules[52][8] == 0x10
    assert rules[52][11] == "ib0"


def test_tables_share_known_networks_and_change_nothing(rich: Rich) -> None:
    """Kernel.tables with networks built already (the config's) reuses exactly those of a
    route's prefix and family, and reads the tables as it does without them."""
    net = ipaddress.ip_network
    known = [net("10.200.0.0/16"), net("10.201.0.0/16"), net("10.204.0.0/16"),
             net("fd00:200::/48"), net("10.250.0.0/16")]  # IPv6, and a prefix not there
    with Kernel(rich.host.ns) as kernel:
        plain, shared = kernel.tables(4), kernel.tables(4, known)
    assert [r.describe() for r in shared.routes] == [r.describe() for r in plain.routes]
    assert [r.describe() for r in shared.rules] == [r.describe() for r in plain.rules]
    reused = {str(r.network) for r in shared.routes if any(r.network is k for k in known)}
    assert reused == {"10.200.0.0/16", "10.201.0.0/16", "10.204.0.0/16"}


def rich_json(host: NDHost, prefix: str) -> List[Dict[str, Any]]:
    """ip(8)'s own view of a multipath route's hops: a separate decoder to hold ours to."""
    [route] = json.loads(host.ip("-j", "route", "show", prefix).stdout)
    return [{"dev": h["dev"], "gateway": h["gateway"], "weight": h.get("weight", 1)}
            for h in route["nexthops"]]


@pytest.mark.parametrize("fault", ["route-oif-id", "route-table-id", "rule-dst-dropped",
                                   "hop-gateway-dropped", "lookups-shifted"])
def test_negative_control_a_codec_bug_is_caught(rich: Rich, fault: str) -> None:
    """A planted codec bug makes the snapshots differ: the comparison can fail."""
    request = {"answers": RICH_ANSWERS, "many": RICH_ANSWERS}
    good = probe(rich.host, "pyroute2", request)
    assert_same(good, probe(rich.host, "rtnl", request))
    assert differences(good, probe(rich.host, "rtnl", request, fault=fault)) != []


# --- random tables: the generator of the analysis property test ------------------

@pytest.fixture(scope="module")
def prop_host() -> Iterator[NDHost]:
    h = settle(NDHost())
    yield h
    h.close()


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(routes=st.lists(st.tuples(prefixes(), ROUTE_KINDS, st.sampled_from(["main", "100"])),
                       max_size=8),
       rules=st.lists(st.tuples(prefixes(), st.sampled_from(["100", "101"])), max_size=2),
       wants=st.lists(st.tuples(prefixes(), st.sampled_from(["eth0", "ib0"])), max_size=4,
                      unique_by=lambda w: w[0]),
       samples=st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=10,
                        max_size=10))
def test_backends_agree_on_random_tables(prop_host: NDHost, routes: List[Any],
                                         rules: List[Any], wants: List[Any],
                                         samples: List[int]) -> None:
    host = prop_host
    _install(host, routes, rules)
    try:
        gateways = {"eth0": ETH_GW, "ib0": "10.0.0.1"}
        answers = [str(ipaddress.IPv4Address(s)) for s in samples] + \
            [str(net.network_address + 1) for net, _, _ in routes]
        request = {
            "answers": answers,
            "many": answers,
            "install": [{"destination": str(net), "gateway": gateways[dev], "dev": dev}
                        for net, dev in wants],
        }
        codec, inside, by_name = every_way(host, request)
        assert_same(codec, inside)
        assert_same(codec, by_name)
    finally:
        _flush(host, rules)
        flush_ours(host)
