"""Fixtures shared by the namespace tests: ND-isr-shaped hosts from tests/netns.py.

``host`` is a fresh pair of namespaces per test (eth0 with the default route,
ib0 whose /16 shadows the cluster CIDR); ``@pytest.mark.ndhost(ipv6=True)`` on
a test or module passes arguments to ``NDHost``.  ``module_host`` is one IPv4
host for a whole module, for property tests that undo their own changes.
Every namespace is deleted when the fixture ends, whatever the test did.
"""

from __future__ import annotations

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
