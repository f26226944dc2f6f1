"""Host routing: gate units on correct routes past an InfiniBand /16.

cloud-init config module ``host_routing`` (imported through the top-level shim
``cc_host_routing``).  At an instance's first boot, in the init stage, it
validates ``host_routing``, writes two oneshot units and a drop-in per gated
unit, reloads systemd and queues the units without waiting for them.

Why the init stage and a non-blocking start: the init stage runs before
``sysinit.target``, so a gated unit's already-queued start job is still waiting
when our drop-in appears, and picks up its ``After=``/``Requires=`` on reload.
A blocking ``systemctl start`` from here would deadlock (our units wait for
``sysinit.target``, which waits for cloud-init).

Invalid config: nothing is written and the module raises, so cloud-init's
status shows our message, except when the user explicitly asked for STRICT.
Then the module fails closed: it writes the units and gates as usual, with the
raw config, so the check fails with the same message every boot and gated units
never start until the user-data is fixed.  STRICT means "never start unverified".
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, List

from cloudinit.settings import PER_INSTANCE

from .config import STRICT, ConfigError, HostRouting, parse
from .constants import CONFIG_PATH, RUN_DIR
from .effects import apply_plan, run
from .render import Entry, plan

LOG = logging.getLogger(__name__)


meta = {
    "id": "cc_host_routing",
    "name": "Host routing",
    "title": "Static routes and a route-overlap gate for InfiniBand hosts",
    "description": __doc__,
    "distros": ["all"],
    "frequency": PER_INSTANCE,
    "activate_by_schema_keys": ["host_routing"],
    "examples": [],
}


def handle(name: str, cfg: dict, cloud: Any, *legacy: Any, args: Any = None,
           **kwargs: Any) -> None:
    """Entry point for cloud-init 22.4 (positional, with log) and 25.1 (keywords).

    Taking the legacy ``log``/``args`` positionally through ``*legacy`` keeps
    25.1 from passing ``log=`` and logging a DEPRECATED line (which would turn
    its status into "degraded done").
    """
    raw = cfg.get("host_routing")
    if raw is None:
        LOG.debug("%s: no host_routing in config; nothing to do", name)
        return
    try:
        host = parse(raw)
    except ConfigError:
        if _asks_strict(raw):
            LOG.error("host_routing is invalid and asks for STRICT: failing closed, "
                      "gated units stay blocked until user-data is fixed")
            _install(fail_closed_plan(raw))
        raise
    for warning in host.warnings:
        LOG.warning("host_routing: %s", warning)
    _install(plan(host))
    if host.azure_suggest:
        _azure_suggest(raw)


def _install(entries: List[Entry]) -> None:
    """Write the plan under / and, if anything changed, queue the units."""
    changed = apply_plan("/", entries)
    if not changed:
        LOG.info("host_routing: units already up to date")
        return
    LOG.info("host_routing: wrote %s", ", ".join(changed))
    run(["systemctl", "daemon-reload"])
    enabled = [os.path.basename(e.path) for e in entries if e.link_to is not None]
    run(["systemctl", "start", "--no-block", *enabled])


def _asks_strict(raw: Any) -> bool:
    overlap = raw.get("route_overlap") if isinstance(raw, dict) else None
    mode = overlap.get("mode") if isinstance(overlap, dict) else None
    return isinstance(mode, str) and mode.strip().upper() == STRICT


def fail_closed_plan(raw: Any) -> List[Entry]:
    """The normal plan for a STRICT config, carrying the raw (invalid) input.

    Gate units are taken from the input where they are valid, else the default,
    so a typo elsewhere cannot leave the intended units ungated.
    """
    gates = raw.get("gate_units") if isinstance(raw, dict) else None
    try:
        gate_units = parse({"gate_units": gates, "route_overlap": {"mode": STRICT}}).gate_units
    except ConfigError:
        gate_units = HostRouting().gate_units
    entries = plan(HostRouting(mode=STRICT, gate_units=gate_units))
    text = json.dumps({"host_routing": raw}, indent=2, sort_keys=True, default=str) + "\n"
    return [Entry(CONFIG_PATH, text) if e.path == CONFIG_PATH else e for e in entries]


def _azure_suggest(raw: Any) -> None:
    """Opt-in IMDS suggestion at first boot; never fails the module."""
    from .azure import suggest_at_boot

    text = suggest_at_boot({"host_routing": raw}, RUN_DIR, 10.0, None)
    if text:
        LOG.info("host_routing: Azure suggestion (also in %s/azure-suggestion.yaml):\n%s",
                 RUN_DIR, text)
