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
from netns import CLUSTER_CIDR, ETH_GW, IB_PEER_PROBE, NDHost

SERVICE_CIDR = "10.96.0.0/12"


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
