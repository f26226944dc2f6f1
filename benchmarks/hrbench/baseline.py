"""The baseline: bash scripts reproducing upstream's two units, generated per workload.

* apply: a loop of ``ip -4 route replace DEST via GW dev DEV``, one per route;
* check: the default interface from ``ip -4 route show default | awk``, then a loop of
  ``ip -4 route get PROBE | awk`` per expected CIDR (probe = network+1 with host bits
  masked, the address itself for a /32), with upstream's markers.
"""

from __future__ import annotations

from typing import Sequence, Tuple

APPLY_SH = """#!/bin/bash
# Baseline reproducing upstream's static-routes unit: one `ip -4 route replace` per route.
set -u
rc=0
while read -r dest gw dev; do
    ip -4 route replace "$dest" via "$gw" dev "$dev" || rc=1
done <<'ROUTES'
{routes}
ROUTES
exit $rc
"""

CHECK_SH = r"""#!/bin/bash
# Baseline reproducing upstream's overlap check: `ip -4 route get PROBE | awk` per CIDR.
set -u
RUN_DIR="$1"
MODE=WARN
rm -f "$RUN_DIR/route-overlap.detected" "$RUN_DIR/route-overlap.ok"
mkdir -p "$RUN_DIR"
DEV_AWK='{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
DEFIF=$(ip -4 route show default | awk "/^default/ $DEV_AWK")
if [ -z "$DEFIF" ]; then
    echo no-default-route > "$RUN_DIR/route-overlap.detected"
    [ "$MODE" = STRICT ] && exit 1
    exit 0
fi
probe_for() {  # network+1 with host bits masked; the address itself for a /32
    local a b c d len n mask
    len=${1#*/}
    IFS=. read -r a b c d <<< "${1%/*}"
    n=$(( (a << 24) | (b << 16) | (c << 8) | d ))
    mask=$(( len == 0 ? 0 : (0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF ))
    n=$(( n & mask ))
    if [ "$len" -lt 32 ]; then n=$(( n + 1 )); fi
    PROBE="$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))"
}
found=0
while read -r cidr; do
    probe_for "$cidr"
    dev=$(ip -4 route get "$PROBE" 2>/dev/null | awk "$DEV_AWK")
    if [ -z "$dev" ]; then
        line="NO-ROUTE: expected CIDR $cidr (probe $PROBE) has no IPv4 route; expected via $DEFIF"
    elif [ "$dev" != "$DEFIF" ]; then
        line="OVERLAP: expected CIDR $cidr (probe $PROBE) routes via $dev, expected $DEFIF"
    else
        continue
    fi
    echo "$line"
    echo "$line" >> "$RUN_DIR/route-overlap.detected"
    found=1
done <<'CIDRS'
{cidrs}
CIDRS
if [ "$found" = 1 ]; then
    echo "Action: add more-specific static routes via $DEFIF, or re-address the cluster."
    [ "$MODE" = STRICT ] && exit 1
    exit 0
fi
touch "$RUN_DIR/route-overlap.ok"
"""


def apply_script(routes: Sequence[Tuple[str, str, str]]) -> str:
    """The apply loop for ``(destination, gateway, dev)`` routes."""
    return APPLY_SH.replace("{routes}", "\n".join(" ".join(r) for r in routes))


def check_script(cidrs: Sequence[str]) -> str:
    """The check loop for the expected CIDRs; its only argument is the run directory."""
    return CHECK_SH.replace("{cidrs}", "\n".join(cidrs))
