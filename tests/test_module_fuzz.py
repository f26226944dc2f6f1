"""Fuzz ``handle()`` with YAML-ish values: every run ends in one of the two end states.

The inputs are what cloud-init's YAML can hand the module, and worse: int,
date, bytes, None, float and bool keys; recursive structures (an anchor that
contains itself); 4,000-digit integers; nesting 20,000 deep; the right keys with
wrong types at every path; and near-valid sections mixing good and bad values.
Each run is checked from the files it left (``module_support``):

* no exception but ConfigError (so no traceback in cloud-init's log);
* no exception: a valid plan is installed, exactly as the units will read it;
* ConfigError: if ``route_overlap.mode`` was a STRICT spelling, the node failed
  closed; if no STRICT appears anywhere, nothing was written or called;
  otherwise one of those two, complete.

Deterministic in CI: a fixed seed (``derandomize``) and 2,000 examples.
``HR_FUZZ_EXAMPLES=50000 tox -e pyroute2-07 -- tests/test_module_fuzz.py`` runs
longer locally (the README's "Tests" says so).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any, Dict

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from module_support import Systemctl, end_state, run_handle

EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", "2000"))
# Roots on tmpfs when there is one: the module fsyncs every file it writes.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None

STRICTS = ["STRICT", "strict", "Strict", " STRICT ", "STRICT\n"]
MODES = [*STRICTS, "WARN", "warn", "block", "", "STRICTLY"]
CIDRS = ["10.0.5.0/24", "10.0.5.1/24", "fd00:5::/64", "0.0.0.0/0", "::/0", "127.0.0.0/8",
         "224.0.0.0/4", "fe80::%eth0/64", "fe80::/64", "169.254.169.254/32", "10.0.3/24",
         "10.0.5.0/33", "240.0.0.0/4", "::ffff:0:0/96", "255.255.255.255/32", "10.0.0.0"]
GATEWAYS = ["10.1.0.1", "0.0.0.0", "::", "127.0.0.1", "fe80::1", "::ffff:10.1.0.1",
            "10.0.5.1", "224.0.0.1", "not-an-ip", "fe80::1%eth0", "fd00::1"]
DEVS = ["eth0", "ib0", "", "eth0;reboot", "x" * 16, "eth0\n"]
UNITS = ["systemd-nspawn@.service", "kubelet.service", "sysinit.target", "docker.socket",
         "hostrouting-guard.service", "bad name", "../x.service", "cloud-init.service",
         "machines.target", "x.service\n"]
KEYS = ["static_routes", "route_overlap", "gate_units", "guard", "azure", "enabled",
        "routes", "destination", "gateway", "dev", "metric", "mode", "expected_cidrs",
        "auto_mitigate", "prometheus_textfile", "suggest", "route_overlp"]

scalars = st.one_of(
    st.sampled_from(MODES + CIDRS + GATEWAYS + DEVS + UNITS),
    st.text(max_size=12),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([10**4000, -(10**300), 2**32, 4294967295, 0]),
    st.booleans(), st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
    st.dates(), st.datetimes(),
)
keys = st.one_of(
    st.sampled_from(KEYS), st.text(max_size=8), st.integers(-5, 10**30), st.dates(),
    st.none(), st.booleans(), st.binary(max_size=4), st.floats(allow_nan=False),
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def _or_anything(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value, sometimes any value at all (wrong types at every path)."""
    return st.one_of(good, good, good, anything)


route = st.fixed_dictionaries({}, optional={
    "destination": _or_anything(st.sampled_from(CIDRS)),
    "gateway": _or_anything(st.sampled_from(GATEWAYS)),
    "dev": _or_anything(st.sampled_from(DEVS)),
    "metric": _or_anything(st.sampled_from([0, 100, -1, 2**32, 4294967295])),
    "destinaton": anything,
})
section = st.fixed_dictionaries({}, optional={
    "static_routes": _or_anything(st.fixed_dictionaries({}, optional={
        "enabled": _or_anything(st.booleans()),
        "routes": _or_anything(st.lists(route, max_size=4)),
    })),
    "route_overlap": _or_anything(st.fixed_dictionaries({}, optional={
        "mode": _or_anything(st.sampled_from(MODES)),
        "expected_cidrs": _or_anything(st.lists(st.sampled_from(CIDRS), max_size=4)),
    })),
    "gate_units": _or_anything(st.lists(st.sampled_from(UNITS), max_size=3)),
    "guard": _or_anything(st.fixed_dictionaries({}, optional={
        "enabled": _or_anything(st.booleans()),
        "auto_mitigate": _or_anything(st.booleans()),
        "prometheus_textfile": _or_anything(st.sampled_from(
            ["/var/lib/x.prom", "/a/../b.prom", "rel.prom"])),
    })),
    "azure": _or_anything(st.fixed_dictionaries({}, optional={
        "suggest": _or_anything(st.booleans())})),
})


def _hostile(value: Any, how: str) -> Any:
    """Make a section recursive, deep, or carry a non-string key."""
    if how == "recursive" and isinstance(value, dict):
        target = value.get("route_overlap") if isinstance(value.get("route_overlap"), dict) \
            else value
        target["loop"] = value
    elif how == "deep" and isinstance(value, dict):
        deep: Any = "10.0.5.0/24"
        for _ in range(20_000):
            deep = [deep]
        value["gate_units"] = deep
    elif how == "odd-key" and isinstance(value, dict):
        value[datetime.date(2024, 1, 2)] = 1
        value[7] = b"x"
    return value


def _strict(value: Dict[Any, Any], mode: str) -> Dict[Any, Any]:
    """The same section asking for STRICT, so the fail-closed path is hit often."""
    overlap = value.get("route_overlap")
    value["route_overlap"] = {**(overlap if isinstance(overlap, dict) else {}), "mode": mode}
    return value


hostile = st.builds(_hostile, section, st.sampled_from(["none", "recursive", "deep",
                                                        "odd-key"]))
host_routing = st.one_of(
    st.builds(_strict, hostile, st.sampled_from(STRICTS)),
    hostile,
    section,
    anything,
)
configs = st.one_of(
    st.builds(lambda hr: {"host_routing": hr}, host_routing),
    st.builds(lambda hr, other: {"host_routing": hr, "runcmd": other}, host_routing, anything),
    st.dictionaries(keys, anything, max_size=3),
)


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(configs)
def test_handle_ends_installed_or_invalid_and_strict_fails_closed(cfg: Dict[Any, Any]) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH, prefix="hr-fuzz-") as root:
        calls = Systemctl()
        event(end_state(cfg, root, calls, run_handle(cfg, root, calls)))
