"""The monitoring examples work: NPD's plugin rule and node_exporter's text format.

node-problem-detector itself cannot run here, so the test runs exactly the
command and arguments of the example's rule (config and run dir pointed at the
test's files) in an ND-isr namespace, and checks NPD's plugin protocol: exit
code and a message within max_output_length.  The Prometheus output is parsed
with the official client's text parser, which rejects malformed exposition.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import yaml
from cli_support import EXAMPLES_DIR
from netns import CLUSTER_CIDR, NDHost
from prometheus_client.parser import text_string_to_metric_families

NPD_CONFIG = Path(EXAMPLES_DIR) / "monitoring" / "npd-route-overlap.json"


@pytest.fixture
def host() -> Iterator[NDHost]:
    h = NDHost()
    yield h
    h.close()


def npd_args(config: str, run_dir: str) -> List[str]:
    """The example's rule arguments, with the two paths pointed at the test's files."""
    rule = json.loads(NPD_CONFIG.read_text())["rules"][0]
    args = list(rule["args"])
    args[args.index("--config") + 1] = config
    args[args.index("--run-dir") + 1] = run_dir
    return args


def test_npd_rule_reports_condition_then_clears(host: NDHost, tmp_path: Path) -> None:
    spec = json.loads(NPD_CONFIG.read_text())
    assert spec["rules"][0]["condition"] == spec["conditions"][0]["type"] == "RouteOverlap"
    limit = spec["pluginConfig"]["max_output_length"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"host_routing": {
        "static_routes": {"enabled": True, "routes": [{"destination": CLUSTER_CIDR}]},
        "route_overlap": {"mode": "WARN", "expected_cidrs": [CLUSTER_CIDR]}}}))
    args = npd_args(str(cfg), str(tmp_path / "npd"))

    shadowed = host.run_cli(*args)
    assert shadowed.returncode == 1  # NonOK, even though the mode is WARN
    message = shadowed.stdout.strip()
    assert message == "10.0.5.0/24 via ib0, expected eth0 (1 range(s))"
    assert len(message) <= limit

    assert host.run_cli("apply-routes", "--config", str(cfg)).returncode == 0
    fixed = host.run_cli(*args)
    assert (fixed.returncode, fixed.stdout.strip()) == (0, "routes OK")


def test_prometheus_output_parses_and_says_what_is_wrong(host: NDHost, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"host_routing": {"route_overlap": {
        "expected_cidrs": [CLUSTER_CIDR, "10.96.0.0/12"]}}}))
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run"), "--format", "prometheus")
    assert proc.returncode == 0  # WARN
    samples: Dict[str, float] = {}
    for family in text_string_to_metric_families(proc.stdout):
        assert family.type == "gauge"
        for sample in family.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            samples[key] = sample.value
    assert samples['hostrouting_cidr_ok{"cidr": "10.0.5.0/24", "family": "ipv4"}'] == 0
    assert samples['hostrouting_cidr_ok{"cidr": "10.96.0.0/12", "family": "ipv4"}'] == 1
    assert samples['hostrouting_cidr_shadowed_ranges{"cidr": "10.0.5.0/24", '
                   '"family": "ipv4"}'] == 1
    assert samples["hostrouting_check_ok{}"] == 0
    assert samples['hostrouting_default_route_present{"family": "ipv4"}'] == 1
    assert samples["hostrouting_last_check_timestamp_seconds{}"] > 1.7e9
