"""check-overlap: does every expected CIDR leave through the default interface?

Keeps upstream's contract so existing tooling keeps working: the marker files
``route-overlap.detected`` (same line formats) and ``route-overlap.ok`` in the
run directory, WARN exits 0, STRICT exits 1 on any finding.  Adds
``status.json``: one entry per CIDR with the interface it really routes via.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
from typing import Any, Dict, List, NamedTuple, Optional

from .config import HostRouting
from .effects import write_atomic
from .netlink import DefaultRoute, Kernel
from .routes import Waiter

RUN_DIR = "/run/cloudinit-hostrouting"
DETECTED = "route-overlap.detected"
OK = "route-overlap.ok"
STATUS = "status.json"


class Finding(NamedTuple):
    """The verdict for one expected CIDR."""

    cidr: ipaddress.IPv4Network
    probe: ipaddress.IPv4Address
    interface: Optional[str]
    kind: str
    status: str  # "ok", "overlap" or "no-route"

    def marker_line(self, default_if: str) -> str:
        """Upstream's exact line for a mismatch."""
        if self.status == "no-route":
            return (f"NO-ROUTE: expected CIDR {self.cidr} (probe {self.probe}) has no IPv4 "
                    f"route; expected via {default_if}")
        return (f"OVERLAP: expected CIDR {self.cidr} (probe {self.probe}) routes via "
                f"{self.interface}, expected {default_if}")


class Report(NamedTuple):
    """Everything one check found; ``ok`` is the single verdict."""

    mode: str
    default: Optional[DefaultRoute]
    findings: List[Finding]

    @property
    def problems(self) -> List[Finding]:
        return [f for f in self.findings if f.status != "ok"]

    @property
    def ok(self) -> bool:
        return self.default is not None and not self.problems

    def lines(self) -> List[str]:
        """The ``.detected`` content, one line per finding (empty when ok)."""
        if self.default is None:
            return ["no-default-route"]
        return [f.marker_line(self.default.ifname) for f in self.problems]

    def to_dict(self) -> Dict[str, Any]:
        default_if = self.default.ifname if self.default else None
        return {
            "version": 1,
            "mode": self.mode,
            "ok": self.ok,
            "checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "default_interface": default_if,
            "default_gateway": self.default.gateway if self.default else None,
            "cidrs": [{
                "cidr": str(f.cidr), "probe": str(f.probe), "interface": f.interface,
                "expected_interface": default_if, "route_type": f.kind, "status": f.status,
            } for f in self.findings],
        }


def probe_for(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """Upstream's probe: network+1, or the address itself for a /32."""
    if cidr.prefixlen == 32:
        return cidr.network_address
    return cidr.network_address + 1


def check(cfg: HostRouting, kernel: Kernel, waiter: Waiter) -> Report:
    """Look up one probe per expected CIDR and compare with the default interface."""
    default = waiter.until(kernel.default_route)
    findings = []
    if default is not None:
        for cidr in cfg.expected_cidrs:
            probe = probe_for(cidr)
            look = kernel.route_get(probe)
            if look.ifname is None:
                status = "no-route"
            elif look.ifname != default.ifname:
                status = "overlap"
            else:
                status = "ok"
            findings.append(Finding(cidr, probe, look.ifname, look.kind, status))
    return Report(cfg.mode, default, findings)


def action_hint(report: Report) -> str:
    """What to do about the findings (printed after them, like upstream)."""
    default_if = report.default.ifname if report.default else "the default interface"
    if report.default is None:
        return ("Action: the host has no IPv4 default route; fix DHCP or the network "
                "config before the checks can pass.")
    return (f"Action: add more-specific static routes for the CIDRs above via {default_if} "
            "(host_routing.static_routes), or re-address the cluster so it does not "
            "overlap the InfiniBand network.")


def clear_markers(run_dir: str) -> None:
    """Remove both markers, so no verdict from an earlier run can be mistaken for this one."""
    for name in (DETECTED, OK):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(run_dir, name))


def write_markers(run_dir: str, report: Report) -> None:
    """Clear both markers, then write exactly one of them, then status.json."""
    os.makedirs(run_dir, exist_ok=True)
    clear_markers(run_dir)
    if report.ok:
        write_atomic(os.path.join(run_dir, OK), "")
    else:
        write_atomic(os.path.join(run_dir, DETECTED), "\n".join(report.lines()) + "\n")
    write_atomic(os.path.join(run_dir, STATUS),
                 json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
