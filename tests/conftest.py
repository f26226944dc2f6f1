"""Fixtures shared by the namespace tests: ND-isr-shaped hosts from tests/netns.py.

``host`` is a fresh pair of namespaces per test (eth0 with the default route,
ib0 whose /16 shadows the cluster CIDR); ``@pytest.mark.ndhost(ipv6=True)`` on
a test or module passes arguments to ``NDHost``.  ``module_host`` is one IPv4
host for a whole module, for property tests that undo their own changes.
Every namespace is deleted when the fixture ends, whatever the test did.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest
from netns import NDHost


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "ndhost(**kwargs): NDHost arguments for the host fixture, e.g. ipv6=True")


@pytest.fixture
def host(request: Any) -> Iterator[NDHost]:
    marker = request.node.get_closest_marker("ndhost")
    h = NDHost(**(marker.kwargs if marker else {}))
    yield h
    h.close()


@pytest.fixture(scope="module")
def module_host() -> Iterator[NDHost]:
    h = NDHost()
    yield h
    h.close()


# What the host's own state must look like after the whole run: tests point every
# command at a run dir, root or namespace of their own, so none of these may appear.
HOST_PATHS_TESTS_MUST_NOT_CREATE = (
    "/run/cloudinit-hostrouting",
    "/etc/cloudinit-hostrouting",
    "/etc/systemd/system/hostrouting-static-routes.service",
    "/etc/systemd/system/hostrouting-route-overlap.service",
    "/etc/systemd/system/hostrouting-guard.service",
)


@pytest.fixture(scope="session", autouse=True)
def host_state_untouched() -> Iterator[None]:
    """Fail the run if any test wrote our files into the host's own /run or /etc.

    A command run without ``--run-dir``/``--root`` silently writes the host's
    real verdict files; that is a test bug, and this is where it shows.
    """
    before = {p for p in HOST_PATHS_TESTS_MUST_NOT_CREATE if os.path.lexists(p)}
    yield
    created = sorted(p for p in HOST_PATHS_TESTS_MUST_NOT_CREATE
                     if os.path.lexists(p) and p not in before)
    assert not created, f"tests wrote into the host: {created}"
