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

Every run ends in one of two states.  Either a valid plan was installed, or
the config was reported invalid (the module raises, so cloud-init's status
shows our message) and nothing was written, except when the user asked for
STRICT: then the module fails closed.  It writes the units and STRICT gates as
usual, but the config file carries only the error text, so both units fail
with that message every boot and gated units never start until the user-data
is fixed.  Failing closed never depends on the raw input being serialisable
(non-string keys, recursive anchors, 5,000-digit integers), and an I/O error
part-way through a STRICT install still leaves the node failing closed.
``host_routing: null`` is invalid, as ``validate`` says, not silently skipped.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, List, Optional, Sequence

from cloudinit.settings import PER_INSTANCE

from .atomic import write_atomic
from .config import (
    DEFAULT_GATE_UNITS,
    STRICT,
    ConfigError,
    HostRouting,
    Problem,
    failed_closed_json,
    gate_unit_problem,
    parse,
)
from .constants import CONFIG_PATH, DROPIN_NAME, RUN_DIR, UNIT_DIR
from .effects import apply_plan, run
from .render import Entry, gate_dropin, plan
from .rootfs import check_root, resolve
from .schema import MAX_GATE_UNITS

LOG = logging.getLogger(__name__)
KEY = "host_routing"

meta = {
    "id": "cc_host_routing",
    "name": "Host routing",
    "title": "Static routes and a route-overlap gate for InfiniBand hosts",
    "description": __doc__,
    "distros": ["all"],
    "frequency": PER_INSTANCE,
    "activate_by_schema_keys": [KEY],
    "examples": [],
}

Systemctl = Callable[[Sequence[str]], None]


def run_systemctl(argv: Sequence[str]) -> None:
    """The real ``systemctl``; tests pass a stand-in."""
    run(["systemctl", *argv])


def handle(name: str, cfg: dict, cloud: Any, *legacy: Any, args: Any = None,
           root: str = "/", systemctl: Systemctl = run_systemctl,
           imds_url: Optional[str] = None, imds_deadline: float = 10.0,
           **kwargs: Any) -> None:
    """Entry point for cloud-init 22.4 (positional, with log) and 25.1 (keywords).

    Taking the legacy ``log``/``args`` positionally through ``*legacy`` keeps
    25.1 from passing ``log=`` and logging a DEPRECATED line (which would turn
    its status into "degraded done"; it does so for exactly five parameters).
    cloud-init never passes the keyword-only rest: tests do, to run the whole
    module under a temporary ``root`` with a stand-in ``systemctl`` and an IMDS
    on loopback.
    """
    configure(cfg, root, systemctl, imds_url, imds_deadline, cloud)


def configure(cfg: Any, root: str, systemctl: Systemctl = run_systemctl,
              imds_url: Optional[str] = None, imds_deadline: float = 10.0,
              cloud: Any = None) -> Optional[HostRouting]:
    """Everything ``handle`` does, under ``root``; returns the installed config.

    Returns None when ``cfg`` has no ``host_routing`` key (cloud-init's
    ``activate_by_schema_keys`` normally skips the module then).  Raises
    ConfigError when the section is invalid, after failing closed if it asked
    for STRICT; re-raises an install failure after failing closed in STRICT.
    """
    if not isinstance(cfg, dict) or KEY not in cfg:
        LOG.debug("no %s in config; nothing to do", KEY)
        return None
    raw = cfg[KEY]
    try:
        host = _parse(raw)
    except ConfigError as err:
        if asks_strict(raw):
            LOG.error("host_routing is invalid and asks for STRICT: failing closed, "
                      "gated units stay blocked until user-data is fixed")
            _fail_closed(_gates_of(raw), err, root, systemctl)
        raise
    for warning in host.warnings:
        LOG.warning("host_routing: %s", warning)
    try:
        entries = plan(host)
    except ValueError as err:  # an interpreter path that cannot go into ExecStart=
        if host.strict:
            _fail_closed(host.gate_units, _error(str(err)), root, systemctl)
        raise
    _install(entries, root, systemctl, host.gate_units if host.strict else ())
    if host.azure_suggest:
        _azure_suggest(raw, root, imds_url, imds_deadline, cloud)
    return host


def _fail_closed(gate_units: Sequence[str], err: ConfigError, root: str,
                 systemctl: Systemctl) -> None:
    """Install the failed-closed plan; an I/O error here is logged, not raised,
    so the caller raises the config error, which is what the user must fix."""
    try:
        _install(fail_closed_plan(gate_units, err), root, systemctl, gate_units)
    except Exception as again:
        LOG.error("host_routing: failing closed was incomplete: %s", again)


def _parse(raw: Any) -> HostRouting:
    """``parse``, with any failure of ours turned into an invalid config.

    A bug in a check must not skip failing closed: to a STRICT user, a config
    we could not check is a config that is not valid.
    """
    try:
        return parse(raw)
    except ConfigError:
        raise
    except Exception as err:  # any bug of ours; BaseException (Ctrl-C) passes
        LOG.exception("host_routing: the config could not be checked")
        raise _error(f"could not be checked ({type(err).__name__}); please report "
                     "this") from err


def _error(message: str) -> ConfigError:
    return ConfigError([Problem(KEY, "<section>", message,
                                "Fix: correct host_routing and boot a new instance.")])


def asks_strict(raw: Any) -> bool:
    """Whether an invalid section shows the intent to be STRICT.

    Generous on purpose: any string value "STRICT" (any case, any spacing)
    within the first few levels counts, so a typo such as ``route_overlp:
    {mode: STRICT}`` or ``mode: [STRICT]`` still fails closed.  Bounded
    (depth and count) so recursive or huge input costs nothing.
    """
    budget = [10_000]

    def walk(value: Any, depth: int) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if isinstance(value, str):
            return len(value) < 64 and value.strip().upper() == STRICT
        if depth == 0:
            return False
        if isinstance(value, dict):
            return any(walk(v, depth - 1) for v in value.values())
        if isinstance(value, list):
            return any(walk(v, depth - 1) for v in value)
        return False

    return walk(raw, 3)


def _gates_of(raw: Any) -> List[str]:
    """The gate units of an invalid section that are themselves valid, else the default.

    So a typo elsewhere cannot leave the intended units ungated, and an empty
    or entirely broken list still gates the default.
    """
    gates = raw.get("gate_units") if isinstance(raw, dict) else None
    good: List[str] = []
    for i, unit in enumerate(gates[:MAX_GATE_UNITS] if isinstance(gates, list) else []):
        if gate_unit_problem(unit, f"{KEY}.gate_units[{i}]") is None and unit not in good:
            good.append(unit)
    return good or list(DEFAULT_GATE_UNITS)


def fail_closed_plan(gate_units: Sequence[str], err: ConfigError) -> List[Entry]:
    """The normal STRICT plan, but its config file holds only ``err``'s text.

    If even the units cannot be rendered (an interpreter path unfit for
    ExecStart=), the STRICT drop-ins alone still fail closed: ``Requires=`` on
    a unit that does not exist fails the gated start.
    """
    config = Entry(CONFIG_PATH, failed_closed_json(err))
    try:
        entries = plan(HostRouting(mode=STRICT, gate_units=tuple(gate_units)))
    except ValueError:
        return [*(Entry(f"{UNIT_DIR}/{unit}.d/{DROPIN_NAME}", gate_dropin(True))
                  for unit in gate_units), config]
    return [config if e.path == CONFIG_PATH else e for e in entries]


def _install(entries: List[Entry], root: str, systemctl: Systemctl,
             strict_gates: Sequence[str]) -> None:
    """Write the plan under ``root`` and, if anything changed, queue the units.

    ``apply_plan`` writes all or nothing.  When it writes nothing for a STRICT
    plan (a read-only or full /etc, a file where a directory must go), the
    gated units ``strict_gates`` are still blocked for this boot by
    ``_block_this_boot`` before the error is raised.
    """
    try:
        changed = apply_plan(root, entries)
    except Exception as err:
        if strict_gates:
            _block_this_boot(root, strict_gates, systemctl, err)
        raise
    if not changed:
        LOG.info("host_routing: units already up to date")
        return
    LOG.info("host_routing: wrote %s", ", ".join(changed))
    systemctl(["daemon-reload"])
    enabled = [os.path.basename(e.path) for e in entries if e.link_to is not None]
    if enabled:
        systemctl(["start", "--no-block", *enabled])


# The runtime drop-in of _block_this_boot asserts a path that only an administrator creates.
RELEASE_PATH = f"{RUN_DIR}/release-unverified-gates"
RUNTIME_UNIT_DIR = "/run/systemd/system"


def _block_this_boot(root: str, gates: Sequence[str], systemctl: Systemctl,
                     err: BaseException) -> None:
    """STRICT, but our units could not be written: keep the gated units from starting.

    A runtime drop-in (``/run/systemd/system``, a tmpfs that is writable when
    ``/etc`` is not) gives each gated unit an ``AssertPathExists=`` that fails,
    so its start job, queued or not, fails after the reload.  It lasts until
    reboot, and the module is not run again on this instance: the error in
    cloud-init's status says why and how to recover.  Every step may fail
    too; the caller raises ``err`` whatever happens here.
    """
    why = " ".join(str(err).split())[:200]
    text = (f"# Written by cloudinit-hostrouting: STRICT, but its units could not be written\n"
            f"# under /etc ({why}).\n"
            f"# Until reboot this unit does not start; create {RELEASE_PATH} to let it.\n"
            f"[Unit]\nAssertPathExists={RELEASE_PATH}\n")
    try:
        for unit in gates:
            write_atomic(_inside(root, f"{RUNTIME_UNIT_DIR}/{unit}.d/{DROPIN_NAME}"), text)
        systemctl(["daemon-reload"])
    except Exception as failure:  # nothing more can be done
        LOG.error("host_routing: could not block the gated units either: %s", failure)
        return
    LOG.error("host_routing: STRICT, and the units could not be written (%s): %s stay "
              "blocked until reboot (or until %s exists)", err, ", ".join(gates), RELEASE_PATH)


def _inside(root: str, path: str) -> str:
    """``path`` inside the image root, its symlinks followed as in a chroot (rootfs)."""
    return resolve(check_root(root), path)


def _azure_suggest(raw: Any, root: str, imds_url: Optional[str], deadline: float,
                   cloud: Any) -> None:
    """Opt-in suggestion at first boot; never fails the module.

    On Azure, cloud-init's datasource already holds the IMDS instance document
    (``azure.datasource_document`` says where, per version), so it is used
    rather than asking IMDS again; elsewhere the suggestion asks over HTTP.
    """
    from .azure import datasource_document, suggest_at_boot
    from .constants import KVP_POOL_PATH

    run_dir = _inside(root, RUN_DIR)
    document = None
    try:
        document = datasource_document(cloud)
    except Exception as err:  # a datasource we do not know: fall back to HTTP
        LOG.warning("host_routing: cannot read the datasource's IMDS document: %s", err)
    text = suggest_at_boot({KEY: raw}, run_dir, deadline, imds_url, document,
                           _inside(root, KVP_POOL_PATH))
    if text:
        LOG.info("host_routing: Azure suggestion (also in %s/azure-suggestion.yaml):\n%s",
                 run_dir, text)
