"""Bad input for ``host_routing``: rejected through the real parser and the real CLI.

Issue 2's contract: validate everything before anything is written, write
nothing on error, and name the path, the value and the fix in every error.
Each case goes through ``config.parse`` (what the module calls) and through
``python -m cloudinit_hostrouting`` (what the units and humans run), because a
parser that is right is no use if the CLI turns its error into a traceback or
writes half a tree first.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest
import yaml
from cli_support import (
    CLOUDINIT_VERSIONS,
    REPO,
    cli,
    cloudinit_env,
    loaded_cloudinit_version,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloudinit_hostrouting import config, schema
from cloudinit_hostrouting.config import ConfigError, load_file, parse
from cloudinit_hostrouting.loader import MAX_FILE_BYTES
from cloudinit_hostrouting.schema import (
    MAX_EXPECTED_CIDRS,
    MAX_GATE_UNITS,
    MAX_ROUTES,
    Problem,
)

HR = "host_routing"
SR = "host_routing.static_routes"
RO = "host_routing.route_overlap"
GOOD_ROUTE = {"destination": "10.0.5.0/24"}


def routes(*items: Dict[str, Any], enabled: Any = True) -> Dict[str, Any]:
    """A host_routing mapping with these routes (``enabled: true`` unless told)."""
    static: Dict[str, Any] = {"routes": list(items)}
    if enabled is not None:
        static["enabled"] = enabled
    return {"static_routes": static}


def route_with(**fields: Any) -> Dict[str, Any]:
    """The third route of three carries ``fields``, so paths must name index 2."""
    return routes({"destination": "10.0.1.0/24"}, {"destination": "10.0.2.0/24"},
                  {"destination": "10.0.3.0/24", **fields})


def problems_of(raw: Any) -> List[Problem]:
    """Every problem the real parser reports for ``raw`` (and it must report some)."""
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert caught.value.problems, "ConfigError without problems"
    return caught.value.problems


def the_problem(raw: Any, path: str) -> Problem:
    """The problem at exactly ``path``; fails listing what was reported instead."""
    found = [p for p in problems_of(raw) if p.path == path]
    assert found, f"no problem at {path}; got {[str(p) for p in problems_of(raw)]}"
    return found[0]


# (id, host_routing value, exact path of the error, the offending value)
BAD = [
    # Destinations and gateways that are not addresses, or mix families.
    ("dest-ipv4-short", route_with(destination="10.0.3/24"),
     f"{SR}.routes[2].destination", "10.0.3/24"),
    ("dest-ipv6-prefix-129", route_with(destination="fd00::/129"),
     f"{SR}.routes[2].destination", "fd00::/129"),
    ("dest-prefix-33", route_with(destination="10.0.3.0/33"),
     f"{SR}.routes[2].destination", "10.0.3.0/33"),
    ("dest-no-prefix", route_with(destination="10.0.3.0"),
     f"{SR}.routes[2].destination", "10.0.3.0"),
    ("dest-hostname", route_with(destination="cluster.internal/24"),
     f"{SR}.routes[2].destination", "cluster.internal/24"),
    ("gateway-mixed-family", route_with(gateway="fd00::1"),
     f"{SR}.routes[2].gateway", "fd00::1"),
    ("gateway-mixed-family-v6-dest", route_with(destination="fd00:5::/64", gateway="10.1.0.1"),
     f"{SR}.routes[2].gateway", "10.1.0.1"),
    ("gateway-link-local-no-dev", route_with(destination="fd00:5::/64", gateway="fe80::1"),
     f"{SR}.routes[2].gateway", "fe80::1"),
    ("gateway-zone-index", route_with(destination="fd00:5::/64", gateway="fe80::1%eth0",
                                      dev="eth0"),
     f"{SR}.routes[2].gateway", "fe80::1%eth0"),
    ("gateway-hostname", route_with(gateway="gw.internal"), f"{SR}.routes[2].gateway",
     "gw.internal"),
    ("gateway-octet", route_with(gateway="172.16.1.256"),
     f"{SR}.routes[2].gateway", "172.16.1.256"),
    ("gateway-cidr", route_with(gateway="172.16.1.2/16"),
     f"{SR}.routes[2].gateway", "172.16.1.2/16"),
    ("expected-garbage", {"route_overlap": {"expected_cidrs": ["10.0.5.0/24", "pods"]}},
     f"{RO}.expected_cidrs[1]", "pods"),
    # dev outside [A-Za-z0-9_.-]{1,15}: these would be shell or unit-file injection
    # anywhere a string is interpolated, so they must never get past the parser.
    ("dev-newline", route_with(dev="eth0\n"), f"{SR}.routes[2].dev", "eth0\n"),
    ("dev-newline-injection", route_with(dev="eth0\nExecStart=/bin/sh"),
     f"{SR}.routes[2].dev", "eth0\nExecStart=/bin/sh"),
    ("dev-semicolon", route_with(dev="eth0;reboot"), f"{SR}.routes[2].dev", "eth0;reboot"),
    ("dev-subshell", route_with(dev="$(reboot)"), f"{SR}.routes[2].dev", "$(reboot)"),
    ("dev-equals", route_with(dev="dev=eth0"), f"{SR}.routes[2].dev", "dev=eth0"),
    ("dev-16-chars", route_with(dev="abcdefghijklmnop"),
     f"{SR}.routes[2].dev", "abcdefghijklmnop"),
    ("dev-empty", route_with(dev=""), f"{SR}.routes[2].dev", ""),
    ("dev-space", route_with(dev="eth 0"), f"{SR}.routes[2].dev", "eth 0"),
    # Unknown keys, at every level: typos must not be silently ignored.
    ("typo-top", {"static_route": {"enabled": True}}, f"{HR}.static_route", "static_route"),
    ("typo-route", route_with(destinaton="10.0.9.0/24"),
     f"{SR}.routes[2].destinaton", "destinaton"),
    ("typo-overlap", {"route_overlap": {"expected_cidr": ["10.0.5.0/24"]}},
     f"{RO}.expected_cidr", "expected_cidr"),
    ("typo-static", {"static_routes": {"enable": True, "routes": [GOOD_ROUTE]}},
     f"{SR}.enable", "enable"),
    ("typo-azure", {"azure": {"sugest": True}}, f"{HR}.azure.sugest", "sugest"),
    # Wrong types.
    ("routes-mapping", {"static_routes": {"enabled": True, "routes": GOOD_ROUTE}},
     f"{SR}.routes", GOOD_ROUTE),
    ("metric-string", route_with(metric="100"), f"{SR}.routes[2].metric", "100"),
    ("metric-bool", route_with(metric=True), f"{SR}.routes[2].metric", True),
    ("metric-float", route_with(metric=1.5), f"{SR}.routes[2].metric", 1.5),
    ("enabled-string", routes(GOOD_ROUTE, enabled="yes"), f"{SR}.enabled", "yes"),
    ("gate-units-string", {"gate_units": "kubelet.service"},
     f"{HR}.gate_units", "kubelet.service"),
    ("expected-cidrs-string", {"route_overlap": {"expected_cidrs": "10.0.5.0/24"}},
     f"{RO}.expected_cidrs", "10.0.5.0/24"),
    ("destination-int", route_with(destination=10), f"{SR}.routes[2].destination", 10),
    ("host-routing-list", [GOOD_ROUTE], HR, [GOOD_ROUTE]),
    ("host-routing-null", None, HR, None),
    # Duplicate destinations, also once host bits are masked.
    ("dup-exact", routes(GOOD_ROUTE, {"destination": "10.0.6.0/24"}, GOOD_ROUTE),
     f"{SR}.routes[2].destination", "10.0.5.0/24"),
    ("dup-after-masking", routes({"destination": "10.0.5.1/24"}, GOOD_ROUTE),
     f"{SR}.routes[1].destination", "10.0.5.0/24"),
    ("dup-expected-masked", {"route_overlap": {"expected_cidrs": ["10.0.5.0/24", "10.0.5.9/24"]}},
     f"{RO}.expected_cidrs[1]", "10.0.5.9/24"),
    # Metric out of 0..4294967295.
    ("metric-negative", route_with(metric=-1), f"{SR}.routes[2].metric", -1),
    ("metric-2pow32", route_with(metric=4294967296), f"{SR}.routes[2].metric", 4294967296),
    # Mode not WARN/STRICT.
    ("mode-block", {"route_overlap": {"mode": "block"}}, f"{RO}.mode", "block"),
    ("mode-empty", {"route_overlap": {"mode": ""}}, f"{RO}.mode", ""),
    ("mode-bool", {"route_overlap": {"mode": True}}, f"{RO}.mode", True),
    # Routes without the explicit opt-in.
    ("enabled-false", routes(GOOD_ROUTE, enabled=False), f"{SR}.enabled", False),
    ("enabled-missing", routes(GOOD_ROUTE, enabled=None), f"{SR}.enabled", None),
    # Gate units that are not valid systemd unit names, or are our own units.
    ("gate-traversal", {"gate_units": ["../evil.service"]},
     f"{HR}.gate_units[0]", "../evil.service"),
    ("gate-no-suffix", {"gate_units": ["kubelet"]}, f"{HR}.gate_units[0]", "kubelet"),
    ("gate-space", {"gate_units": ["kubelet.service", "a b.service"]},
     f"{HR}.gate_units[1]", "a b.service"),
    ("gate-newline", {"gate_units": ["x.service\n"]}, f"{HR}.gate_units[0]", "x.service\n"),
    ("gate-slash", {"gate_units": ["etc/kubelet.service"]},
     f"{HR}.gate_units[0]", "etc/kubelet.service"),
    ("gate-own-static", {"gate_units": ["hostrouting-static-routes.service"]},
     f"{HR}.gate_units[0]", "hostrouting-static-routes.service"),
    ("gate-own-check", {"gate_units": ["kubelet.service", "hostrouting-route-overlap.service"]},
     f"{HR}.gate_units[1]", "hostrouting-route-overlap.service"),
    ("gate-duplicate", {"gate_units": ["kubelet.service", "kubelet.service"]},
     f"{HR}.gate_units[1]", "kubelet.service"),
    ("gate-own-guard", {"gate_units": ["hostrouting-guard.service"]},
     f"{HR}.gate_units[0]", "hostrouting-guard.service"),
    ("gate-sysinit", {"gate_units": ["sysinit.target"]}, f"{HR}.gate_units[0]",
     "sysinit.target"),
    ("gate-network-online", {"gate_units": ["kubelet.service", "network-online.target"]},
     f"{HR}.gate_units[1]", "network-online.target"),
    ("gate-networkd", {"gate_units": ["systemd-networkd.service"]}, f"{HR}.gate_units[0]",
     "systemd-networkd.service"),
    ("gate-cloud-init", {"gate_units": ["cloud-init.service"]}, f"{HR}.gate_units[0]",
     "cloud-init.service"),
    ("gate-cloud-final", {"gate_units": ["cloud-final.service"]}, f"{HR}.gate_units[0]",
     "cloud-final.service"),
    ("gate-socket", {"gate_units": ["docker.socket"]}, f"{HR}.gate_units[0]", "docker.socket"),
    ("gate-mount", {"gate_units": ["var-lib-data.mount"]}, f"{HR}.gate_units[0]",
     "var-lib-data.mount"),
    ("gate-ssh", {"gate_units": ["ssh.service"]}, f"{HR}.gate_units[0]", "ssh.service"),
    ("gate-getty-instance", {"gate_units": ["serial-getty@ttyS0.service"]},
     f"{HR}.gate_units[0]", "serial-getty@ttyS0.service"),
    ("gate-waagent", {"gate_units": ["walinuxagent.service"]}, f"{HR}.gate_units[0]",
     "walinuxagent.service"),
    ("gate-shutdown", {"gate_units": ["shutdown.target"]}, f"{HR}.gate_units[0]",
     "shutdown.target"),
    # Destinations that make no sense for this tool (issue 10).
    ("dest-default-v4", route_with(destination="0.0.0.0/0"),
     f"{SR}.routes[2].destination", "0.0.0.0/0"),
    ("dest-default-v6", route_with(destination="::/0"), f"{SR}.routes[2].destination", "::/0"),
    ("dest-default-masked", route_with(destination="10.0.0.0/0"),
     f"{SR}.routes[2].destination", "10.0.0.0/0"),
    ("dest-this-network", route_with(destination="0.0.0.0/8"),
     f"{SR}.routes[2].destination", "0.0.0.0/8"),
    ("dest-loopback", route_with(destination="127.0.0.0/8"),
     f"{SR}.routes[2].destination", "127.0.0.0/8"),
    ("dest-loopback-part", route_with(destination="127.5.0.0/16"),
     f"{SR}.routes[2].destination", "127.5.0.0/16"),
    ("dest-loopback-v6", route_with(destination="::1/128"),
     f"{SR}.routes[2].destination", "::1/128"),
    ("dest-multicast", route_with(destination="239.1.0.0/16"),
     f"{SR}.routes[2].destination", "239.1.0.0/16"),
    ("dest-multicast-v6", route_with(destination="ff02::/16"),
     f"{SR}.routes[2].destination", "ff02::/16"),
    ("dest-broadcast", route_with(destination="255.255.255.255/32"),
     f"{SR}.routes[2].destination", "255.255.255.255/32"),
    ("dest-v4-mapped", route_with(destination="::ffff:0:0/96"),
     f"{SR}.routes[2].destination", "::ffff:0:0/96"),
    ("dest-unspecified-v6", route_with(destination="::/128"),
     f"{SR}.routes[2].destination", "::/128"),
    ("dest-link-local-no-dev", route_with(destination="169.254.169.254/32"),
     f"{SR}.routes[2].destination", "169.254.169.254/32"),
    ("dest-link-local-v6-no-dev", route_with(destination="fe80::/64"),
     f"{SR}.routes[2].destination", "fe80::/64"),
    ("dest-zone-id", route_with(destination="fe80::%eth0/64", dev="eth0"),
     f"{SR}.routes[2].destination", "fe80::%eth0/64"),
    # Gateways that are never a next hop.
    ("gateway-unspecified", route_with(gateway="0.0.0.0"), f"{SR}.routes[2].gateway", "0.0.0.0"),
    ("gateway-unspecified-v6", route_with(destination="fd00:5::/64", gateway="::"),
     f"{SR}.routes[2].gateway", "::"),
    ("gateway-this-network", route_with(gateway="0.1.2.3"), f"{SR}.routes[2].gateway",
     "0.1.2.3"),
    ("gateway-loopback", route_with(gateway="127.0.0.1"), f"{SR}.routes[2].gateway",
     "127.0.0.1"),
    ("gateway-loopback-v6", route_with(destination="fd00:5::/64", gateway="::1"),
     f"{SR}.routes[2].gateway", "::1"),
    ("gateway-multicast", route_with(gateway="224.0.0.1"), f"{SR}.routes[2].gateway",
     "224.0.0.1"),
    ("gateway-multicast-v6", route_with(destination="fd00:5::/64", gateway="ff02::1",
                                        dev="eth0"),
     f"{SR}.routes[2].gateway", "ff02::1"),
    ("gateway-broadcast", route_with(gateway="255.255.255.255"), f"{SR}.routes[2].gateway",
     "255.255.255.255"),
    ("gateway-v4-mapped", route_with(destination="fd00:5::/64", gateway="::ffff:10.1.0.1"),
     f"{SR}.routes[2].gateway", "::ffff:10.1.0.1"),
    ("gateway-in-destination", route_with(gateway="10.0.3.1"), f"{SR}.routes[2].gateway",
     "10.0.3.1"),
    ("gateway-link-local-v4-no-dev", route_with(gateway="169.254.0.1"),
     f"{SR}.routes[2].gateway", "169.254.0.1"),
    # Expected CIDRs that can never pass.
    ("expected-zone-id", {"route_overlap": {"expected_cidrs": ["fd00::%eth0/64"]}},
     f"{RO}.expected_cidrs[0]", "fd00::%eth0/64"),
    ("expected-everything", {"route_overlap": {"expected_cidrs": ["10.0.5.0/24", "0.0.0.0/0"]}},
     f"{RO}.expected_cidrs[1]", "0.0.0.0/0"),
    ("expected-everything-v6", {"route_overlap": {"expected_cidrs": ["::/0"]}},
     f"{RO}.expected_cidrs[0]", "::/0"),
    ("expected-has-loopback", {"route_overlap": {"expected_cidrs": ["96.0.0.0/3"]}},
     f"{RO}.expected_cidrs[0]", "96.0.0.0/3"),
    ("expected-multicast", {"route_overlap": {"expected_cidrs": ["224.0.0.0/24"]}},
     f"{RO}.expected_cidrs[0]", "224.0.0.0/24"),
    ("expected-link-local-v6", {"route_overlap": {"expected_cidrs": ["fe80::/64"]}},
     f"{RO}.expected_cidrs[0]", "fe80::/64"),
]
BAD_IDS = [case[0] for case in BAD]


@pytest.mark.parametrize(("raw", "path", "value"), [c[1:] for c in BAD], ids=BAD_IDS)
def test_parser_names_path_value_and_fix(raw: Any, path: str, value: Any) -> None:
    """The error a user sees points at the exact key, quotes what they wrote, says what to do."""
    problem = the_problem(raw, path)
    assert problem.value == value
    text = str(problem)
    assert text.startswith(path + ":")
    assert repr(value)[:60] in text
    assert problem.fix.startswith("Fix:") and len(problem.fix) > len("Fix: x.")
    assert problem.fix in text


def _write_config(tmp_path: Any, raw: Any, name: str = "bad.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"host_routing": raw}), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("raw", "path", "value"), [c[1:] for c in BAD], ids=BAD_IDS)
def test_render_rejects_and_writes_nothing(tmp_path: Any, raw: Any, path: str,
                                           value: Any) -> None:
    """``render`` exits 2 naming path and value, and leaves the target root untouched."""
    config = _write_config(tmp_path, raw)
    root = tmp_path / "root"
    root.mkdir()
    proc = cli("render", "--config", config, "--root", str(root))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert path in proc.stderr
    assert repr(value)[:60] in proc.stderr
    assert "Fix:" in proc.stderr
    assert proc.stdout == ""
    assert list(root.iterdir()) == [], "render wrote files for a bad config"


UNIT_CMD_CASES = ("dev-subshell", "dev-newline", "typo-route", "metric-string",
                  "dup-after-masking", "mode-block", "enabled-missing", "gate-newline")


@pytest.mark.parametrize("command", ["apply-routes", "check-overlap"])
@pytest.mark.parametrize(("raw", "path", "value"),
                         [c[1:] for c in BAD if c[0] in UNIT_CMD_CASES],
                         ids=[c[0] for c in BAD if c[0] in UNIT_CMD_CASES])
def test_unit_commands_exit_2_before_touching_anything(tmp_path: Any, command: str, raw: Any,
                                                       path: str, value: Any) -> None:
    """What the units run: a bad config is exit 2, with no netlink work and no markers.

    ``--netns`` names a namespace that does not exist, so a config wrongly
    accepted can never change this host's routes (it fails differently
    instead); ``--run-dir`` must stay empty, so no ``.ok`` marker can appear
    for a config that was never valid.
    """
    config = _write_config(tmp_path, raw)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = [command, "--config", config, "--wait", "0", "--netns", "hr-test-no-such-ns"]
    if command == "check-overlap":
        args += ["--run-dir", str(run_dir)]
    proc = cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "invalid host_routing" in proc.stderr, proc.stderr
    assert path in proc.stderr and repr(value)[:60] in proc.stderr
    # check-overlap records "unknown" (issue 10 section 4), never an .ok or .detected.
    assert sorted(p.name for p in run_dir.iterdir()) == (
        ["route-overlap.unknown", "status.json"] if command == "check-overlap" else [])


# ---------------------------------------------------------------------------
# Accepted input, normalised.


def test_host_bits_are_masked_with_a_warning_naming_the_masked_form(tmp_path: Any) -> None:
    """10.0.5.1/24 is a common slip for 10.0.5.0/24: accept it, but say what is used."""
    cfg = parse(routes({"destination": "10.0.5.1/24"}))
    assert [str(r.destination) for r in cfg.routes] == ["10.0.5.0/24"]
    assert len(cfg.warnings) == 1
    assert f"{SR}.routes[0].destination" in cfg.warnings[0]
    assert "10.0.5.1/24" in cfg.warnings[0] and "10.0.5.0/24" in cfg.warnings[0]

    config = _write_config(tmp_path, routes({"destination": "10.0.5.1/24"}))
    proc = cli("render", "--config", config, "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "10.0.5.0/24" in proc.stderr
    written = json.loads((tmp_path / "root/etc/cloudinit-hostrouting/host-routing.json")
                         .read_text(encoding="utf-8"))
    assert written[HR]["static_routes"]["routes"] == [{"destination": "10.0.5.0/24"}]


def test_expected_cidr_host_bits_are_masked_with_a_warning() -> None:
    """The same slip in expected_cidrs is probed as the masked network."""
    cfg = parse({"route_overlap": {"expected_cidrs": ["10.96.3.4/12"]}})
    assert [str(c) for c in cfg.expected_cidrs] == ["10.96.0.0/12"]
    assert any("10.96.0.0/12" in w for w in cfg.warnings)


@pytest.mark.parametrize("metric", [0, 4294967295])
def test_metric_bounds_are_inclusive(metric: int) -> None:
    """0 and 2**32-1 are the kernel's own limits, so both must be accepted unchanged."""
    cfg = parse(routes({"destination": "10.0.5.0/24", "metric": metric}))
    assert cfg.routes[0].metric == metric


def test_ipv6_routes_and_expected_cidrs_are_accepted() -> None:
    """Issue 5: IPv6 destinations take IPv6 gateways; a link-local one with its dev."""
    cfg = parse({
        **routes({"destination": "fd00:5::/64", "gateway": "fd00::1"},
                 {"destination": "fd00:6::/64", "gateway": "fe80::1", "dev": "eth0"},
                 {"destination": "10.0.5.0/24", "gateway": "10.1.0.1"}),
        "route_overlap": {"expected_cidrs": ["fd00:5::/64", "10.0.5.0/24"]},
    })
    assert [(str(r.destination), str(r.gateway)) for r in cfg.routes] == [
        ("fd00:5::/64", "fd00::1"), ("fd00:6::/64", "fe80::1"), ("10.0.5.0/24", "10.1.0.1")]
    assert [str(c) for c in cfg.expected_cidrs] == ["fd00:5::/64", "10.0.5.0/24"]


@pytest.mark.parametrize(("given", "normal"),
                         [("warn", "WARN"), ("Warn", "WARN"), ("Strict", "STRICT"),
                          ("STRICT", "STRICT"), ("sTrIcT", "STRICT")])
def test_mode_is_case_insensitive_and_normalised(given: str, normal: str) -> None:
    """Upstream accepts any case; what the units read is the canonical spelling."""
    cfg = parse({"route_overlap": {"mode": given}})
    assert cfg.mode == normal
    assert cfg.strict is (normal == "STRICT")
    assert json.loads(cfg.to_json())[HR]["route_overlap"]["mode"] == normal


def test_mode_defaults_to_warn() -> None:
    """No mode means WARN, as upstream: an unconfigured check never blocks."""
    assert parse({"route_overlap": {"expected_cidrs": ["10.0.5.0/24"]}}).mode == "WARN"


def test_strict_with_trailing_newline_never_becomes_warn() -> None:
    """``mode: |`` followed by ``STRICT`` is "STRICT\\n" in YAML.

    Rejecting it is fine; accepting it as anything but STRICT silently
    downgrades a gate the user asked to be blocking.
    """
    try:
        cfg = parse({"route_overlap": {"mode": "STRICT\n"}})
    except ConfigError as err:
        assert [p.path for p in err.problems] == [f"{RO}.mode"]
    else:
        assert cfg.mode == "STRICT" and cfg.strict


@pytest.mark.parametrize("unit", ["kubelet.service", "systemd-nspawn@.service",
                                  "systemd-nspawn@kube1.service", "foo@bar.service",
                                  "containerd.service", "docker.service",
                                  "machines.target", "multi-user.target", "remote-fs.target",
                                  "sshguard-not-ssh.target", "app.target"])
def test_valid_gate_units_are_accepted(unit: str) -> None:
    """Templates, instances and workload targets are all legitimate things to gate."""
    assert parse({"gate_units": [unit]}).gate_units == (unit,)


@pytest.mark.parametrize(("raw", "kept"), [
    (routes({"destination": "240.0.0.0/4"}), "240.0.0.0/4"),
    (routes({"destination": "100.64.0.0/10", "gateway": "10.1.0.1"}), "100.64.0.0/10"),
    (routes({"destination": "169.254.169.254/32", "dev": "eth0"}), "169.254.169.254/32"),
    (routes({"destination": "fe80::/64", "dev": "eth0"}), "fe80::/64"),
    (routes({"destination": "10.0.5.0/24", "gateway": "169.254.0.1", "dev": "eth0"}),
     "10.0.5.0/24"),
    (routes({"destination": "10.0.5.0/25", "gateway": "10.0.5.129"}), "10.0.5.0/25"),
    (routes({"destination": "1.0.0.0/8"}), "1.0.0.0/8"),
    (routes({"destination": "2000::/3"}), "2000::/3"),
])
def test_ordinary_ranges_next_to_the_refused_ones_are_accepted(raw: Any, kept: str) -> None:
    """Negative controls for the refusals: reserved 240/4 (pod CIDRs use it), shared
    space, link-local with dev, a gateway just outside the destination."""
    assert [str(r.destination) for r in parse(raw).routes] == [kept]


@pytest.mark.parametrize("cidr", ["169.254.169.254/32", "10.0.0.0/8", "128.0.0.0/2",
                                  "fd00::/8", "2000::/3"])
def test_expected_cidrs_that_can_pass_are_accepted(cidr: str) -> None:
    """IMDS routes via the default gateway and is worth checking; wide unicast too."""
    assert [str(c) for c in parse({"route_overlap": {"expected_cidrs": [cidr]}})
            .expected_cidrs] == [cidr]


def test_gate_units_default_to_nspawn() -> None:
    """Without gate_units, nspawn machines (the ND-isr workload) are gated."""
    assert parse({}).gate_units == ("systemd-nspawn@.service",)


def test_enabled_false_without_routes_is_fine() -> None:
    """Turning routes off is only an error when routes are given too."""
    assert parse({"static_routes": {"enabled": False}}).routes == ()


def test_full_example_from_the_issue_parses() -> None:
    """The user-data in issue 2 is the canonical shape and must parse as written."""
    cfg = parse({
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/24", "gateway": "172.16.1.2", "dev": "eth0",
             "metric": 100}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24", "10.96.0.0/12"]},
        "gate_units": ["systemd-nspawn@.service"],
    })
    route = cfg.routes[0]
    assert (str(route.destination), str(route.gateway), route.dev, route.metric) == (
        "10.0.5.0/24", "172.16.1.2", "eth0", 100)
    assert cfg.strict and [str(c) for c in cfg.expected_cidrs] == ["10.0.5.0/24", "10.96.0.0/12"]


# ---------------------------------------------------------------------------
# Sizes.


def _many_routes(n: int) -> Dict[str, Any]:
    """n distinct /32 routes in 10.128.0.0/9."""
    base = 10 << 24 | 128 << 16
    dests = [f"{(base + i) >> 24 & 255}.{(base + i) >> 16 & 255}.{(base + i) >> 8 & 255}."
             f"{(base + i) & 255}/32" for i in range(n)]
    return routes(*({"destination": d} for d in dests))


def test_ten_thousand_routes_are_accepted(tmp_path: Any) -> None:
    """A big cluster's routes are a list of thousands: the parser and render must take it."""
    raw = _many_routes(10_000)
    assert len(parse(raw).routes) == 10_000
    config = tmp_path / "big.json"
    config.write_text(json.dumps({"host_routing": raw}), encoding="utf-8")
    proc = cli("render", "--config", str(config), "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "root/etc/cloudinit-hostrouting/host-routing.json")
                         .read_text(encoding="utf-8"))
    assert len(written[HR]["static_routes"]["routes"]) == 10_000


def test_absurd_route_count_is_rejected_with_a_limit_message(tmp_path: Any) -> None:
    """One route over the limit is a mistake (or an attack on a boot-critical unit)."""
    assert MAX_ROUTES == 16384
    raw = _many_routes(MAX_ROUTES + 1)
    problem = the_problem(raw, f"{SR}.routes")
    assert "limit" in problem.message and str(MAX_ROUTES) in problem.message
    assert str(MAX_ROUTES + 1) in str(problem)
    config = tmp_path / "huge.json"
    config.write_text(json.dumps({"host_routing": raw}), encoding="utf-8")
    root = tmp_path / "root"
    root.mkdir()
    proc = cli("render", "--config", str(config), "--root", str(root))
    assert proc.returncode == 2
    assert f"{SR}.routes" in proc.stderr and "limit" in proc.stderr
    assert len(proc.stderr) < 2000, "a size error must not echo the whole list"
    assert list(root.iterdir()) == []


def test_exactly_the_route_limit_is_accepted() -> None:
    """The limit itself is allowed: the negative control for the test above."""
    assert len(parse(_many_routes(MAX_ROUTES)).routes) == MAX_ROUTES


def test_largest_allowed_config_fits_the_units_file_limit(tmp_path: Any) -> None:
    """Every list at its limit, every string at its longest: the JSON the module
    writes must load in the units, or they would refuse what the module accepted.
    """
    longest = "fd00:ffff:ffff:ffff:ffff:ffff:ffff:{:04x}/128"
    raw = {
        **routes(*({"destination": longest.format(i),
                    "gateway": "fe80:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "dev": "abcdefghijklmno", "metric": 4294967295}
                   for i in range(MAX_ROUTES))),
        "route_overlap": {"mode": "STRICT",
                          "expected_cidrs": [longest.format(i)
                                             for i in range(MAX_EXPECTED_CIDRS)]},
        "gate_units": [f"{'u' * 240}{i:02d}@x.service" for i in range(MAX_GATE_UNITS)],
    }
    text = parse(raw).to_json()
    assert len(text.encode()) < MAX_FILE_BYTES / 1.5, "leave headroom for YAML by hand"
    config = tmp_path / "host-routing.json"
    config.write_text(text, encoding="utf-8")
    assert len(load_file(str(config)).routes) == MAX_ROUTES


def test_absurd_gate_unit_count_is_rejected_with_a_limit_message() -> None:
    """Gate units are few by nature; hundreds means generated garbage."""
    problem = the_problem({"gate_units": [f"u{i}.service" for i in range(1000)]},
                          f"{HR}.gate_units")
    assert "limit" in problem.message


# ---------------------------------------------------------------------------
# Several problems at once, and files without host_routing.


def test_all_shape_problems_are_reported_at_once() -> None:
    """One round trip: a typo, a bad dev and a string metric are all named together."""
    raw = routes({"destinaton": "10.0.5.0/24"},
                 {"destination": "10.0.6.0/24", "dev": "eth0;reboot"},
                 {"destination": "10.0.7.0/24", "metric": "100"})
    paths = {p.path for p in problems_of(raw)}
    assert {f"{SR}.routes[0].destinaton", f"{SR}.routes[1].dev",
            f"{SR}.routes[2].metric"} <= paths


def test_all_address_problems_are_reported_at_once() -> None:
    """A bad destination, a bad gateway and a duplicate are all named together."""
    raw = routes({"destination": "10.0.5.0/33"},
                 {"destination": "10.0.6.0/24", "gateway": "fe80::1"},
                 {"destination": "10.0.7.0/24"}, {"destination": "10.0.7.1/24"})
    paths = {p.path for p in problems_of(raw)}
    assert paths == {f"{SR}.routes[0].destination", f"{SR}.routes[1].gateway",
                     f"{SR}.routes[3].destination"}


def test_shape_and_address_problems_are_reported_together() -> None:
    """config.py promises every problem at once; a typo must not hide a bad gateway."""
    raw = {**routes({"destination": "10.0.5.0/24", "gateway": "172.16.1.999"}),
           "route_overlap": {"mode": "block"}}
    paths = {p.path for p in problems_of(raw)}
    assert {f"{RO}.mode", f"{SR}.routes[0].gateway"} <= paths


def test_cli_reports_every_problem_in_one_run(tmp_path: Any) -> None:
    """The CLI prints the whole list, with its count, not just the first problem."""
    raw = {**routes({"destination": "10.0.5.0/24", "dev": "$(reboot)"}),
           "route_overlap": {"mode": "block", "expected_cidr": []}}
    proc = cli("render", "--config", _write_config(tmp_path, raw),
               "--root", str(tmp_path / "root"))
    assert proc.returncode == 2
    for path in (f"{SR}.routes[0].dev", f"{RO}.mode", f"{RO}.expected_cidr"):
        assert path in proc.stderr
    assert "3 problem(s)" in proc.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(("name", "text"), [
    ("other-keys.yaml", "#cloud-config\nruncmd: [true]\n"),
    ("empty.yaml", ""),
    ("list.yaml", "- host_routing\n"),
    ("typo.yaml", "host_routng:\n  gate_units: [kubelet.service]\n"),
])
def test_file_without_host_routing_is_a_clear_error(tmp_path: Any, name: str, text: str) -> None:
    """A config file for the units must have the key; say so instead of doing nothing."""
    config = tmp_path / name
    config.write_text(text, encoding="utf-8")
    root = tmp_path / "root"
    proc = cli("render", "--config", str(config), "--root", str(root))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no top-level host_routing" in proc.stderr and "Fix:" in proc.stderr
    assert str(config) in proc.stderr
    assert not root.exists()


def test_unparsable_yaml_is_a_clear_error(tmp_path: Any) -> None:
    """Broken syntax is a config error (exit 2) naming the file, not a traceback."""
    config = tmp_path / "broken.yaml"
    config.write_text("host_routing:\n  gate_units: [kubelet.service\n", encoding="utf-8")
    proc = cli("render", "--config", str(config), "--root", str(tmp_path / "root"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(config) in proc.stderr


def test_missing_config_file_is_exit_2(tmp_path: Any) -> None:
    """A unit whose config file vanished fails as a config error, with the path."""
    missing = str(tmp_path / "nope.json")
    proc = cli("render", "--config", missing, "--root", str(tmp_path / "root"))
    assert proc.returncode == 2 and missing in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------
# validate: whole #cloud-config files, under both cloud-init versions.

BAD_CLOUD_CONFIG = """\
#cloud-config
runcmd: 5
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
      - destination: 10.0.6.0/24
        gateway: 172.16.1.999
"""

GOOD_CLOUD_CONFIG = """\
#cloud-config
runcmd:
  - [echo, hello]
host_routing:
  static_routes:
    enabled: true
    routes:
      - destination: 10.0.5.0/24
        dev: eth0
  route_overlap:
    mode: strict
    expected_cidrs: [10.0.5.0/24]
"""


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
def test_validate_reports_cloudinit_and_host_routing_errors_together(tmp_path: Any,
                                                                      version: str) -> None:
    """One run names both the cloud-init error and ours, each with its path; exit 1."""
    env = cloudinit_env(version)
    assert loaded_cloudinit_version(env).startswith(version)
    path = tmp_path / "user-data.yaml"
    path.write_text(BAD_CLOUD_CONFIG, encoding="utf-8")
    proc = cli("validate", str(path), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if ": error: " in line]
    assert any("runcmd" in line for line in errors), proc.stdout
    ours = [line for line in errors if f"{SR}.routes[1].gateway" in line]
    assert ours and "172.16.1.999" in ours[0] and "Fix:" in ours[0]
    assert f"{path}: valid" not in proc.stdout


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
def test_validate_accepts_a_valid_file(tmp_path: Any, version: str) -> None:
    """A correct file is exit 0 and says 'valid' (25.1's unknown-key complaint is gone)."""
    env = cloudinit_env(version)
    assert loaded_cloudinit_version(env).startswith(version)
    path = tmp_path / "user-data.yaml"
    path.write_text(GOOD_CLOUD_CONFIG, encoding="utf-8")
    proc = cli("validate", str(path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{path}: valid"


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
def test_validate_checks_every_file_and_fails_if_any_is_bad(tmp_path: Any,
                                                            version: str) -> None:
    """Several files: each gets its verdict, and one bad file makes the run exit 1."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD_CLOUD_CONFIG, encoding="utf-8")
    bad.write_text(GOOD_CLOUD_CONFIG.replace("mode: strict", "mode: block"), encoding="utf-8")
    proc = cli("validate", str(good), str(bad), env=cloudinit_env(version))
    assert proc.returncode == 1
    assert f"{good}: valid" in proc.stdout
    assert f"{bad}: error: {RO}.mode" in proc.stdout


def test_validate_requires_the_cloud_config_header(tmp_path: Any) -> None:
    """cloud-init ignores user-data without '#cloud-config': so must validate."""
    path = tmp_path / "user-data.yaml"
    path.write_text(GOOD_CLOUD_CONFIG.replace("#cloud-config\n", ""), encoding="utf-8")
    proc = cli("validate", str(path))
    assert proc.returncode == 1 and "#cloud-config" in proc.stdout


def test_cli_subprocess_runs_the_package_under_test() -> None:
    """The subprocess must import the same package as this process, or the CLI tests lie."""
    import cloudinit_hostrouting

    proc = subprocess.run(
        [sys.executable, "-c", "import cloudinit_hostrouting as m; print(m.__file__)"],
        env=cloudinit_env("22.4"), cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    assert os.path.realpath(proc.stdout.strip()) == os.path.realpath(
        cloudinit_hostrouting.__file__)


@pytest.mark.parametrize("version", CLOUDINIT_VERSIONS)
@pytest.mark.parametrize(("text", "ours"), [
    ("1: x\nhost_routing: {gate_units: [kubelet.service]}\n", None),
    ("2024-01-01: x\nhost_routing: {}\n", None),
    ("write_files: [{path: /x, content: !!binary aGVsbG8=}]\nhost_routing: {}\n", None),
    ("hostname: !!binary aGVsbG8=\nhost_routing:\n  gate_units: [!!binary aGVsbG8=]\n",
     "host_routing.gate_units[0]: must be of type string, not bytes"),
    ("host_routing:\n  2024-01-01: x\n  1: y\n", "host_routing.2024-01-01: unknown key"),
])
def test_validate_copes_with_odd_keys_and_binary_values(tmp_path: Any, version: str, text: str,
                                                        ours: Any) -> None:
    """Int and date keys and !!binary values, ours or cloud-init's: a verdict, never a
    traceback (cloud-init's validator raised TypeError on a !!binary gate unit)."""
    path = tmp_path / "user-data.yaml"
    path.write_text("#cloud-config\n" + text, encoding="utf-8")
    proc = cli("validate", str(path), env=cloudinit_env(version))
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stderr == ""
    assert proc.returncode in (0, 1), proc.stdout
    if ours:
        assert proc.returncode == 1 and ours in proc.stdout, proc.stdout
    assert not any(line.startswith(f"{path}: error: :") for line in proc.stdout.splitlines())


def test_the_units_json_path_imports_neither_yaml_nor_dataclasses(tmp_path: Any) -> None:
    """What the units do first, loading the module's JSON, stays lean (issue 11)."""
    config = tmp_path / "host-routing.json"
    config.write_text(parse(routes(GOOD_ROUTE)).to_json(), encoding="utf-8")
    code = ("import sys; from cloudinit_hostrouting.config import load_file; "
            f"load_file({str(config)!r}); "
            "print(sorted(m for m in ('yaml', 'dataclasses', 'inspect') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=cloudinit_env("22.4"), cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
    # Negative control: a YAML file does import yaml, so the probe can see it.
    yaml_config = tmp_path / "c.yaml"
    yaml_config.write_text("host_routing: {}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", code.replace(str(config), str(yaml_config))],
                          env=cloudinit_env("22.4"), cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert "yaml" in proc.stdout


# ---------------------------------------------------------------------------
# The fast paths of validation mean exactly what the slow ones do.

# Octet and prefix texts ipaddress may refuse, or read otherwise than they look.
ODD_PARTS = ["", "00", "01", "007", "+1", "-1", " 1", "1 ", "256", "999", "1_0", "0x1",
             "\u0663", "\uff11", "1\n"]
ODD_PREFIXES = ["", "00", "08", "024", "033", "33", "+8", "8.0", "255.255.0.0", "0.0.255.255",
                "\u0662\u0664", "24 ", "\n24"]


@st.composite
def ipv4_texts(draw: Any) -> str:
    """"a.b.c.d/n" forms: canonical ones, and ones with an odd octet, prefix or shape."""
    first = draw(st.sampled_from(["11", "100", "172", "192", "223", "10"]))
    octets = [first] + [draw(st.one_of(st.integers(0, 255).map(str), st.sampled_from(ODD_PARTS)))
                        for _ in range(draw(st.sampled_from([3, 3, 3, 2, 4])))]
    prefix = draw(st.one_of(st.integers(8, 32).map(str), st.sampled_from(ODD_PREFIXES)))
    return ".".join(octets) + draw(st.sampled_from(["/", "/", "/", "", "//"])) + prefix


def stdlib_reading(text: str) -> Any:
    """What ipaddress alone makes of a destination text: the network and whether it is
    written as ipaddress writes it, or the error it raises."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as err:
        return f"is not an IPv4 or IPv6 CIDR ({err})"
    if "/" not in text:
        return "has no prefix length"
    return net, str(net) == text


def parsed_reading(text: str) -> Any:
    """The same through config.parse: the route's network and whether no warning came,
    or the message of the destination's problem."""
    raw = routes({"destination": text, "gateway": "9.9.9.9", "dev": "eth0"})
    try:
        cfg = parse(raw)
    except ConfigError as err:
        [problem] = [p for p in err.problems if p.path.endswith(".destination")]
        return problem.message
    return cfg.routes[0].destination, not cfg.warnings


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(text=ipv4_texts())
def test_destinations_parse_exactly_as_ipaddress_reads_them(text: str) -> None:
    """The parser's shortcut for canonical IPv4 text against the standard library."""
    expected = stdlib_reading(text)
    assume(not (isinstance(expected, tuple) and expected[0].prefixlen < 8))
    assert parsed_reading(text) == expected


def test_negative_control_a_shortcut_misreading_leading_zeros_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An octet table that also reads "01" as 1 makes the comparison fail."""
    monkeypatch.setitem(config._OCTETS, "01", 1)
    text = "10.01.0.0/16"
    assert parsed_reading(text) != stdlib_reading(text)


def shape_values(node: Dict[str, Any]) -> Any:
    """Values for a schema node: mostly of its shape, some breaking it in every way
    the walker checks (types, unknown and missing keys, lengths, patterns, bounds,
    duplicates)."""
    wrong = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-1, 1),
                      st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2),
                      st.dictionaries(st.text(max_size=2), st.integers(0, 1), max_size=2))
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        required = node.get("required", [])
        fields = {k: shape_values(v) for k, v in props.items()}
        others = {"bogus": st.integers(), "": st.none()}
        right = st.fixed_dictionaries(  # the required keys there, or perhaps not
            {k: fields[k] for k in required},
            optional={**{k: v for k, v in fields.items() if k not in required}, **others}
        ) | st.fixed_dictionaries({}, optional={**fields, **others})
    elif kind == "array":
        right = st.lists(shape_values(node["items"]), max_size=4)
        if node.get("uniqueItems"):
            right = right | right.map(lambda xs: xs + xs[:1])
    elif kind == "string":
        good = st.from_regex(node["pattern"], fullmatch=True) if "pattern" in node else \
            st.text(max_size=8)
        right = good | st.text(max_size=8) | good.map(lambda s: s + "\n")
        if "maxLength" in node:
            right = right | st.text(min_size=node["maxLength"] + 1,
                                    max_size=node["maxLength"] + 2)
    elif kind == "integer":
        right = st.integers(node.get("minimum", -5) - 2, node.get("minimum", -5) + 3) | \
            st.integers(node.get("maximum", 5) - 3, node.get("maximum", 5) + 2)
    else:
        right = wrong
    return st.one_of(right, right, right, wrong)


def tightened(node: Any, limit: int = 3) -> Any:
    """The schema with every maxItems cut to ``limit``, so small lists reach it."""
    if isinstance(node, dict):
        return {k: (min(v, limit) if k == "maxItems" else tightened(v, limit))
                for k, v in node.items()}
    return node


TIGHT_SCHEMA = tightened(schema.HOST_ROUTING_SCHEMA)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the schema-wide strategy
@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(value=shape_values(schema.HOST_ROUTING_SCHEMA), tight=shape_values(TIGHT_SCHEMA))
def test_shape_shortcut_finds_what_the_walker_finds(value: Any, tight: Any) -> None:
    """check_shape skips the walker for values its shortcut (``_compile``) finds clean:
    the walker itself, unchanged, must then find nothing either."""
    for raw, node in ((value, schema.HOST_ROUTING_SCHEMA), (tight, TIGHT_SCHEMA)):
        assert schema.check_shape(raw, node) == list(schema._walk(raw, node, "host_routing"))


def test_negative_control_a_shortcut_blind_to_lengths_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgetting maxLength in the shortcut makes check_shape miss what the walker sees."""
    compile_ = schema._compile
    monkeypatch.setattr(schema, "_compile", lambda node: compile_(
        {k: v for k, v in node.items() if k != "maxLength"}))
    raw = routes({"destination": "1" * 70})
    assert schema.check_shape(raw) != list(schema._walk(raw, schema.HOST_ROUTING_SCHEMA,
                                                        "host_routing"))
