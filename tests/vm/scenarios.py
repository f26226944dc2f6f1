"""First-boot scenarios: user-data per scenario, and where each one runs.

The IB /16 (10.0.200.5/16 on ib0) shadows the cluster CIDR 10.0.5.0/24; eth0
is 10.0.2.15/24 with gateway 10.0.2.2 (qemu user net, restrict=on).

Each scenario names
  * its user-data,
  * the Debian suites it boots on,
  * how the image installs the package: ``deb`` (``apt-get install ./*.deb``,
    whose postinst enables the module: what the README tells apt users) or
    ``pip`` (``/usr/bin/python3 -m pip install --no-deps --break-system-packages``
    plus ``enable-module``: the README's pip path, kept proven by one scenario),
  * the image variant (``vmharness.VARIANTS``): ``std`` gives ib0 its address
    from a .network at boot; ``race`` leaves ib0 without one, bakes a Hyper-V
    KVP pool naming 10.0.200.5 for ib0's MAC plus ``/etc/waagent.conf`` with
    ``OS.EnableRDMA=y``, and adds the address late, as WALinuxAgent does
    (issue 12); ``race_nokvp`` is ``race`` without the pool.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

ETH0_GW = "10.0.2.2"

_BASE = """\
#cloud-config
# minbase has no locales: without this cloud-init's status is error (NOTES)
locale: false
"""


def _ud(body: str = "") -> str:
    return _BASE + textwrap.dedent(body)


USER_DATA = {
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


@dataclass(frozen=True)
class Scenario:
    name: str
    user_data: str
    suites: tuple
    install: str = "deb"
    variant: str = "std"


ALL = ("bookworm", "trixie", "forky")
SCENARIO_LIST = [
    Scenario("fixed", USER_DATA["fixed"], ALL),
    Scenario("strict_nofix", USER_DATA["strict_nofix"], ALL),
    Scenario("warn_nofix", USER_DATA["warn_nofix"], ("bookworm",)),
    Scenario("none", USER_DATA["none"], ALL),
    Scenario("invalid", USER_DATA["invalid"], ("bookworm",)),
    Scenario("invalid_strict", USER_DATA["invalid_strict"], ("bookworm",)),
    Scenario("guard", USER_DATA["guard"], ("bookworm",)),
    # the README's pip path (the image's /usr/bin/python3, /usr/local), once
    Scenario("pip_fixed", USER_DATA["fixed"], ("bookworm",), install="pip"),
    # Issue 12: ib0's address arrives late (after cloud-final), as waagent's does.
    #   STRICT, no fix: the KVP pool predicts the shadow; the machine never starts.
    Scenario("race_strict_nofix", USER_DATA["strict_nofix"], ("bookworm",), variant="race"),
    #   the fix: the machine starts, 10.0.5.1 stays on eth0 after the address came.
    Scenario("race_fixed", USER_DATA["fixed"], ("bookworm",), variant="race"),
    #   negative control, no KVP pool: the false OK the anticipation exists for.
    Scenario("race_nokvp", USER_DATA["strict_nofix"], ("bookworm",), variant="race_nokvp"),
]
SCENARIOS = {sc.name: sc for sc in SCENARIO_LIST}


def suites_for(scenario: str) -> list:
    return list(SCENARIOS[scenario].suites)
