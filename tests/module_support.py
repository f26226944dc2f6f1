"""Calling the module's ``handle()`` in-process, as cloud-init's own module tests do.

A real ``cloudinit.cloud.Cloud`` (empty: our module reads nothing from it) is
passed with the config, and ``handle`` writes under a temporary root.  The one
thing stood in is ``systemctl``: there is no systemd manager in this sandbox
to reload or start units, so a recorder takes its calls.  The two end states
every run must reach are checked from the files alone, with the package's own
loader and the units' own command, not with the code that wrote them.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence

from cloudinit.cloud import Cloud

from cloudinit_hostrouting.config import ConfigError, HostRouting, load_file
from cloudinit_hostrouting.module import handle

CONFIG = "etc/cloudinit-hostrouting/host-routing.json"
SYSTEMD = "etc/systemd/system"
STATIC = "hostrouting-static-routes.service"
CHECK = "hostrouting-route-overlap.service"
DROPIN = "50-hostrouting.conf"
# Nothing the module does may reach the network: an IMDS that refuses at once.
DEAD_IMDS = "http://127.0.0.1:9/metadata/instance"


class Systemctl:
    """Records the systemctl calls the module makes (the one stand-in)."""

    def __init__(self, fail_on: Optional[str] = None) -> None:
        self.calls: List[List[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))
        if self.fail_on and self.fail_on in argv:
            raise RuntimeError(f"systemctl {' '.join(argv)} failed (1)")


def fake_cloud() -> Cloud:
    return Cloud(datasource=None, paths=None, cfg={}, distro=None, runners=None)  # type: ignore[arg-type]


def run_handle(cfg: Any, root: str, systemctl: Systemctl) -> Optional[BaseException]:
    """``handle`` as cloud-init 25.1 calls it (keywords); the exception it raised, if any."""
    try:
        handle(name="host_routing", cfg=cfg, cloud=fake_cloud(), args=[], root=root,
               systemctl=systemctl, imds_url=DEAD_IMDS, imds_deadline=0.0)
    except Exception as err:  # the caller asserts which
        return err
    return None


def files(root: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel), encoding="utf-8") as handle:
        return handle.read()


def gate_dropins(root: str) -> List[str]:
    """The gated units: every ``<unit>.d/50-hostrouting.conf`` under root."""
    return sorted(p.split("/")[-2][:-2] for p in files(root)
                  if p.startswith(SYSTEMD + "/") and p.endswith(".d/" + DROPIN))


def assert_installed(root: str, host: HostRouting, calls: List[List[str]]) -> None:
    """End state 1: a valid plan, as the units will read it, and the units queued."""
    loaded = load_file(os.path.join(root, CONFIG))
    assert loaded.to_json() == read(root, CONFIG) == host.to_json()
    assert gate_dropins(root) == sorted(host.gate_units)
    for unit in host.gate_units:
        text = read(root, f"{SYSTEMD}/{unit}.d/{DROPIN}")
        assert (f"Requires={STATIC} {CHECK}\n" in text) is host.strict
        assert f"After={STATIC} {CHECK}\n" in text
    for unit in (STATIC, CHECK):
        assert f"--config /{CONFIG}" in read(root, f"{SYSTEMD}/{unit}")
        assert os.readlink(os.path.join(root, SYSTEMD, "multi-user.target.wants", unit)) \
            == f"/{SYSTEMD}/{unit}"
    if calls:  # empty only when an identical plan was already there
        assert calls[0] == ["daemon-reload"]
        assert calls[1][:2] == ["start", "--no-block"] and {STATIC, CHECK} <= set(calls[1])


def assert_failed_closed(root: str, calls: List[List[str]],
                         expect_in_error: Sequence[str] = ()) -> str:
    """End state 2 for STRICT: every gate Requires= both units, and both fail on the config.

    Returns the error the units will print, after checking it names ``expect_in_error``.
    """
    gated = gate_dropins(root)
    assert gated, "failing closed must gate something"
    for unit in gated:
        assert f"Requires={STATIC} {CHECK}\n" in read(root, f"{SYSTEMD}/{unit}.d/{DROPIN}")
    try:
        load_file(os.path.join(root, CONFIG))
    except ConfigError as err:
        message = str(err)
    else:
        raise AssertionError("the failed-closed config loaded as valid")
    assert json.loads(read(root, CONFIG)), "the failed-closed config must itself be JSON"
    for needle in expect_in_error:
        assert needle in message, message
    assert calls[:1] == [["daemon-reload"]], calls
    return message


def assert_untouched(root: str, calls: List[List[str]]) -> None:
    """End state 2 for WARN (or no STRICT asked): nothing written, systemctl never called."""
    assert files(root) == [], files(root)
    assert calls == []


def mode_says_strict(raw: Any) -> bool:
    """``route_overlap.mode`` is a STRICT spelling: the user certainly asked for STRICT."""
    overlap = raw.get("route_overlap") if isinstance(raw, dict) else None
    mode = overlap.get("mode") if isinstance(overlap, dict) else None
    return isinstance(mode, str) and mode.strip().upper() == "STRICT"


def any_strict(value: Any, depth: int = 6, seen: Any = None) -> bool:
    """Whether the word STRICT appears as a string anywhere (cycle-safe, bounded)."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        return "STRICT" in value.upper()
    if depth == 0 or id(value) in seen:
        return False
    if isinstance(value, (dict, list)):
        seen.add(id(value))
        items: List[Any] = list(value.values()) if isinstance(value, dict) else value
        return any(any_strict(v, depth - 1, seen) for v in items[:50])
    return False


def end_state(cfg: Any, root: str, calls: Systemctl, err: Optional[BaseException]) -> str:
    """Assert one of the two end states for this run; return which, for statistics.

    No exception but ConfigError; none: a valid plan installed; ConfigError:
    failed closed if ``route_overlap.mode`` said STRICT, untouched if no STRICT
    appears anywhere, and otherwise one of the two, complete.
    """
    from cloudinit_hostrouting.config import parse

    if not isinstance(cfg, dict) or "host_routing" not in cfg:
        assert err is None, repr(err)
        assert_untouched(root, calls.calls)
        return "no host_routing"
    raw = cfg["host_routing"]
    if err is None:
        assert_installed(root, parse(raw), calls.calls)
        return "installed"
    assert isinstance(err, ConfigError), f"{type(err).__name__}: {err}"
    assert str(err).startswith("invalid host_routing")
    if mode_says_strict(raw):
        assert_failed_closed(root, calls.calls)
        return "invalid, mode STRICT: failed closed"
    if not any_strict(raw):
        assert_untouched(root, calls.calls)
        return "invalid, no STRICT anywhere: untouched"
    if calls.calls:
        assert_failed_closed(root, calls.calls)
        return "invalid, STRICT elsewhere: failed closed"
    assert_untouched(root, calls.calls)
    return "invalid, STRICT elsewhere: untouched"
