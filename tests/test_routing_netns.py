"""apply-routes and check-overlap against the real kernel, in ND-isr-shaped namespaces.

Each test builds its own namespaces (tests/netns.py): eth0 with the default
route, ib0 with a /16 whose connected route shadows the cluster CIDR.  The CLI
runs as the units run it (``python -m cloudinit_hostrouting ...``), inside the
namespace via ``ip netns exec``; assertions read the kernel's own answers
(``ip -4 route get``) and the files the check wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
import yaml
from netns import CLUSTER_CIDR, ETH_GW, IB_PEER_PROBE, NDHost, sh

SERVICE_CIDR = "10.96.0.0/12"
EDGE_PROBE = str(Path(__file__).with_name("edge_probe.py"))


def write_config(tmp_path: Path, routes: List[Dict[str, Any]], mode: str = "STRICT",
                 expected: Sequence[str] = (CLUSTER_CIDR, SERVICE_CIDR)) -> str:
    path = tmp_path / "host-routing.yaml"
    body: Dict[str, Any] = {"route_overlap": {"mode": mode, "expected_cidrs": list(expected)}}
    if routes:
        body["static_routes"] = {"enabled": True, "routes": routes}
    path.write_text(yaml.safe_dump({"host_routing": body}))
    return str(path)


def check(host: NDHost, cfg: str, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return host.run_cli("check-overlap", "--config", cfg, "--run-dir", str(run_dir), *extra)


def test_shadow_exists_before_fix(host: NDHost) -> None:
    """Control: the namespace really reproduces ND-isr, or every other test is moot."""
    assert host.route_get_dev("10.0.5.1") == "ib0"
    assert host.route_get_dev("10.96.0.1") == "eth0"


def test_apply_fixes_cluster_cidr_and_keeps_ib_peers(host: NDHost, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR, "dev": "eth0",
                                   "gateway": ETH_GW, "metric": 100}])
    proc = host.run_cli("apply-routes", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 routes installed" in proc.stdout
    assert host.route_get_dev("10.0.5.1") == "eth0"
    assert host.route_get_dev("10.0.5.254") == "eth0"
    assert host.route_get_dev(IB_PEER_PROBE) == "ib0"
    # Tagged with our protocol, so it can be told from everyone else's routes.
    assert host.routes("proto", "214") == [{"dst": CLUSTER_CIDR, "gateway": ETH_GW,
                                            "dev": "eth0", "metric": 100, "flags": []}]


def test_warn_reports_but_passes(host: NDHost, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = check(host, write_config(tmp_path, [], mode="warn"), run_dir)
    assert proc.returncode == 0
    detected = (run_dir / "route-overlap.detected").read_text().splitlines()
    assert detected == ["OVERLAP: expected CIDR 10.0.5.0/24 (probe 10.0.5.1) routes via ib0, "
                        "expected eth0"]
    assert not (run_dir / "route-overlap.ok").exists()
    assert "Action: add more-specific static routes" in proc.stdout
    status = json.loads((run_dir / "status.json").read_text())
    assert status["ok"] is False and status["mode"] == "WARN"
    by_cidr = {c["cidr"]: c for c in status["cidrs"]}
    assert by_cidr[CLUSTER_CIDR]["interface"] == "ib0"
    assert by_cidr[CLUSTER_CIDR]["status"] == "overlap"
    assert by_cidr[SERVICE_CIDR]["interface"] == "eth0"
    assert by_cidr[SERVICE_CIDR]["status"] == "ok"


def test_strict_fails_then_passes_after_apply(host: NDHost, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR}])
    assert check(host, cfg, run_dir).returncode == 1
    assert (run_dir / "route-overlap.detected").exists()

    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    proc = check(host, cfg, run_dir, "--json")
    assert proc.returncode == 0, proc.stdout
    assert (run_dir / "route-overlap.ok").exists()
    assert not (run_dir / "route-overlap.detected").exists()  # stale marker cleared
    printed = json.loads(proc.stdout)
    written = json.loads((run_dir / "status.json").read_text())
    assert printed["cidrs"] == written["cidrs"]
    assert all(c["interface"] == "eth0" for c in written["cidrs"])


def test_auto_dev_and_gateway_wait_for_late_default_route(tmp_path: Path) -> None:
    """DHCP late: the default route appears seconds after the unit started."""
    host = NDHost(default_route=False)
    try:
        cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR}])
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, sys.executable, "-m", "cloudinit_hostrouting",
             "apply-routes", "--config", cfg, "--wait", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        try:
            time.sleep(5)
            assert proc.poll() is None, "apply-routes gave up before the default route came"
            host.add_default()
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert host.routes(CLUSTER_CIDR)[0]["gateway"] == ETH_GW
        assert host.route_get_dev("10.0.5.1") == "eth0"
    finally:
        host.close()


def test_no_default_route_is_a_clear_failure(tmp_path: Path) -> None:
    host = NDHost(default_route=False)
    try:
        cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR}], mode="WARN")
        proc = host.run_cli("apply-routes", "--config", cfg, "--wait", "1")
        assert proc.returncode == 1
        assert "FAILED: 10.0.5.0/24: no IPv4 default route appeared" in proc.stderr
        assert "Traceback" not in proc.stderr

        run_dir = tmp_path / "run"
        assert check(host, cfg, run_dir, "--wait", "1").returncode == 0  # WARN
        assert (run_dir / "route-overlap.detected").read_text() == "no-default-route\n"
        strict = write_config(tmp_path, [], mode="STRICT")
        assert check(host, strict, run_dir, "--wait", "1").returncode == 1
    finally:
        host.close()


def test_partial_failure_names_each_route_and_installs_the_rest(host: NDHost,
                                                                tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [
        {"destination": "10.0.6.0/24", "gateway": "10.9.9.9", "dev": "eth0"},
        {"destination": CLUSTER_CIDR, "dev": "eth0"},
        {"destination": "10.0.7.0/24", "gateway": ETH_GW, "dev": "ib9"},
    ])
    proc = host.run_cli("apply-routes", "--config", cfg, "--wait", "1")
    assert proc.returncode == 1
    assert ("FAILED: 10.0.6.0/24: gateway 10.9.9.9 is not reachable on that interface"
            in proc.stderr)
    assert "FAILED: 10.0.7.0/24: interface ib9 does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "1 of 3 routes installed, 2 failed" in proc.stdout
    assert host.route_get_dev("10.0.5.1") == "eth0"
    assert host.routes("10.0.6.0/24") == [] and host.routes("10.0.7.0/24") == []


def test_reapply_is_idempotent_and_foreign_routes_untouched(host: NDHost,
                                                             tmp_path: Path) -> None:
    host.ip("route", "add", "10.50.0.0/16", "via", ETH_GW, "dev", "eth0", "proto", "static")
    host.ip("route", "add", "10.0.9.0/24", "dev", "ib0", "metric", "7")
    before_foreign = host.routes("proto", "static") + host.routes("10.0.9.0/24")
    cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR},
                                  {"destination": "10.0.8.0/24", "metric": 50}])
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    first = host.routes()
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    assert host.routes() == first
    assert host.routes("proto", "static") + host.routes("10.0.9.0/24") == before_foreign


def test_unreachable_route_is_reported_as_no_route(host: NDHost, tmp_path: Path) -> None:
    host.ip("route", "add", "unreachable", "10.96.0.0/12")
    run_dir = tmp_path / "run"
    proc = check(host, write_config(tmp_path, [], mode="WARN"), run_dir)
    assert proc.returncode == 0
    lines = (run_dir / "route-overlap.detected").read_text().splitlines()
    assert ("NO-ROUTE: expected CIDR 10.96.0.0/12 (probe 10.96.0.1) has no IPv4 route; "
            "expected via eth0") in lines


def test_invalid_config_exits_2_without_touching_the_kernel(host: NDHost,
                                                           tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("host_routing:\n  static_routes:\n    enabled: true\n    routes:\n"
                   "      - destination: 10.0.5.0/24\n        gateway: not-an-ip\n")
    before = host.routes()
    proc = host.run_cli("apply-routes", "--config", str(bad))
    assert proc.returncode == 2
    assert "host_routing.static_routes.routes[0].gateway" in proc.stderr
    assert "'not-an-ip'" in proc.stderr
    assert host.routes() == before


def test_pyroute2_version_matches_tox_env() -> None:
    """The suite is meant to run under both pyroute2 lines; prove which one this is."""
    from importlib.metadata import version

    want = os.environ.get("HR_EXPECT_PYROUTE2")
    if want is None:
        pytest.skip("HR_EXPECT_PYROUTE2 not set: not running under tox")
    assert version("pyroute2").startswith(want)


# --- never touch a route that is not ours -------------------------------------------

def main_table(host: NDHost) -> List[dict]:
    return host.routes("table", "main") + json.loads(
        host.ip("-j", "-6", "route", "show", "table", "main").stdout)


def foreign(routes: List[dict]) -> List[dict]:
    return [r for r in routes if r.get("protocol") not in ("214", "215")]


def test_refuses_to_replace_the_ib_connected_route_and_installs_the_rest(
        host: NDHost, tmp_path: Path) -> None:
    before = foreign(main_table(host))
    cfg = write_config(tmp_path, [{"destination": "10.0.0.0/16", "dev": "eth0"},
                                  {"destination": CLUSTER_CIDR, "dev": "eth0"}])
    proc = host.run_cli("apply-routes", "--config", cfg)
    assert proc.returncode == 1
    assert ("REFUSED: 10.0.0.0/16 would replace 10.0.0.0/16 dev ib0 proto kernel scope link "
            "(not ours): route only the ranges that must leave via eth0, e.g. the cluster "
            "CIDR, or its halves 10.0.0.0/17 and 10.0.128.0/17\n") in proc.stderr
    assert "1 of 2 routes installed, 1 refused" in proc.stdout
    assert foreign(main_table(host)) == before
    assert host.route_get_dev(IB_PEER_PROBE) == "ib0"  # IPoIB still works
    assert host.route_get_dev("10.0.5.1") == "eth0"  # the other route went in


@pytest.mark.parametrize("setup, route, theirs", [
    ([], {"destination": "10.1.0.0/24"}, "10.1.0.0/24 dev eth0 proto kernel scope link"),
    (["route add 10.50.0.0/16 via 10.1.0.1 dev eth0 proto static"],
     {"destination": "10.50.0.0/16", "dev": "ib0", "gateway": "10.0.0.1"},
     "10.50.0.0/16 via 10.1.0.1 dev eth0 proto static"),
    (["-6 route add fd00:77::/48 via fd00:1::1 dev eth0 proto dhcp"],
     {"destination": "fd00:77::/48", "dev": "ib0", "gateway": "fd00:a::1"},
     "fd00:77::/48 via fd00:1::1 dev eth0 proto dhcp metric 1024"),
])
def test_refuses_every_foreign_route_with_the_same_key(
        tmp_path: Path, setup: List[str], route: Dict[str, Any], theirs: str) -> None:
    """Connected, static and (IPv6, where no EXCL would append an ECMP sibling) DHCP."""
    host = NDHost(ipv6=True)
    try:
        for command in setup:
            host.ip(*command.split())
        before = foreign(main_table(host))
        proc = host.run_cli("apply-routes", "--config", write_config(tmp_path, [route]))
        assert proc.returncode == 1
        assert f"REFUSED: {route['destination']} would replace {theirs} (not ours)" \
            in proc.stderr
        assert foreign(main_table(host)) == before
        assert main_table(host) == before  # nothing of ours went in either
    finally:
        host.close()


@pytest.mark.parametrize("metric, why", [
    (50, "10.50.0.0/16 metric 50 would silently disable 10.50.0.0/16 via 10.1.0.1 dev eth0 "
         "proto static metric 100 (not ours), which has the same prefix"),
    (200, "10.50.0.0/16 would never take effect: 10.50.0.0/16 via 10.1.0.1 dev eth0 proto "
          "static metric 100 (not ours) has the same prefix and a lower metric"),
])
def test_same_prefix_as_a_foreign_route_is_refused_whatever_the_metric(
        host: NDHost, tmp_path: Path, metric: int, why: str) -> None:
    """The lead's rule: a lower metric would disable their route, a higher one never win."""
    host.ip("route", "add", "10.50.0.0/16", "via", ETH_GW, "dev", "eth0", "proto", "static",
            "metric", "100")
    before = foreign(main_table(host))
    cfg = write_config(tmp_path, [{"destination": "10.50.0.0/16", "metric": metric}])
    proc = host.run_cli("apply-routes", "--config", cfg)
    assert proc.returncode == 1
    assert f"REFUSED: {why}: route only the ranges that must leave via eth0" in proc.stderr
    assert main_table(host) == before


def run_in(host: NDHost, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, *argv],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_default_routes_of_both_families_are_never_replaced() -> None:
    """Through the install operation itself, whatever the config layer lets through."""
    dual = NDHost(ipv6=True)
    try:
        before = main_table(dual)
        request = {"install": [
            {"destination": "0.0.0.0/0", "gateway": "10.0.0.1", "dev": "ib0"},
            {"destination": "::/0", "gateway": "fd00:a::1", "dev": "ib0"}]}
        proc = run_in(dual, EDGE_PROBE, "rtnl", stdin=json.dumps(request))
        installed = json.loads(proc.stdout)["installed"]
        assert [s for s, _ in installed] == ["refused", "refused"]
        assert installed[0][1].startswith("0.0.0.0/0 would replace 0.0.0.0/0 via 10.1.0.1 "
                                          "dev eth0 proto boot (not ours)")
        assert installed[1][1].startswith("::/0 would replace ::/0 via fd00:1::1 dev eth0 "
                                          "proto boot metric 1024 (not ours)")
        assert main_table(dual) == before
    finally:
        dual.close()


def test_our_own_route_is_replaced_or_left_alone(host: NDHost, tmp_path: Path) -> None:
    first = write_config(tmp_path, [{"destination": CLUSTER_CIDR, "gateway": ETH_GW}])
    assert host.run_cli("apply-routes", "--config", first).returncode == 0
    again = host.run_cli("apply-routes", "--config", first, "-v")
    assert "unchanged: 10.0.5.0/24 via 10.1.0.1 dev eth0" in again.stdout
    moved = write_config(tmp_path, [{"destination": CLUSTER_CIDR, "gateway": "10.1.0.2"}])
    proc = host.run_cli("apply-routes", "--config", moved, "-v")
    assert proc.returncode == 0, proc.stderr
    assert host.routes("proto", "214") == [{"dst": CLUSTER_CIDR, "gateway": "10.1.0.2",
                                            "dev": "eth0", "flags": []}]


@pytest.mark.parametrize("setup, route, culprit", [
    (["route add 10.96.8.0/24 dev ib0 table 100",
      "rule add to 10.96.8.0/24 lookup 100 priority 100"],
     "10.96.8.0/24", "does not take effect: 10.96.8.1 goes via ib0 because of: "
                     "10.96.8.0/24 dev ib0 table 100 proto boot scope link"),
    ([], "10.1.0.4/32", "does not take effect: 10.1.0.4 goes to local because of: "
                        "local 10.1.0.4/32 dev eth0 table 255 proto kernel"),
    (["route add 10.0.5.0/25 dev ib0", "route add 10.0.5.128/25 dev ib0"],
     CLUSTER_CIDR, "never takes effect: more-specific routes cover all of it, e.g. "
                   "10.0.5.0/25 dev ib0 proto boot scope link and 1 more"),
])
def test_a_route_that_cannot_take_effect_is_reported_and_kept(
        host: NDHost, tmp_path: Path, setup: List[str], route: str, culprit: str) -> None:
    """Apply, then verify: the kernel's answer for the route's own region names the culprit."""
    for command in setup:
        host.ip(*command.split())
    proc = host.run_cli("apply-routes", "--config",
                        write_config(tmp_path, [{"destination": route}]))
    assert proc.returncode == 1
    assert f"NOT IN EFFECT: {route} via 10.1.0.1 dev eth0 is installed but {culprit}\n" \
        in proc.stderr
    assert "1 of 1 routes installed, 1 not in effect" in proc.stdout
    assert [r["dst"] for r in host.routes("proto", "214")] == [route.replace("/32", "")]


def test_a_foreign_route_that_races_in_is_reported_not_replaced(host: NDHost) -> None:
    """A route appears between the dump and the create: NLM_F_EXCL makes the kernel refuse.

    The race window is microseconds wide, so the test makes the codec's first
    dump stale instead (the only thing faked): the foreign route is really there.
    """
    host.ip("route", "add", "10.70.0.0/16", "via", ETH_GW, "dev", "eth0", "proto", "static")
    script = (
        "import ipaddress, json\n"
        "from cloudinit_hostrouting.netlink import Kernel, Want\n"
        "k = Kernel()\n"
        "real, calls = k.edge.routes, []\n"
        "def stale(family):\n"
        "    calls.append(family)\n"
        "    return [r for r in real(family) if len(calls) > 1 or r.dst != '10.70.0.0']\n"
        "k.edge.routes = stale\n"
        "want = Want(ipaddress.ip_network('10.70.0.0/16'), '10.0.0.1', k.ifindex('ib0'),"
        " 'ib0', None)\n"
        "print(json.dumps(k.install([want])))\n")
    proc = run_in(host, "-c", script)
    [(status, error)] = json.loads(proc.stdout)
    assert status == "refused"
    assert error == ("10.70.0.0/16 collides with 10.70.0.0/16 via 10.1.0.1 dev eth0 proto static "
                     "(not ours), which appeared while installing; it was left as it is")
    assert host.routes("10.70.0.0/16")[0]["gateway"] == ETH_GW


def test_the_guard_restores_nothing_over_a_foreign_route(host: NDHost, tmp_path: Path) -> None:
    """The guard's restore goes through the same install: a foreign route keeps our key."""
    from test_guard_netns import GuardProcess, wait_for
    from test_guard_netns import write_config as guard_config

    cfg = guard_config(tmp_path, auto=False)
    assert host.run_cli("apply-routes", "--config", cfg).returncode == 0
    guard = GuardProcess(host, cfg, tmp_path / "run")
    try:
        # Another daemon takes the key over in one step: our tagged copy is gone.
        host.ip("route", "replace", CLUSTER_CIDR, "via", "10.0.0.1", "dev", "ib0",
                "proto", "static")
        wait_for(lambda: any(
            f"guard: cannot restore {CLUSTER_CIDR}: {CLUSTER_CIDR} would replace {CLUSTER_CIDR} "
            "via 10.0.0.1 dev ib0 proto static (not ours)" in ln for ln in guard.lines),
            "refusal logged")
        assert host.routes(CLUSTER_CIDR) == [{"dst": CLUSTER_CIDR, "gateway": "10.0.0.1",
                                              "dev": "ib0", "protocol": "static", "flags": []}]
    finally:
        guard.stop()


def test_the_units_commands_never_import_pyroute2(host: NDHost, tmp_path: Path) -> None:
    """Without --netns both units use the stdlib codec; with it (control) pyroute2 loads."""
    cfg = write_config(tmp_path, [{"destination": CLUSTER_CIDR}], mode="WARN")
    run_dir = str(tmp_path / "run")
    for command in (["apply-routes", "--config", cfg], ["check-overlap", "--config", cfg,
                                                        "--run-dir", run_dir]):
        imported = imports("ip", "netns", "exec", host.ns, sys.executable, "-X", "importtime",
                           "-m", "cloudinit_hostrouting", *command)
        assert "cloudinit_hostrouting.rtnl" in imported
        assert "pyroute2" not in imported, command
    assert "pyroute2" in imports(sys.executable, "-X", "importtime", "-m",
                                 "cloudinit_hostrouting", "check-overlap", "--config", cfg,
                                 "--run-dir", run_dir, "--netns", host.ns)


def imports(*argv: str) -> set:
    """Every module a command imported, from its -X importtime report."""
    proc = sh(*argv)
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}
