"""apply-routes: install every configured route, and never touch one that is not ours.

Matches upstream's behaviour (auto dev and gateway from the default route,
waiting a bounded time for DHCP) with four differences: one netlink socket
instead of a process per route, every route is tried even after a failure,
our routes carry a protocol tag so they can never be confused with others,
and a route that would replace (or compete with) a route we did not install is
refused instead of taking it over (``Kernel.install``).
"""

from __future__ import annotations

import time

from .config import HostRouting, Route
from .netlink import FAILED, INSTALLED, DefaultRoute, Kernel, RouteError, Want
from .records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, TypeVar

    T = TypeVar("T")
POLL_S = 0.25


class Outcome(NamedTuple):
    """What happened to one route: ``status`` as ``Kernel.install`` says, ``error`` why."""

    route: Route
    dev: Optional[str]
    gateway: Optional[str]
    status: str
    error: Optional[str]

    @property
    def installed(self) -> bool:
        return self.status in INSTALLED

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.dev}" if self.dev else ""
        metric = f" metric {self.route.metric}" if self.route.metric is not None else ""
        return f"{self.route.destination}{via}{dev}{metric}"


class Waiter:
    """One shared deadline for everything that may need to wait for DHCP.

    A route with a typo'd interface costs at most the budget once, not once
    per route, and the boot critical path stays bounded.
    """

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.deadline = clock() + budget_s
        self.clock, self.sleep = clock, sleep

    def until(self, probe: Callable[[], Optional[T]],
              at_most: Optional[float] = None) -> Optional[T]:
        """``probe()`` until it returns non-None or the deadline passes.

        ``at_most`` seconds, if given, end this one wait earlier; it never
        extends the shared deadline (the IPoIB wait uses it).
        """
        deadline = self.deadline if at_most is None else min(
            self.deadline, self.clock() + at_most)
        while True:
            found = probe()
            if found is not None or self.clock() >= deadline:
                return found
            self.sleep(min(POLL_S, max(0.0, deadline - self.clock())))

    def remaining(self) -> float:
        """Seconds left in the shared budget (0 when it is spent)."""
        return max(0.0, self.deadline - self.clock())


class _Resolver:
    """Resolves auto dev/gateway once per interface, not once per route."""

    def __init__(self, kernel: Kernel, waiter: Waiter):
        self.kernel, self.waiter = kernel, waiter
        self.defaults: Dict[Tuple[Optional[str], int], Optional[DefaultRoute]] = {}
        self.indexes: Dict[str, Optional[int]] = {}
        self.texts: Dict[object, str] = {}  # str() of each gateway, once (routes share few)

    def default(self, dev: Optional[str], version: int) -> Optional[DefaultRoute]:
        key = (dev, version)
        if key not in self.defaults:
            self.defaults[key] = self.waiter.until(
                lambda: self.kernel.default_route(dev, version=version))
        return self.defaults[key]

    def index(self, dev: str) -> Optional[int]:
        if dev not in self.indexes:
            self.indexes[dev] = self.waiter.until(lambda: self.kernel.ifindex(dev))
        return self.indexes[dev]

    def text(self, gateway: object) -> str:
        text = self.texts.get(gateway)
        if text is None:
            text = self.texts[gateway] = str(gateway)
        return text

    def resolve(self, route: Route) -> Tuple[str, int, str]:
        """(dev, ifindex, gateway) for ``route``, or RouteError saying what is missing."""
        dev, gateway = route.dev, route.gateway
        version = route.destination.version
        if dev is None or gateway is None:
            found = self.default(dev, version)
            if found is None:
                where = f" on {dev}" if dev else ""
                raise RouteError(f"no IPv{version} default route{where} appeared within "
                                 "the wait; set dev and gateway explicitly or check DHCP")
            if found.gateway is None:
                raise RouteError(f"the default route on {found.ifname} has no gateway; "
                                 "set gateway explicitly")
            dev = found.ifname
            gw_text = self.text(gateway) if gateway is not None else found.gateway
        else:
            gw_text = self.text(gateway)
        index = self.index(dev)
        if index is None:
            raise RouteError(f"interface {dev} does not exist")
        return dev, index, gw_text


def apply_routes(cfg: HostRouting, kernel: Kernel, waiter: Waiter) -> List[Outcome]:
    """Resolve every route, then install them in one go; a failure never stops the rest."""
    resolver = _Resolver(kernel, waiter)
    outcomes: List[Optional[Outcome]] = []
    wants: List[Tuple[int, Want]] = []
    for route in cfg.routes:
        try:
            dev, index, gateway = resolver.resolve(route)
        except RouteError as err:
            outcomes.append(Outcome(route, route.dev, None, FAILED, str(err)))
        else:
            wants.append((len(outcomes), Want(route.destination, gateway, index, dev,
                                              route.metric)))
            outcomes.append(None)
    results = kernel.install([w for _, w in wants])
    for (i, want), result in zip(wants, results):
        outcomes[i] = Outcome(cfg.routes[i], want.dev, want.gateway, result.status, result.error)
    return [o for o in outcomes if o is not None]
