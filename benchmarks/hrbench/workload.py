"""The workload at one size: N routes and M expected CIDRs, for both sides.

Routes: N distinct destinations, alternately /32s inside the IB /16 10.0.0.0/16 (shadowed
by ``ib0``) and /24s in 10.128.0.0/9 (elsewhere), all via 10.1.0.1 dev eth0.  Expected
CIDRs: the first M destinations, so every check ends OK (verified after each run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Tuple

from .baseline import apply_script, check_script
from .package import Package

ETH_GW, DEV = "10.1.0.1", "eth0"


# The package refuses a config with more expected CIDRs (schema.MAX_EXPECTED_CIDRS; a test
# keeps the two equal), so the check's scale point stops there while N goes on.
MAX_CHECK = 4096
MAX_DESTINATIONS = 2 * 32768  # the /24s fill 10.128.0.0/9; the /32s stay below 10.0.129.0


def destinations(n: int) -> List[str]:
    """N distinct destinations: even i a /32 inside the IB /16 (from 10.0.1.0: never ib0's
    own 10.0.200.5 or its peer 10.0.0.1), odd i a /24 in 10.128.0.0/9."""
    if n > MAX_DESTINATIONS:
        raise ValueError(f"at most {MAX_DESTINATIONS:,} destinations, not {n:,}")
    out = []
    for i in range(n):
        if i % 2 == 0:
            third, fourth = divmod(i // 2 + 256, 256)
            out.append(f"10.0.{third}.{fourth}/32")
        else:
            second, third = divmod(i // 2, 256)
            out.append(f"10.{128 + second}.{third}.0/24")
    return out


def user_data(n: int, m: int, mode: str = "WARN", gateway: bool = True) -> Dict[str, Any]:
    """The ``host_routing`` value for N routes and M expected CIDRs."""
    dests = destinations(max(n, m))
    via = {"gateway": ETH_GW} if gateway else {}
    return {"static_routes": {"enabled": True, "routes": [
        {"destination": d, **via, "dev": DEV} for d in dests[:n]]},
        "route_overlap": {"mode": mode, "expected_cidrs": dests[:m]}}


class Workload(NamedTuple):
    """Files for one size: our config (as the module writes it), and the baseline scripts."""

    n: int
    m: int
    config: Path
    apply_sh: Path
    check_sh: Path
    execstart: Dict[str, str]  # unit command -> the ExecStart= line the package renders


def write_config(pkg: Package, host_routing: Dict[str, Any], base: Path
                 ) -> Tuple[Path, Dict[str, str]]:
    """``base/host-routing.json`` as the module writes it (normalised by the package itself,
    since the units read what the module wrote), and the ExecStart= line of each unit."""
    base.mkdir(parents=True, exist_ok=True)
    raw_path, config, units = (base / "user-data.json", base / "host-routing.json",
                               base / "execstart.json")
    raw_path.write_text(json.dumps({"host_routing": host_routing}), encoding="utf-8")
    pkg.run_worker(["normalize", str(raw_path), str(config), pkg.python, str(units)],
                   timeout=120)
    return config, json.loads(units.read_text(encoding="utf-8"))


def make_workload(work: Path, pkg: Package, n: int, m: int) -> Workload:
    """Write the files for N routes and M expected CIDRs into ``work/nN-mM``."""
    dests = destinations(max(n, m))
    base = work / f"n{n}-m{m}"
    config, execstart = write_config(pkg, user_data(n, m), base)
    apply_sh, check_sh = base / "apply.sh", base / "check.sh"
    apply_sh.write_text(apply_script([(d, ETH_GW, DEV) for d in dests[:n]]), encoding="utf-8")
    check_sh.write_text(check_script(dests[:m]), encoding="utf-8")
    return Workload(n, m, config, apply_sh, check_sh, execstart)
