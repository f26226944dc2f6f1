"""The ``cloudinit-hostrouting`` command: what the units run, and tools for humans.

Exit codes are a contract: 0 OK (overlaps in WARN mode included), 1 the job
failed (STRICT overlap, a route not installed, ``validate`` found errors),
2 usage or config error.  Heavy imports (pyroute2, YAML, cloud-init) happen
inside the subcommand that needs them, because the units sit on the boot path.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Optional

from . import __version__
from .config import ConfigError, HostRouting, load_file
from .constants import RUN_DIR

OK, FAILED, USAGE = 0, 1, 2


def _load(path: str) -> Optional[HostRouting]:
    """The config in ``path``, or None after printing why it cannot be used."""
    try:
        cfg = load_file(path)
    except OSError as err:
        print(f"error: cannot read {path}: {err.strerror}", file=sys.stderr)
        return None
    except ConfigError as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return None
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return cfg


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

    cfg = _load(args.config)
    if cfg is None:
        return USAGE
    if not cfg.routes:
        print("no static routes configured; nothing to do")
        return OK
    with _kernel(args.netns) as kernel:
        outcomes = apply_routes(cfg, kernel, Waiter(args.wait))
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
    from .overlap import action_hint, check, clear_markers, write_markers
    from .routes import Waiter

    cfg = _load(args.config)
    if cfg is None:
        clear_markers(args.run_dir)
        return USAGE
    with _kernel(args.netns) as kernel:
        report = check(cfg, kernel, Waiter(args.wait))
    write_markers(args.run_dir, report)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif fmt == "prometheus":
        from .signals import prometheus_text

        print(prometheus_text(report), end="")
    elif fmt == "npd":
        from .signals import npd_result

        code, message = npd_result(report)
        print(message)
        return code
    else:
        for line in report.lines():
            print(line)
        for result in report.results:
            for finding in result.bad:
                print(f"{result.cidr}: {finding.region.describe()} goes via "
                      f"{finding.answer.ifname or finding.answer.kind} because of: "
                      f"{finding.culprit or 'unknown route'}")
        if report.ok:
            where = ", ".join(sorted({r.expected_if for r in report.results})) or "-"
            print(f"OK: all {len(report.results)} expected CIDR(s) route via {where}")
        else:
            print(action_hint(report))
    if report.ok or not cfg.strict:
        return OK
    return FAILED


def cmd_guard(args: argparse.Namespace) -> int:
    from .guard import run

    cfg = _load(args.config)
    if cfg is None:
        return USAGE
    return run(cfg, args.run_dir, args.textfile or cfg.prometheus_textfile,
               log=lambda line: print(line, flush=True))


def cmd_azure_suggest(args: argparse.Namespace) -> int:
    from .azure import run

    return run(args)


def cmd_render(args: argparse.Namespace) -> int:
    from .effects import apply_plan
    from .render import plan

    cfg = _load(args.config)
    if cfg is None:
        return USAGE
    try:
        entries = plan(cfg, args.python)
    except ValueError as err:
        print(f"error: --python: {err}", file=sys.stderr)
        return USAGE
    for path in apply_plan(args.root, entries):
        print(f"wrote {path}")
    return OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from .effects import apply_plan

    removed = apply_plan(args.root, [])
    for path in removed:
        print(f"removed {path}")
    if not removed:
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
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE
    print(changed)
    return OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import HOST_ROUTING_SCHEMA, markdown_reference

    if args.markdown:
        print(markdown_reference(), end="")
    else:
        print(json.dumps(HOST_ROUTING_SCHEMA, indent=2))
    return OK


def build_parser() -> argparse.ArgumentParser:
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
        p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                       help="how long to wait for a default route or interface (default 30)")
        p.add_argument("--netns", metavar="NAME",
                       help="act inside this existing network namespace (tests, debugging)")

    p = add("apply-routes", cmd_apply_routes,
            "Install the configured static routes (ip route replace semantics).")
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

    p = add("guard", cmd_guard,
            "Watch rtnetlink events and keep routes, markers and metrics right (long-running).")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--run-dir", default=RUN_DIR, metavar="DIR")
    p.add_argument("--textfile", metavar="PATH",
                   help="node_exporter textfile to keep current (default: "
                        "host_routing.guard.prometheus_textfile)")

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
            "Ask Azure IMDS for this VM's size and VNet subnet, read the InfiniBand routes "
            "from the kernel, and print a host_routing block that routes every shadowed "
            "part of the expected CIDRs via the VNet gateway, with a STRICT check. Exit 0 "
            "with a one-line answer for sizes without InfiniBand; 1 when IMDS cannot be "
            "reached in time; 2 for usage or config errors.")
    p.add_argument("--config", metavar="FILE",
                   help="YAML/JSON file with a top-level host_routing key; "
                        "route_overlap.expected_cidrs are read from it")
    p.add_argument("--expected-cidr", metavar="CIDR", action="append", default=[],
                   help="a CIDR that must route via the default interface (repeatable)")
    p.add_argument("--imds-url", metavar="URL",
                   help="instance metadata URL (default: Azure's, "
                        "http://169.254.169.254/metadata/instance)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml",
                   help="output format (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="overall deadline for IMDS, retries included (default: %(default)s)")
    p.add_argument("--netns", metavar="NAME",
                   help="read routes from this network namespace instead of the host's "
                        "(for tests and debugging)")

    p = add("schema", cmd_schema, "Print the host_routing JSON schema.")
    p.add_argument("--markdown", action="store_true", help="as the README's reference table")

    parser.set_defaults(handlers=handlers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handlers[args.command](args)
