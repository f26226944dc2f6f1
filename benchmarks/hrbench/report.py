"""The Markdown report of one run (printed at the end, or again from ``--json``)."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from .results import SizeResult
from .stats import median
from .tables import fmt_s, import_table, linearity_verdict, main_table, scaling_table
from .targets import judge, linearity_by_unit


def machine_lines(info: Dict[str, str], data: Dict[str, Any]) -> List[str]:
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, {info['distro']}, "
        f"kernel {info['kernel']}; units' interpreter {info['python']}, pyroute2 "
        f"{info['pyroute2']}; {info['iproute2']}; bash {info['bash']}; {info['package']}. "
        f"Load average {info['loadavg_start']} at start, {info['loadavg_end']} at end."]
    units = data.get("units", {})
    flags = " ".join(units.get("measured_flags", []))
    rendered = " ".join(units.get("rendered_flags", []))
    entry = " ".join(units.get("entry", ["-m", "cloudinit_hostrouting"]))
    if entry.endswith("/unit.py"):
        entry = "<snapshot>/cloudinit_hostrouting/unit.py"
    unit_line = (f"Units run as `ip netns exec NS {info['python'].split()[0]}"
                 f"{' ' + flags if flags else ''} {entry} "
                 "apply-routes|check-overlap --config F` (check-overlap with `--run-dir D`), "
                 "as their rendered `ExecStart=`")
    if flags != rendered:
        unit_line += f"; NOTE: the rendered ExecStart= uses flags `{rendered or 'none'}`"
    backends = data.get("backend", {})
    if backends:
        unit_line += "; kernel backend observed (`-X importtime`): " + ", ".join(
            f"{cmd} {b}" for cmd, b in backends.items())
    extra = info.get("unit_env", "")
    if extra:
        unit_line += f"; extra unit environment: `{extra}`"
    lines += ["", unit_line + "."]
    load1 = float(info["loadavg_start"].split()[0])
    if load1 > float(info["nproc"]):
        lines += ["", f"Note: the machine was busy (1-minute load {load1:.1f} on {info['nproc']} "
                  "CPUs at the start), so absolute wall times are inflated; the per-run ratios "
                  "and the CPU columns are the more robust numbers."]
    return lines


def firstboot_lines(data: Dict[str, Any]) -> List[str]:
    r, h = data["render"], data["handle"]
    lines = [f"- `parse` + `render.plan` + `effects.apply_plan` in-process, fresh root per "
             f"repetition ({len(r['full_s'])} reps, {r['files']} entries, "
             f"{r['tmpdir']} on {r['fstype']}): median {median(r['full_s']) * 1000:.2f} ms, "
             f"of which apply_plan {median(r['apply_plan_s']) * 1000:.2f} ms; max "
             f"{max(r['full_s']) * 1000:.2f} ms"]
    if "handle_s" in h:
        lines.append(f"- `cc_host_routing.handle()` ({len(h['handle_s'])} reps, overlay /etc in "
                     f"a private mount namespace, stand-in systemctl: "
                     f"{h['systemctl_calls'] // max(len(h['handle_s']), 1)} calls per rep): "
                     f"median {median(h['handle_s']) * 1000:.2f} ms, max "
                     f"{max(h['handle_s']) * 1000:.2f} ms (the real `systemctl daemon-reload` "
                     "is not included)")
    else:
        lines.append(f"- `handle()` not measured: {h.get('error')}")
    return lines


def breakdown_lines(bd: Dict[str, List[float]]) -> str:
    bare, pkg, pr2 = median(bd["bare"]), median(bd["package"]), median(bd["pyroute2"])
    apply, check = median(bd.get("apply", [])), median(bd.get("check", []))
    # Runs before the units dropped site have no "site" step: their bare start had site.
    site = median(bd["site"]) if bd.get("site") else bare
    with_site = (f"; the same start with `site` (no flags) {fmt_s(site)} s"
                 if bd.get("site") else "")
    return (f"Medians of {len(bd['bare'])} interleaved runs of each step under ip netns exec: "
            f"bare interpreter start with the units' flags (`python3 -c pass`) {fmt_s(bare)} s"
            f"{with_site}; `import cloudinit_hostrouting.cli` {pkg - bare:+.3f} s over the bare "
            f"start; whole apply-routes (10 routes) {fmt_s(apply)} s and whole check-overlap "
            f"(10 CIDRs) {fmt_s(check)} s, so past the CLI import (the unit's other imports, its "
            f"work, teardown) {apply - pkg:+.3f} s and {check - pkg:+.3f} s. For comparison, "
            f"`import pyroute2` alone costs {pr2 - site:+.3f} s over a start with `site`.")


def report(args: argparse.Namespace, info: Dict[str, str], data: Dict[str, Any],
           elapsed: float, command: str) -> List[str]:
    results: List[SizeResult] = data["results"]
    lines = ["## Benchmarks", "", *machine_lines(info, data)]
    runs = f"{args.runs} run{'' if args.runs == 1 else 's'}"
    lines += ["", f"Medians of {runs}, each on fresh ND-isr-shaped namespaces; "
              "wall times of whole processes under `ip netns exec` (interpreter start "
              "included); CPU from the process's `wait4` rusage; peak RSS from GNU time in one "
              "more run per size (the timed runs' maxrss counts the runner's own memory); "
              "check-overlap's run directory on a tmpfs, as /run is on a node. Baseline = "
              "upstream's bash loops (`ip -4 route replace` per route; `ip -4 route get | awk`"
              " per CIDR), measured in the same run; ratios are baseline/ours per run pair.",
              ""]
    lines += main_table(results, args.runs)
    lines += ["", "### Targets", ""]
    for outcome in judge(results):
        lines += outcome.lines
    verdicts = linearity_by_unit(results)
    for unit, label in (("apply", "apply-routes"), ("check", "check-overlap")):
        if any(r.m if unit == "check" else r.n for r in results):
            lines += ["", f"### Scaling of {label}", "", *scaling_table(results, unit), "",
                      linearity_verdict(label, verdicts[label])]
    lines += ["", "### First-boot render path (100 routes, 100 expected CIDRs)", "",
              *firstboot_lines(data)]
    lines += ["", "### Where a small unit's time goes (N=M=10)", "",
              breakdown_lines(data["breakdown"])]
    for unit_cmd, prof in data["imports"].items():
        lines += ["", f"Imports of `{unit_cmd}` (`-X importtime`, median of runs; total "
                  f"{prof.total_ms:.0f} ms, inflated by importtime's own overhead):", "",
                  *import_table(prof.top, prof.children)]
    for unit_cmd, text in data["profiles"].items():
        lines += ["", f"cProfile, in-process `{unit_cmd}` at N={args.big:,} "
                  "(imports excluded):", "", "```text", text.rstrip(), "```"]
    lines += ["", f"Whole benchmark: {elapsed / 60:.1f} min; `{command}`."]
    return lines
