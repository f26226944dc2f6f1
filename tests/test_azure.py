"""Tests for the Azure IMDS helper (``cloudinit_hostrouting.azure``).

Nothing is mocked: IMDS is a real HTTP server on 127.0.0.1 (tests/fake_imds.py)
and the kernel is a real network namespace built like an ND-isr host:
``eth0`` (10.1.0.4/24, default via 10.1.0.1) and ``ib0`` (10.0.200.5/16)
whose connected /16 shadows the cluster CIDR 10.0.5.0/24.  The namespace
tests need root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator, List

import pytest
import yaml
from fake_imds import HANG, Answer, FakeImds, doc, error, load_fixture
from netns import CLUSTER_CIDR, IB_PEER_PROBE, NDHost, sh

from cloudinit_hostrouting import azure, cli
from cloudinit_hostrouting.azure import (
    IbInterface,
    IbRoute,
    ImdsError,
    Instance,
    KernelView,
    Nic,
    Shadow,
    choose_primary_nic,
    fetch_instance,
    is_ib_interface,
    is_infiniband_size,
    override_routes,
    parse_instance,
    read_kernel,
    render_json,
    render_yaml,
    shadowed_parts,
    suggest,
    suggest_at_boot,
)
from cloudinit_hostrouting.config import load_file
from cloudinit_hostrouting.config import parse as parse_host_routing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = ipaddress.IPv4Network
A = ipaddress.IPv4Address
# Tests use a short back-off so retries cost milliseconds, not seconds.
FAST = 0.01


# ---------------------------------------------------------------------------
# SKU detection
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [
    "Standard_ND96isr_H100_v5", "Standard_ND96isr_H200_v5", "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4", "ND96isr_H100_v5", "standard_nd96isr_h100_v5",
    "STANDARD_ND96ISR_H200_V5", " Standard_ND96isr_H100_v5 ",
    "Standard_HB120rs_v2", "Standard_HB120rs_v3", "Standard_HB120-96rs_v3",
    "Standard_HB176rs_v4", "Standard_HB176-144rs_v4", "Standard_HC44rs", "Standard_HB60rs",
    "Standard_HX176rs",
])
def test_infiniband_sizes(size: str) -> None:
    assert is_infiniband_size(size)


@pytest.mark.parametrize("size", [
    "Standard_ND96isr_MI300X_v5",  # not listed with InfiniBand, despite "isr"
    "Standard_H16r", "Standard_H16mr", "Standard_NC24r",  # RDMA, but not SR-IOV IPoIB
    "Standard_D4s_v5", "Standard_NC24ads_A100_v4", "Standard_ND40rs_v2x", "",
    "Standard_HB120s_v3",  # no "r": no RDMA
])
def test_not_infiniband_sizes(size: str) -> None:
    assert not is_infiniband_size(size)


def test_ib_interface_by_name_or_link_type() -> None:
    assert is_ib_interface("ib0", 1)  # a veth named ib0 is link/ether (type 1)
    assert is_ib_interface("mlx5_ib", 32) and is_ib_interface("ibp12s0", 32)
    assert not is_ib_interface("eth0", 1)


# ---------------------------------------------------------------------------
# Shadow analysis and routes (pure)
# ---------------------------------------------------------------------------

IB16 = IbRoute(N("10.0.0.0/16"), "ib0", A("10.0.200.5"))


def test_ib_inside_expected_shadows_the_ib_range() -> None:
    ib = IbRoute(N("10.5.0.0/16"), "ib0")
    assert shadowed_parts(N("10.0.0.0/8"), [ib]) == [Shadow(N("10.0.0.0/8"), N("10.5.0.0/16"), ib)]


def test_expected_inside_ib_is_shadowed_whole() -> None:
    assert shadowed_parts(N("10.0.5.0/24"), [IB16]) == [
        Shadow(N("10.0.5.0/24"), N("10.0.5.0/24"), IB16)]


def test_disjoint_is_not_shadowed() -> None:
    assert shadowed_parts(N("192.168.0.0/16"), [IB16]) == []


def test_every_ib_route_is_reported() -> None:
    ib1 = IbRoute(N("10.7.0.0/16"), "ib1")
    parts = shadowed_parts(N("10.0.0.0/8"), [ib1, IB16])
    assert [(s.part, s.ib.dev) for s in parts] == [(N("10.0.0.0/16"), "ib0"),
                                                    (N("10.7.0.0/16"), "ib1")]


def test_part_equal_to_ib_range_is_split_in_halves() -> None:
    """Same prefix as the kernel route would replace it; halves win on prefix."""
    ib = IbRoute(N("10.5.0.0/16"), "ib0")
    shadows = shadowed_parts(N("10.0.0.0/8"), [ib])
    assert override_routes(shadows) == [N("10.5.0.0/17"), N("10.5.128.0/17")]


def test_covered_route_is_dropped_unless_a_nested_ib_route_beats_the_cover() -> None:
    ib_wide = IbRoute(N("10.0.0.0/16"), "ib0")
    shadows = (shadowed_parts(N("10.0.0.0/8"), [ib_wide])
               + shadowed_parts(N("10.0.5.0/24"), [ib_wide]))
    # 10.0.0.0/17 via the VNet already beats the /16 for 10.0.5.0/24.
    assert override_routes(shadows) == [N("10.0.0.0/17"), N("10.0.128.0/17")]
    ib_narrow = IbRoute(N("10.0.5.0/25"), "ib1")
    shadows += shadowed_parts(N("10.0.5.0/24"), [ib_narrow])
    # ...but a /25 on ib1 beats the /17, so its part needs its own routes.
    assert override_routes(shadows) == [N("10.0.0.0/17"), N("10.0.5.0/26"),
                                        N("10.0.5.64/26"), N("10.0.128.0/17")]


# ---------------------------------------------------------------------------
# Instance documents (pure)
# ---------------------------------------------------------------------------

def test_parse_h100_fixture() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5"))
    assert inst == Instance("Standard_ND96isr_H100_v5",
                            (Nic("000D3A4F1B2C", (A("10.1.0.4"),), (N("10.1.0.0/24"),)),))


def test_image_sku_is_not_the_size() -> None:
    document = load_fixture("ND96isr_H200_v5")
    assert document["compute"]["sku"] == "2204"
    assert parse_instance(document).vm_size == "Standard_ND96isr_H200_v5"


def test_missing_vm_size_is_an_error() -> None:
    document = load_fixture("ND96isr_H100_v5")
    del document["compute"]["vmSize"]
    with pytest.raises(ImdsError, match=r"no compute\.vmSize"):
        parse_instance(document)
    with pytest.raises(ImdsError, match=r"no compute\.vmSize"):
        parse_instance({"network": {}})


def test_missing_and_bad_network_fields_are_warnings() -> None:
    document = load_fixture("ND96isr_H100_v5")
    del document["network"]
    assert parse_instance(document).warnings == (
        "IMDS instance document lists no network.interface",)
    document = load_fixture("ND96isr_H100_v5_nic_order")
    nics = document["network"]["interface"]
    del nics[0]["ipv4"]["subnet"][0]["prefix"]
    nics[1]["ipv4"]["ipAddress"][0]["privateIpAddress"] = "fe80::1"
    inst = parse_instance(document)
    assert inst.nics == (Nic("000D3A4F1B2D", (A("10.1.1.10"),), ()),
                         Nic("000D3A4F1B2C", (), (N("10.1.0.0/24"),)))
    assert len(inst.warnings) == 2


def test_primary_nic_is_the_one_on_the_default_route_else_the_first() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5_nic_order"))
    nic, why = choose_primary_nic(inst.nics, [A("10.1.0.4")])
    assert nic is inst.nics[1] and "default-route" in why
    nic, why = choose_primary_nic(inst.nics, [])
    assert nic is inst.nics[0] and "first NIC" in why
    assert choose_primary_nic([], [A("10.1.0.4")])[0] is None


# ---------------------------------------------------------------------------
# Suggestion (pure)
# ---------------------------------------------------------------------------

ND_KERNEL = KernelView(
    ib_interfaces=(IbInterface("ib0", 8, 1, (ipaddress.IPv4Interface("10.0.200.5/16"),)),),
    ib_routes=(IB16,),
    default_dev="eth0", default_gateway=A("10.1.0.1"), default_addresses=(A("10.1.0.4"),))


def test_suggestion_for_h100_is_exact_and_validates() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5"))
    s = suggest(inst, ND_KERNEL, [N("10.0.5.0/24"), N("10.96.0.0/12")])
    assert s.document == {"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/24", "gateway": "10.1.0.1"}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24", "10.96.0.0/12"]},
    }}
    assert s.warnings == []
    text = render_yaml(s)
    assert text.startswith("#cloud-config\n# host_routing suggested by")
    assert s.comments[1].startswith(
        "Override the InfiniBand route 10.0.0.0/16 dev ib0 proto kernel scope link "
        "src 10.0.200.5: it is more specific than the default route")
    assert "#   10.0.5.0/24 (of expected 10.0.5.0/24)" in text.splitlines()
    assert all(len(line) <= 90 for line in text.splitlines())
    assert yaml.safe_load(text) == s.document
    parse_host_routing(s.document["host_routing"])  # the project's own validation
    assert json.loads(render_json(s))["host_routing"] == s.document["host_routing"]


def test_whole_ib_range_inside_expected_is_split_and_warned() -> None:
    inst = parse_instance(load_fixture("ND96isr_H200_v5"))
    kernel = ND_KERNEL._replace(
        ib_routes=(IbRoute(N("172.16.0.0/16"), "ib0", A("172.16.1.9")),),
        default_gateway=A("10.8.0.1"), default_addresses=(A("10.8.2.37"),))
    s = suggest(inst, kernel, [N("172.16.0.0/12")])
    assert s.document["host_routing"]["static_routes"]["routes"] == [
        {"destination": "172.16.0.0/17", "gateway": "10.8.0.1"},
        {"destination": "172.16.128.0/17", "gateway": "10.8.0.1"}]
    assert any("contains the whole InfiniBand range 172.16.0.0/16" in w for w in s.warnings)


def test_no_shadow_gives_only_the_strict_check() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5"))
    s = suggest(inst, ND_KERNEL, [N("192.168.0.0/16")])
    assert s.document == {"host_routing": {
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["192.168.0.0/16"]}}}
    assert "No expected CIDR is shadowed" in render_yaml(s)


def test_ib_address_not_assigned_yet_assumes_azure_rdma_range() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5"))
    kernel = ND_KERNEL._replace(ib_interfaces=(IbInterface("ib0", 8, 32, ()),), ib_routes=())
    s = suggest(inst, kernel, [N("10.0.5.0/24"), N("172.16.4.0/24")])
    assert s.document["host_routing"]["static_routes"]["routes"] == [
        {"destination": "172.16.4.0/24", "gateway": "10.1.0.1"}]
    assert s.shadows[0].ib.assumed
    assert "guest agent assigns it asynchronously" in s.warnings[0]


def test_vnet_subnet_overlapping_ib_range_is_warned() -> None:
    document = load_fixture("ND96isr_H100_v5")
    document["network"]["interface"][0]["ipv4"]["subnet"][0]["address"] = "10.0.1.0"
    inst = parse_instance(document)
    s = suggest(inst, ND_KERNEL, [N("10.0.5.0/24")])
    assert any("VNet subnet 10.0.1.0/24" in w and "overlaps the InfiniBand range "
               "10.0.0.0/16" in w for w in s.warnings)


def test_gateway_falls_back_to_kernel_when_imds_has_no_network() -> None:
    document = load_fixture("ND96isr_H100_v5")
    del document["network"]
    s = suggest(parse_instance(document), ND_KERNEL, [N("10.0.5.0/24")])
    assert s.document["host_routing"]["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/24", "gateway": "10.1.0.1"}]
    assert any("no subnet for the primary NIC" in w for w in s.warnings)


def test_nic_order_without_kernel_match_takes_first_nic_and_warns() -> None:
    inst = parse_instance(load_fixture("ND96isr_H100_v5_nic_order"))
    s = suggest(inst, ND_KERNEL._replace(default_addresses=()), [N("10.0.5.0/24")])
    assert s.gateway == A("10.1.1.1")
    assert any("default gateway 10.1.0.1 is not 10.1.1.1" in w for w in s.warnings)


# ---------------------------------------------------------------------------
# IMDS client against a real HTTP server
# ---------------------------------------------------------------------------

H100 = load_fixture("ND96isr_H100_v5")


@pytest.mark.parametrize("name", ["ND96isr_H100_v5", "ND96isr_H200_v5", "D4s_v5",
                                  "ND96isr_H100_v5_nic_order"])
def test_fetch_each_fixture_with_the_right_request(name: str) -> None:
    with FakeImds([doc(load_fixture(name))]) as imds:
        assert fetch_instance(imds.url, 5) == load_fixture(name)
    (req,) = imds.requests
    assert req.api_version == "2021-08-01"
    assert req.headers["metadata"] == "true"
    assert "x-forwarded-for" not in req.headers


def test_429_then_200() -> None:
    with FakeImds([error(429), doc(H100)]) as imds:
        assert fetch_instance(imds.url, 5, backoff=FAST) == H100
    assert len(imds.requests) == 2


def test_500_three_times_then_200() -> None:
    with FakeImds([error(500)] * 3 + [doc(H100)]) as imds:
        assert fetch_instance(imds.url, 5, backoff=FAST) == H100
    assert len(imds.requests) == 4


def test_410_is_retried_and_can_succeed_later() -> None:
    with FakeImds([error(410), error(410), doc(H100)]) as imds:
        assert fetch_instance(imds.url, 5, backoff=FAST) == H100
    assert len(imds.requests) == 3


def test_410_forever_gives_up_after_max_attempts() -> None:
    with FakeImds([], final=error(410)) as imds, pytest.raises(
            ImdsError, match=r"gave no instance document.*HTTP 410"):
        fetch_instance(imds.url, 30, max_attempts=4, backoff=FAST)
    assert len(imds.requests) == 4


def test_hang_hits_the_deadline_and_gives_up() -> None:
    with FakeImds([HANG]) as imds:
        started = time.monotonic()
        with pytest.raises(ImdsError, match=r"IMDS unreachable at URL: .*timed out"):
            fetch_instance(imds.url, 1.0, backoff=FAST)
        elapsed = time.monotonic() - started
    assert len(imds.requests) == 1
    # Safety net only: without the deadline the server would hold the request 60 s.
    assert elapsed < azure.MAX_ATTEMPTS * 1.0


def test_malformed_json_fails_at_once() -> None:
    truncated = Answer(200, b'{"compute": {"vmSize": "Standard_ND96')
    with FakeImds([truncated]) as imds, pytest.raises(ImdsError, match="malformed JSON"):
        fetch_instance(imds.url, 5, backoff=FAST)
    assert len(imds.requests) == 1


def test_json_that_is_not_an_object_fails() -> None:
    not_object = Answer(200, b'["compute"]')
    with FakeImds([not_object]) as imds, pytest.raises(ImdsError, match="not an object"):
        fetch_instance(imds.url, 5, backoff=FAST)


def test_400_for_pinned_api_version_falls_back_to_the_older_one() -> None:
    with FakeImds([doc(H100)], supported=["2019-06-01"]) as imds:
        assert fetch_instance(imds.url, 5, backoff=FAST) == H100
    assert [r.api_version for r in imds.requests] == ["2021-08-01", "2019-06-01"]


def test_400_for_every_api_version_is_an_error_naming_it() -> None:
    expected = r"api-version 2019-06-01.*HTTP 400.*api-version is invalid"
    with FakeImds([doc(H100)], supported=["2030-01-01"]) as imds, pytest.raises(
            ImdsError, match=expected):
        fetch_instance(imds.url, 5, backoff=FAST)
    assert len(imds.requests) == 2


def test_other_client_errors_are_not_retried() -> None:
    with FakeImds([error(403)]) as imds, pytest.raises(ImdsError, match="HTTP 403"):
        fetch_instance(imds.url, 5, backoff=FAST)
    assert len(imds.requests) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_dead_proxy_in_environment_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, dead)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with FakeImds([doc(H100)], final=doc(H100)) as imds:
        # urllib's default opener does honour the dead proxy...
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(urllib.request.Request(
                imds.url + "?api-version=2021-08-01", headers={"Metadata": "true"}), timeout=5)
        assert imds.requests == []
        # ...ours goes straight to IMDS.
        assert fetch_instance(imds.url, 5, backoff=FAST) == H100
    assert len(imds.requests) == 1


def test_connection_refused_says_not_on_azure() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/metadata/instance"
    with pytest.raises(ImdsError) as info:
        fetch_instance(url, 1.0, max_attempts=3, backoff=FAST)
    assert str(info.value).startswith(f"IMDS unreachable at URL: {url} (")
    assert str(info.value).endswith("(not on Azure?)")


# ---------------------------------------------------------------------------
# Kernel inspection in a network namespace built like an ND-isr host
# ---------------------------------------------------------------------------

@pytest.fixture
def ndhost() -> Iterator[NDHost]:
    host = NDHost()
    yield host
    host.close()


def test_read_kernel_in_namespace(ndhost: NDHost) -> None:
    """A veth's link type is ether (1), not infiniband: ib0 is found by its name."""
    view = read_kernel(ndhost.ns)
    (ib,) = view.ib_interfaces
    assert (ib.name, ib.link_type, ib.addresses) == (
        "ib0", 1, (ipaddress.IPv4Interface("10.0.200.5/16"),))
    assert view.ib_routes == (IbRoute(N("10.0.0.0/16"), "ib0", A("10.0.200.5")),)
    assert (view.default_dev, view.default_gateway, view.default_addresses) == (
        "eth0", A("10.1.0.1"), (A("10.1.0.4"),))


def test_read_kernel_before_ib_address_is_assigned(ndhost: NDHost) -> None:
    """The guest agent adds ib0's address late: the link is there, the /16 not yet."""
    ndhost.ip("addr", "flush", "dev", "ib0")
    view = read_kernel(ndhost.ns)
    assert [i.name for i in view.ib_interfaces] == ["ib0"]
    assert view.ib_interfaces[0].addresses == () and view.ib_routes == ()


# ---------------------------------------------------------------------------
# The azure-suggest command (in-process, through the real CLI parser)
# ---------------------------------------------------------------------------

def _run(argv: List[str]) -> int:
    return cli.main(["azure-suggest", *argv])


def test_cli_suggests_exact_routes_in_namespace(ndhost: NDHost,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with FakeImds([doc(H100)]) as imds:
        rc = _run(["--imds-url", imds.url, "--netns", ndhost.ns,
                   "--expected-cidr", "10.0.5.0/24", "--expected-cidr", "10.96.0.0/12"])
    out = capsys.readouterr().out
    assert rc == 0
    assert yaml.safe_load(out) == {"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/24", "gateway": "10.1.0.1"}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24", "10.96.0.0/12"]},
    }}
    assert "# Override the InfiniBand route 10.0.0.0/16 dev ib0 proto kernel scope link" in out


def test_cli_nic_order_picks_nic_on_default_route(ndhost: NDHost, tmp_path: object,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = os.path.join(str(tmp_path), "hr.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("host_routing:\n  route_overlap:\n    expected_cidrs: [10.0.5.0/24]\n")
    with FakeImds([doc(load_fixture("ND96isr_H100_v5_nic_order"))]) as imds:
        rc = _run(["--imds-url", imds.url, "--netns", ndhost.ns, "--config", config,
                   "--format", "json"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert rc == 0
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(out)
    # The JSON is a --config file for apply-routes and check-overlap as it is.
    assert load_file(config).expected_cidrs == (N("10.0.5.0/24"),)
    assert result["host_routing"]["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/24", "gateway": "10.1.0.1"}]
    assert result["analysis"]["primary_nic"]["mac"] == "000D3A4F1B2C"
    assert result["analysis"]["shadows"] == [{"expected": "10.0.5.0/24", "part": "10.0.5.0/24",
                                              "ib_cidr": "10.0.0.0/16", "dev": "ib0",
                                              "assumed": False}]
    assert result["analysis"]["warnings"] == []


def test_cli_non_infiniband_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeImds([doc(load_fixture("D4s_v5"))]) as imds:
        rc = _run(["--imds-url", imds.url, "--expected-cidr", "10.0.5.0/24"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("\n") == 1
    assert out.startswith("Standard_D4s_v5 is not an InfiniBand size")


def test_cli_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/metadata/instance"
    rc = _run(["--imds-url", url, "--timeout", "0.5", "--expected-cidr", "10.0.5.0/24"])
    assert rc == 1
    assert f"IMDS unreachable at URL: {url}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    ([], "no expected CIDRs"),
    (["--expected-cidr", "10.0.5.0/33"], "--expected-cidr '10.0.5.0/33'"),
    (["--config", "/nonexistent/hr.yaml"], "No such file"),
    (["--expected-cidr", "10.0.5.0/24", "--netns", "hraz-missing"], "no such network namespace"),
    (["--expected-cidr", "10.0.5.0/24", "--timeout", "0"], "--timeout must be positive"),
])
def test_cli_usage_errors_exit_2(argv: List[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_invalid_config_exits_2(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    config = os.path.join(str(tmp_path), "hr.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write("host_routing:\n  route_overlap:\n    expected_cidrs: [not-a-cidr]\n")
    assert _run(["--config", config]) == 2
    assert "expected_cidrs[0]" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# First boot
# ---------------------------------------------------------------------------

def test_boot_non_ib_writes_one_line(tmp_path: object) -> None:
    run_dir = os.path.join(str(tmp_path), "run")
    cfg = {"host_routing": {"azure": {"suggest": True}}}
    with FakeImds([doc(load_fixture("D4s_v5"))]) as imds:
        text = suggest_at_boot(cfg, run_dir, 5, imds.url)
    assert text is not None and text.startswith("# Standard_D4s_v5 is not an InfiniBand size")
    with open(os.path.join(run_dir, "azure-suggestion.yaml"), encoding="utf-8") as handle:
        assert handle.read() == text


def test_boot_ib_size_writes_the_suggestion(tmp_path: object) -> None:
    run_dir = os.path.join(str(tmp_path), "run")
    cfg = {"host_routing": {"route_overlap": {"expected_cidrs": ["10.0.5.0/24"]},
                            "azure": {"suggest": True}}}
    with FakeImds([doc(H100)]) as imds:
        text = suggest_at_boot(cfg, run_dir, 5, imds.url)
    assert text is not None
    with open(os.path.join(run_dir, "azure-suggestion.yaml"), encoding="utf-8") as handle:
        assert handle.read() == text
    block = yaml.safe_load(text)["host_routing"]
    assert block["route_overlap"] == {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]}
    parse_host_routing(block)


def test_boot_never_raises_when_imds_is_unreachable(tmp_path: object) -> None:
    run_dir = os.path.join(str(tmp_path), "run")
    url = f"http://127.0.0.1:{_closed_port()}/metadata/instance"
    assert suggest_at_boot({"host_routing": {}}, run_dir, 0.5, url) is None
    with open(os.path.join(run_dir, "azure-suggestion.yaml"), encoding="utf-8") as handle:
        assert "IMDS unreachable at URL" in handle.read()


# ---------------------------------------------------------------------------
# End to end: the suggestion, applied with the real commands, passes STRICT
# ---------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    """The console script from the root namespace (where the fake IMDS listens)."""
    return sh(sys.executable, "-m", "cloudinit_hostrouting", *args, check=False, timeout=60)


def test_cli_is_wired_as_a_subcommand() -> None:
    result = _cli("azure-suggest", "--help")
    assert result.returncode == 0, result.stderr
    assert "--expected-cidr" in result.stdout and "--netns" in result.stdout


def test_applying_the_suggestion_makes_strict_check_pass(
        ndhost: NDHost, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """Suggest (in-process: the wiring has its own test), then the real units' commands."""
    config = os.path.join(str(tmp_path), "suggested.yaml")
    run_dir = os.path.join(str(tmp_path), "run")
    with FakeImds([doc(H100)]) as imds:
        assert _run(["--imds-url", imds.url, "--netns", ndhost.ns,
                     "--expected-cidr", CLUSTER_CIDR]) == 0
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(capsys.readouterr().out)

    validated = _cli("validate", config)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    before = ndhost.run_cli("check-overlap", "--config", config, "--run-dir", run_dir)
    assert before.returncode == 1, before.stdout + before.stderr  # STRICT sees the shadow
    applied = ndhost.run_cli("apply-routes", "--config", config)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = ndhost.run_cli("check-overlap", "--config", config, "--run-dir", run_dir)
    assert after.returncode == 0, after.stdout + after.stderr
    assert os.path.exists(os.path.join(run_dir, "route-overlap.ok"))
    assert ndhost.route_get_dev("10.0.5.1") == "eth0"
    assert ndhost.route_get_dev(IB_PEER_PROBE) == "ib0"  # IB peers keep InfiniBand
