"""The ``cloudinit-hostrouting`` command: what the units run, and tools for humans.

Exit codes are a contract: 0 OK (overlaps in WARN mode included), 1 the job
failed (STRICT overlap, a route not installed, ``validate`` found errors),
2 usage or config error.  Heavy imports (pyroute2, YAML, cloud-init) happen
inside the subcommand that needs them, because the units sit on the boot path.
For the same reason the units' own command lines are parsed by hand
(``unit_args``) and argparse is imported only for everything else, including
every line the hand parser does not accept, so errors and ``--help`` are
argparse's.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import types

from . import __version__
from .config import ConfigError, HostRouting, load_file
from .constants import DEFAULT_WAIT_S, KVP_POOL_PATH, RUN_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from .overlap import Unknown, Verdict

OK, FAILED, USAGE = 0, 1, 2
MAX_WAIT_S = 3600.0  # the units' TimeoutStartSec= is far below this anyway
MAX_IMDS_TIMEOUT_S = 300.0


def _load(path: str) -> Tuple[Optional[HostRouting], str]:
    """The config in ``path``, or None and why, after printing why it cannot be used."""
    try:
        cfg = load_file(path)
    except OSError as err:
        problem = f"cannot read {path}: {err.strerror}"
    except ConfigError as err:
        problem = f"{path}: {err}"
    else:
        for warning in cfg.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return cfg, ""
    print(f"error: {problem}", file=sys.stderr)
    return None, problem


def _error(message: str) -> int:
    """One line on stderr for a usage or file-state problem; the usage exit code."""
    print(f"error: {message}", file=sys.stderr)
    return USAGE


def _dir_problem(option: str, directory: str, err: OSError) -> str:
    """Why ``directory`` (given as ``option``) cannot hold our files, and what to do."""
    where = err.filename if isinstance(err.filename, str) else directory
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = where  # the nearest thing that exists on the way there is in the way
        while blocker != os.path.dirname(blocker) and not os.path.lexists(blocker):
            blocker = os.path.dirname(blocker)
        what = ("is a file, not a directory" if blocker == directory
                else f"is under {blocker}, which is not a directory")
    elif err.errno == errno.EROFS:
        what = f"is on a read-only file system ({where})"
    elif err.errno in (errno.EACCES, errno.EPERM):
        what = f"is not writable ({where})"
    else:
        what = f"cannot be used: {err.strerror} ({where})"
    return f"{option} {directory} {what}. Fix: give {option} a writable directory"


def _seconds(high: float) -> Callable[[str], float]:
    """An argparse type: finite seconds from 0 to ``high``.

    ``float()`` alone accepts nan (every comparison false: checks pass) and inf
    (a wait that never ends), so both are refused here, with the range.
    """
    def parse(text: str) -> float:
        value = _seconds_value(text, high)
        if value is None:
            import argparse

            try:
                float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not a number of seconds") from None
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of seconds from 0 up to {high:g}")
        return value
    return parse


def _seconds_value(text: str, high: float) -> Optional[float]:
    """``text`` as finite seconds from 0 to ``high``, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= high else None


def _kernel(netns: Optional[str]) -> Any:
    """A netlink socket, or exit 2 with a one-line reason (no traceback in the journal)."""
    from .netlink import Kernel

    try:
        return Kernel(netns)
    except OSError as err:
        print(f"error: cannot open rtnetlink{' in ' + netns if netns else ''}: {err}",
              file=sys.stderr)
        raise SystemExit(USAGE) from err


def cmd_apply_routes(args: argparse.Namespace) -> int:
    from .netlink import FAILED as NOT_INSTALLED
    from .netlink import NOT_IN_EFFECT, REFUSED, UNCHANGED
    from .routes import Waiter, apply_routes

    cfg, _ = _load(args.config)
    if cfg is None:
        return USAGE
    if not cfg.routes:
        print("no static routes configured; nothing to do")
        return OK
    try:
        with _kernel(args.netns) as kernel:
            outcomes = apply_routes(cfg, kernel, Waiter(args.wait))
    except OSError as err:  # a netlink fault outside any one route: claim nothing as done
        print(f"error: talking to the kernel failed ({err}), so which routes took effect is "
              "not known. Fix: see the kernel log, then restart "
              "hostrouting-static-routes.service (a rerun installs or confirms each route)",
              file=sys.stderr)
        return FAILED
    labels = {REFUSED: "refused", NOT_INSTALLED: "failed", NOT_IN_EFFECT: "not in effect"}
    tally = {status: 0 for status in labels}
    for outcome in outcomes:
        if outcome.status == REFUSED:
            print(f"REFUSED: {outcome.error}", file=sys.stderr)
        elif outcome.status == NOT_INSTALLED:
            print(f"FAILED: {outcome.route.destination}: {outcome.error}", file=sys.stderr)
        elif outcome.status == NOT_IN_EFFECT:
            print(f"NOT IN EFFECT: {outcome.error}", file=sys.stderr)
        elif args.verbose:
            verb = "unchanged" if outcome.status == UNCHANGED else "installed"
            print(f"{verb}: {outcome.describe()}")
        if outcome.status in tally:
            tally[outcome.status] += 1
    print(f"{sum(o.installed for o in outcomes)} of {len(outcomes)} routes installed"
          + "".join(f", {n} {labels[s]}" for s, n in tally.items() if n))
    return FAILED if any(tally.values()) else OK


def cmd_check_overlap(args: argparse.Namespace) -> int:
    """Decide, or say "unknown" and why: never leave an earlier run's verdict in place."""
    from .overlap import Unknown, action_hint, check, clear_verdict, write_markers
    from .routes import Waiter

    try:
        clear_verdict(args.run_dir)
        write_markers(args.run_dir, Unknown(
            "check-overlap started but did not decide: it failed or was stopped; see its "
            "output (journalctl -u hostrouting-route-overlap.service)"))
    except OSError as err:
        return _error(_dir_problem("--run-dir", args.run_dir, err))
    cfg, problem = _load(args.config)
    if cfg is None:
        return _undecided(args, Unknown(problem))
    try:
        with _kernel(args.netns) as kernel:
            report = check(cfg, kernel, Waiter(args.wait), args.kvp_pool, args.root)
    except SystemExit:  # _kernel has printed why rtnetlink cannot be opened
        return _undecided(args, Unknown("cannot open rtnetlink", cfg.mode))
    except Exception as err:  # pyroute2 raises many types; any one means "not decided"
        problem = f"reading the kernel's routes failed: {type(err).__name__}: {err}"
        print(f"error: {problem}", file=sys.stderr)
        return _undecided(args, Unknown(problem, cfg.mode))
    try:
        write_markers(args.run_dir, report)
    except OSError as err:
        return _error(_dir_problem("--run-dir", args.run_dir, err))
    fmt = "json" if args.json else args.format
    if fmt != "text":
        code = _print_verdict(fmt, report)
        return code if fmt == "npd" else (OK if report.ok or not cfg.strict else FAILED)
    for line in report.ipoib.lines() if report.ipoib else []:
        print(line)
    for line in report.lines():
        print(line)
    for result in report.results:
        for finding in result.bad:
            print(f"{result.cidr}: {finding.region.describe()} goes via "
                  f"{finding.answer.ifname or finding.answer.kind} because of: "
                  f"{finding.culprit or 'unknown route'}")
    if report.ok:
        where = ", ".join(sorted({r.expected_if for r in report.results})) or "-"
        pending = report.ipoib is not None and report.ipoib.anticipating \
            and report.ipoib.state.pending
        print(f"OK: all {len(report.results)} expected CIDR(s) route via {where}"
              + (" (IPoIB routes to come included)" if pending else ""))
    else:
        print(action_hint(report))
    if report.ok or not cfg.strict:
        return OK
    return FAILED


def _print_verdict(fmt: str, verdict: Verdict) -> int:
    """Print a verdict as json, prometheus or npd; return NPD's status (0 otherwise)."""
    if fmt == "json":
        from .jsonio import dumps

        print(dumps(verdict.to_dict()))
    elif fmt == "prometheus":
        from .signals import prometheus_text

        print(prometheus_text(verdict), end="")
    elif fmt == "npd":
        from .signals import npd_result

        code, message = npd_result(verdict)
        print(message)
        return code
    return OK


def _undecided(args: argparse.Namespace, unknown: Unknown) -> int:
    """Record and print "unknown" (the reason is already on stderr); exit 2 in every mode.

    Non-zero in STRICT matters most: the check unit fails, so gated units stay blocked.
    """
    from .overlap import write_markers

    try:
        write_markers(args.run_dir, unknown)
    except OSError as err:
        print(f"error: {_dir_problem('--run-dir', args.run_dir, err)}", file=sys.stderr)
    fmt = "json" if args.json else args.format
    if fmt != "text":
        _print_verdict(fmt, unknown)
    return USAGE


def cmd_guard(args: argparse.Namespace) -> int:
    from .overlap import Unknown, clear_verdict, write_markers

    pending = Unknown("the guard started and has not decided yet")
    try:
        clear_verdict(args.run_dir)
        write_markers(args.run_dir, pending)
    except OSError as err:
        return _error(_dir_problem("--run-dir", args.run_dir, err))
    cfg, problem = _load(args.config)
    textfile = args.textfile or (cfg.prometheus_textfile if cfg else None)
    if textfile:
        from .atomic import write_atomic
        from .signals import prometheus_text

        try:
            write_atomic(textfile, prometheus_text(Unknown(problem) if cfg is None
                                                   else pending._replace(mode=cfg.mode)))
        except OSError as err:
            return _error(f"cannot write the textfile {textfile}: {err.strerror}. "
                          "Fix: give a writable path")
    if cfg is None:
        write_markers(args.run_dir, Unknown(problem))
        return USAGE
    from .guard import run

    return run(cfg, args.run_dir, textfile, log=lambda line: print(line, flush=True),
               pool_path=args.kvp_pool, root=args.root)


def cmd_azure_suggest(args: argparse.Namespace) -> int:
    from .azure import run

    return run(args)


def cmd_render(args: argparse.Namespace) -> int:
    from .render import plan

    cfg, _ = _load(args.config)
    if cfg is None:
        return USAGE
    try:
        entries = plan(cfg, args.python)
    except ValueError as err:
        return _error(f"--python: {err}")
    return _apply(args.root, entries)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _apply(args.root, [])


def _apply(root: str, entries: List[Any]) -> int:
    """render (entries) or uninstall (none) under ``root``: all of it, or a clear refusal."""
    from .effects import apply_plan

    try:
        changed = apply_plan(root, entries,
                             warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    except ValueError as err:  # RootError, ManifestError: the message names path and fix
        return _error(str(err))
    except OSError as err:
        return _error(_dir_problem("--root", root, err))
    for path in changed:
        print(f"{'wrote' if entries else 'removed'} {path}")
    if not entries and not changed:
        print("nothing of ours to remove")
    return OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_file

    bad = 0
    for path in args.files:
        errors, warnings = validate_file(path)
        for line in warnings:
            print(f"{path}: warning: {line}")
        for line in errors:
            print(f"{path}: error: {line}")
        if errors:
            bad += 1
        else:
            print(f"{path}: valid")
    return FAILED if bad else OK


def cmd_enable_module(args: argparse.Namespace) -> int:
    from .enable import disable, enable

    try:
        changed = disable(args.root) if args.undo else enable(args.root)
    except ValueError as err:  # RootError: names the path and the fix
        return _error(str(err))
    except OSError as err:
        return _error(_dir_problem("--root", args.root, err))
    print(changed)
    return OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import HOST_ROUTING_SCHEMA, markdown_reference

    if args.markdown:
        print(markdown_reference(), end="")
    else:
        import json

        print(json.dumps(HOST_ROUTING_SCHEMA, indent=2))
    return OK


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="cloudinit-hostrouting",
        description="Keep InfiniBand /16 routes from shadowing cluster CIDRs "
                    "(cloud-init module host_routing and the commands its units run).",
        epilog="Exit codes: 0 OK (WARN overlaps included), 1 job failed, 2 usage/config error.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    handlers: Dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, func: Callable[[argparse.Namespace], int],
            help_text: str) -> argparse.ArgumentParser:
        handlers[name] = func
        return sub.add_parser(name, help=help_text, description=help_text)

    def add_kernel_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, metavar="FILE",
                       help="YAML/JSON file with a top-level host_routing key")
        p.add_argument("--wait", type=_seconds(MAX_WAIT_S), default=float(DEFAULT_WAIT_S),
                       metavar="SECONDS",
                       help="the one budget for waiting: for a default route or interface "
                            "and (check-overlap) route_overlap.wait_for_ipoib, 0 to "
                            f"{MAX_WAIT_S:g} (default {DEFAULT_WAIT_S})")
        p.add_argument("--netns", metavar="NAME",
                       help="act inside this existing network namespace (tests, debugging)")

    def add_ipoib_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kvp-pool", default=KVP_POOL_PATH, metavar="PATH",
                       help="Hyper-V KVP pool holding IPoIB_Data (default "
                            f"{KVP_POOL_PATH})")
        p.add_argument("--root", default="/", metavar="DIR",
                       help="where etc/waagent.conf is looked up for anticipate_ipoib: "
                            "auto (default /)")

    p = add("apply-routes", cmd_apply_routes,
            "Install the configured static routes; a route that is not ours is never "
            "replaced (such a route is refused, naming both).")
    add_kernel_opts(p)
    p.add_argument("-v", "--verbose", action="store_true", help="print each installed route")

    p = add("check-overlap", cmd_check_overlap,
            "Check that every expected CIDR routes via the default interface.")
    add_kernel_opts(p)
    p.add_argument("--run-dir", default=RUN_DIR, metavar="DIR",
                   help=f"where markers and status.json go (default {RUN_DIR})")
    p.add_argument("--format", choices=("text", "json", "prometheus", "npd"), default="text",
                   help="stdout format: text (default), json (status.json), prometheus "
                        "(node_exporter textfile), npd (node-problem-detector custom plugin: "
                        "exit 0 OK, 1 overlap in any mode, 2 unknown)")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    add_ipoib_opts(p)

    p = add("guard", cmd_guard,
            "Watch rtnetlink events and keep routes, markers and metrics right (long-running).")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--run-dir", default=RUN_DIR, metavar="DIR")
    p.add_argument("--textfile", metavar="PATH",
                   help="node_exporter textfile to keep current (default: "
                        "host_routing.guard.prometheus_textfile)")
    add_ipoib_opts(p)

    p = add("render", cmd_render,
            "Write exactly what first boot writes, under DIR, without calling systemctl.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--root", required=True, metavar="DIR")
    p.add_argument("--python", metavar="PATH",
                   help="interpreter the units run (default: this one)")

    p = add("uninstall", cmd_uninstall,
            "Remove every file first boot (or render) wrote, as listed in its manifest; "
            "routes are not touched. Run systemctl daemon-reload afterwards on a live system.")
    p.add_argument("--root", default="/", metavar="DIR", help="image root (default /)")

    p = add("validate", cmd_validate,
            "Validate #cloud-config files with cloud-init's schema plus host_routing's.")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = add("enable-module", cmd_enable_module,
            "Add host_routing to the image's cloud_init_modules (idempotent).")
    p.add_argument("--root", default="/", metavar="DIR", help="image root (default /)")
    p.add_argument("--undo", action="store_true", help="remove what enable-module added")

    p = add("azure-suggest", cmd_azure_suggest,
            "Ask Azure IMDS for this VM's size and VNet subnet, run check-overlap's analysis "
            "(with the KVP IPoIB_Data routes to come), and print the host_routing block "
            "that makes it pass in STRICT: static routes via the VNet gateway for every "
            "shadowed part of the expected CIDRs. With --config, the rest of that "
            "config is kept. Exit 0 "
            "with a one-line answer for sizes without InfiniBand; 1 when IMDS cannot be "
            "reached in time; 2 for usage or config errors.")
    p.add_argument("--config", metavar="FILE",
                   help="YAML/JSON file with a top-level host_routing key: its "
                        "expected_cidrs are checked, and its routes, gate_units, guard "
                        "and other settings are kept in the block")
    p.add_argument("--expected-cidr", metavar="CIDR", action="append", default=[],
                   help="a CIDR that must route via the default interface (repeatable)")
    p.add_argument("--imds-url", metavar="URL",
                   help="instance metadata URL (default: Azure's, "
                        "http://169.254.169.254/metadata/instance)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml",
                   help="yaml: a #cloud-config document with the reasons as comments; "
                        "json: the same user-data document as JSON, nothing else "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=_seconds(MAX_IMDS_TIMEOUT_S), default=10.0,
                   metavar="SECONDS",
                   help="overall deadline for IMDS, retries included, above 0 up to "
                        f"{MAX_IMDS_TIMEOUT_S:g} (default: %(default)s)")
    p.add_argument("--netns", metavar="NAME",
                   help="read routes from this network namespace instead of the host's "
                        "(for tests and debugging)")
    p.add_argument("--kvp-pool", default=KVP_POOL_PATH, metavar="PATH",
                   help="Hyper-V KVP pool holding IPoIB_Data; its addresses count as "
                        f"routes to come (default {KVP_POOL_PATH})")
    p.add_argument("--analysis", metavar="FILE",
                   help="also write what the block is based on (shadows, pending routes, "
                        "gateway choice, warnings) to FILE as JSON")

    p = add("schema", cmd_schema, "Print the host_routing JSON schema.")
    p.add_argument("--markdown", action="store_true", help="as the README's reference table")

    parser.set_defaults(handlers=handlers)
    return parser


_KERNEL_VALUES = {"--config": "config", "--wait": "wait", "--netns": "netns"}
# The units' options: option -> (attribute, takes a value); defaults as build_parser's.
_UNIT_OPTIONS: Dict[str, Tuple[Dict[str, Tuple[str, bool]], Dict[str, Any]]] = {
    "apply-routes": (
        {**{o: (a, True) for o, a in _KERNEL_VALUES.items()},
         "-v": ("verbose", False), "--verbose": ("verbose", False)},
        {"wait": float(DEFAULT_WAIT_S), "netns": None, "verbose": False}),
    "check-overlap": (
        {**{o: (a, True) for o, a in _KERNEL_VALUES.items()},
         "--run-dir": ("run_dir", True), "--format": ("format", True),
         "--json": ("json", False), "--kvp-pool": ("kvp_pool", True),
         "--root": ("root", True)},
        {"wait": float(DEFAULT_WAIT_S), "netns": None, "run_dir": RUN_DIR, "format": "text",
         "json": False, "kvp_pool": KVP_POOL_PATH, "root": "/"}),
}
_FORMATS = ("text", "json", "prometheus", "npd")


def unit_args(argv: List[str]) -> Optional[argparse.Namespace]:
    """The units' command lines (``apply-routes|check-overlap --config F ...``), parsed
    without argparse, which costs the units several ms at every boot to import and build.

    Only the plain shape is accepted: the command, then each of its options at most
    once, spelled out in full as separate words, with values that do not start with
    ``-`` and are valid.  Anything else (``--help``, ``--opt=value``, abbreviations,
    repeats, bad values, a missing ``--config``) returns None, and argparse parses the
    line, so what it accepts means the same and what it refuses gets its usual error.
    """
    if not argv or argv[0] not in _UNIT_OPTIONS:
        return None
    options, defaults = _UNIT_OPTIONS[argv[0]]
    found: Dict[str, Any] = {}
    i = 1
    while i < len(argv):
        spec = options.get(argv[i])
        if spec is None or spec[0] in found:
            return None
        name, takes_value = spec
        if not takes_value:
            found[name] = True
            i += 1
            continue
        if i + 1 == len(argv) or argv[i + 1].startswith("-"):
            return None
        value: Any = argv[i + 1]
        if name == "wait":
            value = _seconds_value(value, MAX_WAIT_S)
            if value is None:
                return None
        elif name == "format" and value not in _FORMATS:
            return None
        found[name] = value
        i += 2
    if "config" not in found:
        return None
    handler = cmd_apply_routes if argv[0] == "apply-routes" else cmd_check_overlap
    args: Any = types.SimpleNamespace(  # stands in for argparse's Namespace
        command=argv[0], **{**defaults, **found}, handlers={argv[0]: handler})
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = unit_args(sys.argv[1:] if argv is None else argv)
    if args is None:
        args = build_parser().parse_args(argv)
    return args.handlers[args.command](args)
