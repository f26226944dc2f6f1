"""The monitoring examples work: NPD's plugin rule and node_exporter's text format.

node-problem-detector itself cannot run here, so the test runs exactly the
command and arguments of the example's rule (config and run dir pointed at the
test's files) in an ND-isr namespace, and checks NPD's plugin protocol: exit
code and a message within max_output_length.  The Prometheus output is parsed
with the official client's text parser, which rejects malformed exposition.
A check that cannot decide must say so in both: NPD's Unknown (exit 2) and
``hostrouting_check_state{state="unknown"}``, never a stale OK or a finding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import yaml
from cli_support import EXAMPLES_DIR
from netns import CLUSTER_CIDR, NDHost
from prometheus_client.parser import text_string_to_metric_families

NPD_CONFIG = Path(EXAMPLES_DIR) / "monitoring" / "npd-route-overlap.json"
MONITORING_DOC = Path(EXAMPLES_DIR) / "monitoring" / "README.md"


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


def test_npd_rule_reports_unknown_when_the_check_cannot_decide(host: NDHost,
                                                               tmp_path: Path) -> None:
    """After an OK, a missing config gives NPD's Unknown status, not OK and not "overlap"."""
    limit = json.loads(NPD_CONFIG.read_text())["pluginConfig"]["max_output_length"]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"host_routing": {"route_overlap": {
        "expected_cidrs": ["10.96.0.0/12"]}}}))
    run_dir = tmp_path / "npd"
    ok = host.run_cli(*npd_args(str(cfg), str(run_dir)))
    assert (ok.returncode, ok.stdout.strip()) == (0, "routes OK")
    assert (run_dir / "route-overlap.ok").exists()

    cfg.unlink()
    unknown = host.run_cli(*npd_args(str(cfg), str(run_dir)))
    assert unknown.returncode == 2  # NPD: Unknown; the condition's status becomes Unknown
    message = unknown.stdout.strip()
    assert message.startswith("unknown: cannot read "), message
    assert len(message) <= limit
    assert not (run_dir / "route-overlap.ok").exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "unknown"


def metric_samples(text: str) -> Dict[str, float]:
    """``name{labels as JSON}`` to value, through the official parser (rejects bad text)."""
    samples: Dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for sample in family.samples:
            samples[sample.name + json.dumps(sample.labels, sort_keys=True)] = sample.value
    return samples


def test_prometheus_output_reports_unknown_as_unknown(host: NDHost, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("host_routing: {route_overlap: {mode: STRICT, expected_cidrs: [nope]}}\n")
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run"), "--format", "prometheus")
    assert proc.returncode == 2
    samples = metric_samples(proc.stdout)
    assert samples['hostrouting_check_state{"state": "unknown"}'] == 1
    assert samples['hostrouting_check_state{"state": "ok"}'] == 0
    assert samples['hostrouting_check_state{"state": "overlap"}'] == 0
    assert samples["hostrouting_check_ok{}"] == 0  # an `== 0` alert fires on unknown too
    assert samples["hostrouting_last_check_timestamp_seconds{}"] > 1.7e9
    # Nothing was looked at, so nothing per CIDR or per route is claimed.
    assert not any(k.startswith(("hostrouting_cidr_", "hostrouting_default_route",
                                 "hostrouting_shadowed")) for k in samples), samples


def test_prometheus_output_parses_and_says_what_is_wrong(host: NDHost, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"host_routing": {"route_overlap": {
        "expected_cidrs": [CLUSTER_CIDR, "10.96.0.0/12"]}}}))
    proc = host.run_cli("check-overlap", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run"), "--format", "prometheus")
    assert proc.returncode == 0  # WARN
    samples = metric_samples(proc.stdout)
    assert samples['hostrouting_check_state{"state": "overlap"}'] == 1
    assert samples['hostrouting_check_state{"state": "unknown"}'] == 0
    assert samples['hostrouting_cidr_ok{"cidr": "10.0.5.0/24", "family": "ipv4"}'] == 0
    assert samples['hostrouting_cidr_ok{"cidr": "10.96.0.0/12", "family": "ipv4"}'] == 1
    assert samples['hostrouting_cidr_shadowed_ranges{"cidr": "10.0.5.0/24", '
                   '"family": "ipv4"}'] == 1
    assert samples["hostrouting_check_ok{}"] == 0
    assert samples['hostrouting_default_route_present{"family": "ipv4"}'] == 1
    assert samples["hostrouting_last_check_timestamp_seconds{}"] > 1.7e9
    # The doc's metric table lists exactly what a decided check emits.
    documented = set(re.findall(r"^\| `(hostrouting_[a-z_]+)", MONITORING_DOC.read_text(),
                                re.MULTILINE))
    assert documented == {key.split("{")[0] for key in samples}
