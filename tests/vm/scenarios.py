"""First-boot scenarios: user-data per scenario, and which suites run it.

The IB /16 (10.0.200.5/16 on ib0) shadows the cluster CIDR 10.0.5.0/24; eth0
is 10.0.2.15/24 with gateway 10.0.2.2 (qemu user net, restrict=on).
"""

from __future__ import annotations

import textwrap

ETH0_GW = "10.0.2.2"

_BASE = """\
#cloud-config
# minbase has no locales: without this cloud-init's status is error (NOTES)
locale: false
"""


def _ud(body: str = "") -> str:
    return _BASE + textwrap.dedent(body)


SCENARIOS = {
    # 1. ND-isr, fixed: static route via eth0's gateway + STRICT.
    #    10.0.6.0/24 has neither gateway nor dev: exercises the defaults
    #    (default route's interface and its gateway).
    "fixed": _ud(f"""\
        host_routing:
          static_routes:
            enabled: true
            routes:
              - destination: 10.0.5.0/24
                gateway: {ETH0_GW}
                dev: eth0
              - destination: 10.0.6.0/24
          route_overlap:
            mode: STRICT
            expected_cidrs: [10.0.5.0/24]
        """),
    # 2. ND-isr, STRICT, no fix: the machine must never start.
    "strict_nofix": _ud("""\
        host_routing:
          route_overlap:
            mode: STRICT
            expected_cidrs: [10.0.5.0/24]
        """),
    # 3. ND-isr, WARN, no fix: the machine starts, the overlap is reported.
    "warn_nofix": _ud("""\
        host_routing:
          route_overlap:
            mode: WARN
            expected_cidrs: [10.0.5.0/24]
        """),
    # Issue 6: the guard. After first boot, the evidence unit runs
    # `networkctl reconfigure eth0`; networkd drops routes it did not configure
    # (ManageForeignRoutes=yes), and the guard must put ours back.
    "guard": _ud(f"""\
        host_routing:
          static_routes:
            enabled: true
            routes:
              - destination: 10.0.5.0/24
                gateway: {ETH0_GW}
                dev: eth0
          route_overlap:
            mode: STRICT
            expected_cidrs: [10.0.5.0/24]
          guard:
            enabled: true
        """),
    # 4. No host_routing at all.
    "none": _ud(),
    # 5a. Invalid host_routing (a gateway that is not an address), WARN.
    "invalid": _ud("""\
        host_routing:
          static_routes:
            enabled: true
            routes:
              - destination: 10.0.5.0/24
                gateway: not-an-address
                dev: eth0
          route_overlap:
            mode: WARN
            expected_cidrs: [10.0.5.0/24]
        """),
    # 5b. The same invalid gateway from a STRICT-minded user.
    "invalid_strict": _ud("""\
        host_routing:
          static_routes:
            enabled: true
            routes:
              - destination: 10.0.5.0/24
                gateway: not-an-address
                dev: eth0
          route_overlap:
            mode: STRICT
            expected_cidrs: [10.0.5.0/24]
        """),
}

# Issue 3: all five on Debian 12; 1, 2 and 4 on Debian 13.
MATRIX = {
    "bookworm": ["fixed", "strict_nofix", "warn_nofix", "none", "invalid", "invalid_strict",
                 "guard"],
    "trixie": ["fixed", "strict_nofix", "none"],
}


def suites_for(scenario: str) -> list:
    return [s for s, scs in MATRIX.items() if scenario in scs]
