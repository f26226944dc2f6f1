"""The stdlib codec under the faults that raw rtnetlink really has, against the real kernel.

Each test runs the codec inside a namespace (tests/edge_probe.py under ``ip netns
exec``) and checks what it reports against the kernel's own state, read with
ip(8), a separate decoder:

* a tiny receive buffer makes the kernel drop ACKs (ENOBUFS) while 1,000 routes
  are installed: every route must still be installed and every failure named;
* failing routes in the middle of a batch, with error ACKs that carry only the
  request's header, all of it, or extended-ACK attributes as well;
* dumps the kernel flags NLM_F_DUMP_INTR, provoked for real by changing
  addresses while 5,000 of them are dumped;
* multipath routes of both families in a dump;
* batched lookups (``get_many``) with the same tiny receive buffer: every
  answer must be the kernel's, asked one at a time and by ip(8).

Negative controls run the same with the codec's handling taken out and show
the assertions then fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest
from netns import ETH_GW, NDHost

PROBE = str(Path(__file__).with_name("edge_probe.py"))
UNREACHABLE = "gateway 10.9.9.9 is not reachable on that interface (no connected route)"


pytestmark = pytest.mark.ndhost(ipv6=True)  # the host fixture (conftest.py) is dual-stack


def run_codec(host: NDHost, request: Dict[str, Any], *extra: str,
              timeout: float = 120) -> Dict[str, Any]:
    proc = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, PROBE, "rtnl",
                           *extra], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ours_in_kernel(host: NDHost) -> Set[str]:
    return {r["dst"] for r in json.loads(host.ip("-j", "route", "show", "proto", "214").stdout)}


def many(count: int, bad: Dict[int, Dict[str, str]]) -> List[Dict[str, Any]]:
    """``count`` host routes via eth0; ``bad`` overrides some of them by index."""
    return [dict({"destination": f"10.128.{i // 256}.{i % 256}/32", "gateway": ETH_GW,
                  "dev": "eth0"}, **bad.get(i, {})) for i in range(count)]


UNREACHABLE_EVERY_97 = {i: {"gateway": "10.9.9.9"} for i in range(13, 1000, 97)}


def test_enobufs_with_a_tiny_receive_buffer_loses_no_route_and_no_error(
        host: NDHost) -> None:
    wants = many(1000, UNREACHABLE_EVERY_97)
    out = run_codec(host, {"install": wants}, "--rcvbuf", "1")
    assert out["overruns"] > 0, "the kernel dropped no ACK: the fault was not provoked"
    expected = [("failed", UNREACHABLE) if i in UNREACHABLE_EVERY_97 else ("created", None)
                for i in range(1000)]
    assert [tuple(r) for r in out["installed"]] == expected
    assert ours_in_kernel(host) == {w["destination"].split("/")[0] for i, w in enumerate(wants)
                                    if i not in UNREACHABLE_EVERY_97}


def test_negative_control_without_resending_lost_acks_reports_are_wrong(
        host: NDHost) -> None:
    """The same run with the resend taken out: the report no longer matches the kernel."""
    out = run_codec(host, {"install": many(1000, UNREACHABLE_EVERY_97)}, "--rcvbuf", "1",
                    "--break", "no-resend")
    assert out["overruns"] > 0
    reported = sum(status == "created" for status, _ in out["installed"])
    assert reported != len(ours_in_kernel(host))


@pytest.mark.parametrize("acks", ["capped", "full", "extended"])
def test_failures_in_the_middle_of_batches_are_each_named(host: NDHost, acks: str) -> None:
    """Distinct gateways give distinct texts, so a shifted ACK mapping would show."""
    gateways = {127: "10.9.9.9", 128: "10.9.9.8", 150: "10.9.9.7", 298: "10.9.9.6"}
    out = run_codec(host, {"install": many(300, {i: {"gateway": gw}
                                                 for i, gw in gateways.items()})},
                    "--acks", acks)
    errors = {i: tuple(r) for i, r in enumerate(out["installed"]) if r[0] != "created"}
    assert errors == {i: ("failed", UNREACHABLE.replace("10.9.9.9", gw))
                      for i, gw in gateways.items()}
    assert len(ours_in_kernel(host)) == 296


def lookup_host(host: NDHost) -> List[str]:
    """Give ``host`` routes of every answer a lookup can have; 1,200 addresses across them.

    Blackhole, unreachable and prohibit come back as errors, the rest as routes
    via eth0, ib0 or lo (local), in both families, interleaved so that every
    batch mixes them.
    """
    for command in ("route add blackhole 10.90.0.0/24", "route add unreachable 10.91.0.0/24",
                    "route add prohibit 10.92.0.0/24",
                    "route add 10.93.0.0/24 via 10.0.0.1 dev ib0",
                    "-6 route add blackhole fd00:90::/48"):
        host.ip(*command.split())
    kinds = ["10.90.0.{}", "10.91.0.{}", "10.92.0.{}", "10.93.0.{}", "10.1.0.{}", "10.0.5.{}",
             "10.128.3.{}", "fd00:90::{:x}", "fd00:1::{:x}", "fd00:a::{:x}"]
    addresses = [kinds[i % len(kinds)].format(i // len(kinds) + 1) for i in range(1200)]
    return [*addresses, "10.1.0.4", "127.0.0.1", "fd00:1::4"]  # local answers (dev lo)


def ip_route_get(host: NDHost, address: str) -> Optional[str]:
    """The device ip(8), a separate decoder, names for ``address``; None for an error."""
    proc = host.ip("-j", "route", "get", address, check=False)
    return json.loads(proc.stdout)[0]["dev"] if proc.returncode == 0 else None


def test_enobufs_with_many_lookups_gives_every_answer_right(host: NDHost) -> None:
    """Batched lookups with a tiny receive buffer: the kernel drops most answers, and
    each one must still be what the kernel says when asked one at a time."""
    addresses = lookup_host(host)
    out = run_codec(host, {"answers": addresses, "many": addresses}, "--rcvbuf", "1")
    assert out["overruns"] > 0, "the kernel dropped no answer: the fault was not provoked"
    assert out["many"] == out["answers"]
    # Not equal by being uniform: every kind of answer is among them ...
    assert {tuple(a) for a in out["many"]} >= {
        ("eth0", "unicast"), ("ib0", "unicast"), ("lo", "local"), (None, "blackhole"),
        (None, "unreachable"), (None, "prohibit")}
    # ... and ip(8) agrees, on a sample from every batch and every kind.
    for i in range(0, len(addresses), 37):
        assert out["many"][i][0] == ip_route_get(host, addresses[i]), addresses[i]


def test_negative_control_lookups_not_asked_again_are_wrong(host: NDHost) -> None:
    """The same run with the one-at-a-time finish taken out: the answers no longer match."""
    addresses = lookup_host(host)
    out = run_codec(host, {"answers": addresses, "many": addresses}, "--rcvbuf", "1",
                    "--break", "no-lookup-resend")
    assert out["overruns"] > 0
    assert out["many"] != out["answers"]


def test_lookups_without_faults_are_batched_and_match(host: NDHost) -> None:
    """With the default receive buffer nothing is lost, and the answers are the same."""
    addresses = lookup_host(host)
    out = run_codec(host, {"answers": addresses, "many": addresses})
    assert out["many"] == out["answers"]
    assert out["overruns"] == 0


def dumps_under_churn(host: NDHost, fault: Optional[str] = None) -> Dict[str, Any]:
    """Dump 5,000 addresses again and again while another process changes one.

    The churn is finite (150 changes, a second or two): long enough to interrupt dumps,
    and then it stops, so dumps succeed afterwards however slow the machine is (under
    endless churn a loaded machine saw every dump interrupted five times in a row)."""
    batch = "\n".join(f"addr add 10.77.{i // 250}.{i % 250 + 1}/32 dev eth0"
                      for i in range(5000))
    subprocess.run(["ip", "-n", host.ns, "-batch", "-"], input=batch, text=True, check=True,
                   timeout=60)
    churn = subprocess.Popen(["ip", "netns", "exec", host.ns, "sh", "-c",
                              "for i in $(seq 150); do ip addr del 10.77.0.1/32 dev eth0; "
                              "ip addr add 10.77.0.1/32 dev eth0; sleep 0.01; done"])
    script = (
        "import socket, sys, json\n"
        "from cloudinit_hostrouting import rtnl\n"
        "if sys.argv[1:]: rtnl.NLM_F_DUMP_INTR = 0\n"
        "r, seen, failed = rtnl.Rtnl(), [], 0\n"
        "for _ in range(3000):\n"
        "    try: seen.append([a.address for a in r.addresses(socket.AF_INET)])\n"
        "    except OSError: failed += 1\n"
        "    if len(seen) > 3 and (r.dump_retries or _ >= 299): break\n"
        "print(json.dumps({'retries': r.dump_retries, 'failed': failed, 'dumps': seen}))\n")
    try:
        proc = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", script,
                               *([fault] if fault else [])], capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        churn.kill()
        churn.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_interrupted_dumps_are_read_again(host: NDHost) -> None:
    result = dumps_under_churn(host)
    assert result["retries"] > 0, "no dump was interrupted: the fault was not provoked"
    assert result["dumps"], "no dump succeeded"
    base = {f"10.77.{i // 250}.{i % 250 + 1}" for i in range(5000)} - {"10.77.0.1"}
    for dump in result["dumps"]:
        assert base <= set(dump) and len(dump) == len(set(dump))


def test_negative_control_a_codec_ignoring_dump_intr_never_retries(host: NDHost) -> None:
    """Under the same churn, a codec blind to the flag retries nothing: the test sees it."""
    assert dumps_under_churn(host, "ignore")["retries"] == 0


def test_multipath_routes_in_a_dump_match_ip(host: NDHost) -> None:
    host.ip("route", "add", "10.200.0.0/16", "nexthop", "via", ETH_GW, "dev", "eth0",
            "weight", "2", "nexthop", "via", "10.0.0.1", "dev", "ib0", "weight", "5")
    host.ip("-6", "route", "add", "fd00:200::/48", "nexthop", "via", "fd00:1::1", "dev",
            "eth0", "nexthop", "via", "fd00:a::1", "dev", "ib0")
    out = run_codec(host, {})
    names = {index: name for index, name, _, _ in out["links"]}
    for family, prefix, key in (("-4", "10.200.0.0/16", "routes4"),
                                ("-6", "fd00:200::/48", "routes6")):
        [theirs] = json.loads(host.ip("-j", family, "route", "show", prefix).stdout)
        dst = prefix.split("/")[0]
        [ours] = [r for r in out[key] if r[2] == dst and r[1] == 254]
        assert [(names[oif], gw, weight) for oif, gw, weight in ours[12]] == [
            (h["dev"], h["gateway"], h.get("weight", 1)) for h in theirs["nexthops"]]
        assert len(ours[12]) == 2
