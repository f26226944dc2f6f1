"""``handle()`` in-process: every path ends installed, or reported invalid (and, in
STRICT, failed closed).  Issue 10 section 2.

Each test calls the module the way cloud-init does (``module_support``), under
a temporary root, with ``systemctl`` as the one stand-in.  Where the units'
reaction matters, the real command runs on the written config as a subprocess.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from cli_support import cli
from module_support import (
    CHECK,
    CONFIG,
    DROPIN,
    STATIC,
    SYSTEMD,
    Systemctl,
    assert_failed_closed,
    assert_installed,
    assert_untouched,
    fake_cloud,
    files,
    read,
    run_handle,
)

from cloudinit_hostrouting import module
from cloudinit_hostrouting.config import ConfigError, parse

STRICT_OK: Dict[str, Any] = {
    "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]},
    "static_routes": {"enabled": True, "routes": [{"destination": "10.0.5.0/24",
                                                   "gateway": "10.1.0.1"}]},
    "gate_units": ["systemd-nspawn@.service", "kubelet.service"],
}


def _recursive() -> Dict[str, Any]:
    loop: Dict[str, Any] = {"mode": "STRICT"}
    loop["self"] = loop
    return {"route_overlap": loop}


def _deep(depth: int) -> List[Any]:
    value: List[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# Invalid STRICT sections that broke the old fail-closed path (json.dumps of the
# raw input) or could: each must still fail closed, naming the problem.
HOSTILE_STRICT = [
    ("int-key", {"route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]},
                 1: "x"}, "host_routing.1"),
    ("date-key", {"route_overlap": {"mode": "STRICT"}, datetime.date(2024, 1, 2): "x"},
     "host_routing.2024-01-02"),
    ("none-key", {"route_overlap": {"mode": "STRICT"}, None: 1}, "host_routing.None"),
    ("bytes-value", {"route_overlap": {"mode": "STRICT"}, "gate_units": [b"kubelet"]},
     "host_routing.gate_units[0]"),
    ("recursive", _recursive(), "host_routing.route_overlap.self"),
    ("huge-int", {"route_overlap": {"mode": "STRICT"},
                  "static_routes": {"enabled": True, "routes": [{"destination": 10**5000}]}},
     "bit integer"),
    ("deep", {"route_overlap": {"mode": "STRICT", "expected_cidrs": _deep(20_000)}},
     "host_routing.route_overlap.expected_cidrs[0]"),
    ("typo-in-section", {"route_overlp": {"mode": "STRICT"}}, "host_routing.route_overlp"),
    ("mode-in-list", {"route_overlap": {"mode": ["strict"]}}, "host_routing.route_overlap.mode"),
    ("strict-padded", {"route_overlap": {"mode": " Strict\n"}},
     "host_routing.route_overlap.mode"),
    ("bad-route", {**STRICT_OK, "static_routes": {"enabled": True, "routes": [
        {"destination": "10.0.5.0/24", "gateway": "not-an-ip"}]}},
     "host_routing.static_routes.routes[0].gateway"),
    ("default-route", {**STRICT_OK, "static_routes": {"enabled": True, "routes": [
        {"destination": "0.0.0.0/0"}]}}, "default route"),
    ("70k-routes", {"route_overlap": {"mode": "STRICT"},
                    "static_routes": {"enabled": True,
                                      "routes": [{"destination": "10.0.0.0/24"}] * 70_000}},
     "more than the limit"),
]


@pytest.mark.parametrize(("raw", "needle"), [c[1:] for c in HOSTILE_STRICT],
                         ids=[c[0] for c in HOSTILE_STRICT])
def test_invalid_strict_fails_closed_whatever_the_input(tmp_path: Path, raw: Any,
                                                        needle: str) -> None:
    """Reported invalid (ConfigError, for cloud-init's status), and failed closed."""
    calls = Systemctl()
    err = run_handle({"host_routing": raw}, str(tmp_path), calls)
    assert isinstance(err, ConfigError), repr(err)
    assert needle in str(err)
    message = assert_failed_closed(str(tmp_path), calls.calls, [needle])
    assert calls.calls[1] == ["start", "--no-block", STATIC, CHECK]
    assert len(message) < 6000, "the stored error is capped"


def test_the_units_fail_every_boot_with_the_stored_message(tmp_path: Path) -> None:
    """What ExecStart runs, on the failed-closed config: exit 2, the same message, no
    traceback, no verdict but "unknown" with that message (check-overlap) and no netlink
    work (a namespace that does not exist would fail differently)."""
    raw = HOSTILE_STRICT[0][1]
    assert isinstance(run_handle({"host_routing": raw}, str(tmp_path), Systemctl()),
                      ConfigError)
    config = str(tmp_path / CONFIG)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for command in (["apply-routes"], ["check-overlap", "--run-dir", str(run_dir)]):
        proc = cli(*command, "--config", config, "--wait", "0", "--netns", "hr-no-such-ns")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "host_routing.1: unknown key" in proc.stderr
        assert "failed closed" in proc.stderr or "fails closed" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["route-overlap.unknown", "status.json"]
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["ok"]) == ("unknown", False)
    assert "host_routing.1: unknown key" in status["reason"]


def test_valid_gate_units_of_an_invalid_strict_section_are_kept(tmp_path: Path) -> None:
    """A typo elsewhere must not ungate kubelet; the invalid gate entries are dropped."""
    raw = {"route_overlap": {"mode": "STRICT", "expected_cidrz": []},
           "gate_units": ["kubelet.service", "bad name", "sysinit.target", 7]}
    calls = Systemctl()
    assert isinstance(run_handle({"host_routing": raw}, str(tmp_path), calls), ConfigError)
    assert_failed_closed(str(tmp_path), calls.calls)
    assert [p for p in files(str(tmp_path)) if p.endswith(DROPIN)] == [
        f"{SYSTEMD}/kubelet.service.d/{DROPIN}"]


@pytest.mark.parametrize("gates", [[], ["bad name"], "kubelet.service"])
def test_an_invalid_strict_section_without_usable_gates_gates_the_default(
        tmp_path: Path, gates: Any) -> None:
    calls = Systemctl()
    raw = {"route_overlap": {"mode": "STRICT"}, "gate_units": gates, "x": 1}
    assert isinstance(run_handle({"host_routing": raw}, str(tmp_path), calls), ConfigError)
    assert_failed_closed(str(tmp_path), calls.calls)
    assert os.path.exists(tmp_path / SYSTEMD / f"systemd-nspawn@.service.d/{DROPIN}")


@pytest.mark.parametrize("raw", [
    None, [], "WARN", {"route_overlap": {"mode": "WARN"}, 1: "x"},
    {"static_routes": {"enabled": True, "routes": [{"destination": "127.0.0.0/8"}]}},
    _deep(5000),
], ids=["null", "list", "string", "warn-int-key", "warn-loopback", "deep-list"])
def test_invalid_without_strict_writes_nothing(tmp_path: Path, raw: Any) -> None:
    """Reported invalid, and not a file or a systemctl call: WARN keeps a running node.
    ``host_routing: null`` included: validate calls it an error, so boot does too."""
    calls = Systemctl()
    err = run_handle({"host_routing": raw}, str(tmp_path), calls)
    assert isinstance(err, ConfigError), repr(err)
    assert str(err).startswith("invalid host_routing")
    assert_untouched(str(tmp_path), calls.calls)


def test_no_host_routing_key_is_nothing_to_do(tmp_path: Path) -> None:
    calls = Systemctl()
    assert run_handle({"runcmd": ["true"]}, str(tmp_path), calls) is None
    assert_untouched(str(tmp_path), calls.calls)


@pytest.mark.parametrize("mode", ["STRICT", "WARN"])
def test_valid_config_is_installed_once(tmp_path: Path, mode: str) -> None:
    """End state 1, and a second run on the same tree rewrites and restarts nothing."""
    raw = {**STRICT_OK, "route_overlap": {"mode": mode, "expected_cidrs": ["10.0.5.0/24"]}}
    calls = Systemctl()
    assert run_handle({"host_routing": raw}, str(tmp_path), calls) is None
    assert_installed(str(tmp_path), parse(raw), calls.calls)
    assert len(calls.calls) == 2
    again = Systemctl()
    assert run_handle({"host_routing": raw}, str(tmp_path), again) is None
    assert again.calls == []


def test_cloudinit_22_4_positional_call(tmp_path: Path) -> None:
    """22.4 passes (name, cfg, cloud, log, args) positionally: the same result."""
    import logging

    calls = Systemctl()
    module.handle("host_routing", {"host_routing": STRICT_OK}, fake_cloud(),
                  logging.getLogger("test"), [], root=str(tmp_path), systemctl=calls)
    assert_installed(str(tmp_path), parse(STRICT_OK), calls.calls)


def test_an_invalid_config_after_a_valid_one_fails_closed_in_place(tmp_path: Path) -> None:
    """A new instance's invalid STRICT data over an old valid install: the old config
    must not survive for the units to pass on."""
    assert run_handle({"host_routing": STRICT_OK}, str(tmp_path), Systemctl()) is None
    calls = Systemctl()
    bad = {**STRICT_OK, "gate_units": ["kubelet.service"], 1: 2}
    assert isinstance(run_handle({"host_routing": bad}, str(tmp_path), calls), ConfigError)
    assert_failed_closed(str(tmp_path), calls.calls, ["host_routing.1"])
    assert not os.path.exists(tmp_path / SYSTEMD / f"systemd-nspawn@.service.d/{DROPIN}")


# ---------------------------------------------------------------------------
# I/O failures part-way through a STRICT install.


@pytest.mark.parametrize("in_the_way", [
    "etc/systemd/system/multi-user.target.wants",  # the last entries of the plan
    "etc/cloudinit-hostrouting",  # the config directory
    "etc/systemd/system/systemd-nspawn@.service.d",  # the first entry: a gate drop-in
])
def test_a_strict_plan_that_cannot_be_written_blocks_the_gates_for_this_boot(
        tmp_path: Path, in_the_way: str) -> None:
    """A file where one of our directories must go: apply_plan writes nothing under /etc
    (all or nothing), so no drop-in of ours exists there.  STRICT must not fail open: a
    runtime drop-in under /run/systemd/system gives every gated unit an assertion that
    fails, systemd is reloaded, and the error is raised (cloud-init: error)."""
    blocker = tmp_path / in_the_way
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way\n")
    before = files(str(tmp_path))
    calls = Systemctl()
    err = run_handle({"host_routing": STRICT_OK}, str(tmp_path), calls)
    assert isinstance(err, (OSError, ValueError)) and not isinstance(err, ConfigError), err
    assert [p for p in files(str(tmp_path)) if p.startswith("etc/")] == \
        [p for p in before if p.startswith("etc/")], "nothing partial under /etc"
    for unit in STRICT_OK["gate_units"]:
        text = read(str(tmp_path), f"run/systemd/system/{unit}.d/{DROPIN}")
        assert f"AssertPathExists={module.RELEASE_PATH}\n" in text
    assert calls.calls == [["daemon-reload"]]


def test_the_runtime_block_is_an_assertion_systemd_fails(tmp_path: Path) -> None:
    """The runtime drop-in's assertion, judged by systemd's own evaluator
    (``systemd-analyze condition``): it fails on this host, where the release path does
    not exist; the same assertion on a path that exists passes (negative control)."""
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/multi-user.target.wants").write_text("in the way\n")
    run_handle({"host_routing": STRICT_OK}, str(tmp_path), Systemctl())
    unit = STRICT_OK["gate_units"][0]
    text = read(str(tmp_path), f"run/systemd/system/{unit}.d/{DROPIN}")
    asserts = [line for line in text.splitlines() if line.startswith("Assert")]
    assert asserts == [f"AssertPathExists={module.RELEASE_PATH}"]
    assert not os.path.exists(module.RELEASE_PATH)
    assert _systemd_condition(asserts) == 1
    assert _systemd_condition(["AssertPathExists=" + str(tmp_path)]) == 0


def _systemd_condition(lines: List[str]) -> int:
    proc = subprocess.run(["systemd-analyze", "condition", *lines], capture_output=True,
                          text=True, timeout=30, check=False)
    return proc.returncode


def test_every_prefix_of_a_strict_plan_is_ordered_to_fail_closed(tmp_path: Path) -> None:
    """For each k, the first k writes of the real plan: no unit of ours without its
    config, and nothing but drop-ins until every drop-in is written."""
    from cloudinit_hostrouting.effects import apply_plan
    from cloudinit_hostrouting.render import plan

    host = parse({**STRICT_OK, "guard": {"enabled": True}})
    entries = plan(host)
    dropins = {f"{SYSTEMD}/{u}.d/{DROPIN}" for u in host.gate_units}
    ours = {f"{SYSTEMD}/{u}" for u in (STATIC, CHECK, "hostrouting-guard.service")}
    for k in range(1, len(entries) + 1):
        root = tmp_path / f"k{k}"
        apply_plan(str(root), entries[:k])
        written = set(files(str(root))) - {"etc/cloudinit-hostrouting/manifest.json"}
        if written & ours:
            assert CONFIG in written, (k, sorted(written))
        if written - dropins:
            assert dropins <= written, (k, sorted(written))


def test_an_interpreter_unfit_for_execstart_fails_closed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """plan() refuses such a path; in STRICT the drop-ins and the error config still go in."""
    monkeypatch.setattr(sys, "executable", "/opt/my python/bin/python3")
    calls = Systemctl()
    err = run_handle({"host_routing": STRICT_OK}, str(tmp_path), calls)
    assert isinstance(err, ValueError) and "ExecStart" in str(err)
    assert_failed_closed(str(tmp_path), calls.calls, ["ExecStart"])
    assert f"{SYSTEMD}/{STATIC}" not in files(str(tmp_path))


def test_a_bug_in_the_checks_still_fails_closed(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: parse() raising something unexpected is an invalid config."""
    def broken(raw: Any) -> Any:
        raise KeyError("simulated bug")

    monkeypatch.setattr(module, "parse", broken)
    calls = Systemctl()
    err = run_handle({"host_routing": STRICT_OK}, str(tmp_path), calls)
    assert isinstance(err, ConfigError) and "could not be checked (KeyError)" in str(err)
    assert_failed_closed(str(tmp_path), calls.calls, ["could not be checked"])


def test_systemctl_failing_after_a_strict_install_is_reported(tmp_path: Path) -> None:
    """The files are complete (next boot gates); this run raises for cloud-init's status."""
    calls = Systemctl(fail_on="daemon-reload")
    err = run_handle({"host_routing": STRICT_OK}, str(tmp_path), calls)
    assert isinstance(err, RuntimeError)
    assert parse(STRICT_OK).to_json() == read(str(tmp_path), CONFIG)


def test_yaml_anchors_from_user_data_reach_handle_intact(tmp_path: Path) -> None:
    """cloud-init's own YAML loading (safe_load) keeps a recursive anchor; handle copes."""
    raw = yaml.safe_load("host_routing: &a\n  route_overlap: {mode: STRICT}\n  me: *a\n")
    calls = Systemctl()
    assert isinstance(run_handle(raw, str(tmp_path), calls), ConfigError)
    assert_failed_closed(str(tmp_path), calls.calls, ["host_routing.me"])
