"""Tests for the IMDS client, the size table and the instance-document parser.

Nothing is mocked: IMDS is a real HTTP server on 127.0.0.1 (tests/fake_imds.py),
and "not on Azure" is a real closed port there.  The suggestion itself, against
real namespaces and a real KVP pool file, is in tests/test_azure_suggest.py;
first boot in tests/test_azure_boot.py.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import List

import pytest
from fake_imds import HANG, Answer, FakeImds, doc, error, load_fixture
from netns import sh

from cloudinit_hostrouting import cli
from cloudinit_hostrouting.azure_instance import (
    DocumentError,
    Instance,
    Nic,
    choose_primary_nic,
    parse_instance,
)
from cloudinit_hostrouting.azure_sizes import is_infiniband_size
from cloudinit_hostrouting.imds import MAX_ATTEMPTS, ImdsError, fetch_instance

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
    with pytest.raises(DocumentError, match=r"no compute\.vmSize"):
        parse_instance(document)
    with pytest.raises(DocumentError, match=r"no compute\.vmSize"):
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
    assert elapsed < MAX_ATTEMPTS * 1.0


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


def test_connection_refused_says_not_on_azure_and_fails_at_once() -> None:
    """A closed port on 127.0.0.1 refuses for real: one attempt, not the whole deadline.

    The bound (a tenth of the deadline) is not a speed measurement: the old
    client retried for all 30 s; one refused connect takes milliseconds.
    """
    url = f"http://127.0.0.1:{_closed_port()}/metadata/instance"
    start = time.monotonic()
    with pytest.raises(ImdsError) as info:
        fetch_instance(url, 30.0, max_attempts=50, backoff=0.5)
    assert time.monotonic() - start < 3.0
    assert str(info.value).startswith(f"IMDS unreachable at URL: {url} (ConnectionRefusedError")
    assert str(info.value).endswith("(not on Azure?)")


# ---------------------------------------------------------------------------
# The azure-suggest command (in-process, through the real CLI parser)
# ---------------------------------------------------------------------------

def _run(argv: List[str]) -> int:
    return cli.main(["azure-suggest", *argv])


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
# End to end: the suggestion, applied with the real commands, passes STRICT
# ---------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    """The console script from the root namespace (where the fake IMDS listens)."""
    return sh(sys.executable, "-m", "cloudinit_hostrouting", *args, check=False, timeout=60)


def test_cli_is_wired_as_a_subcommand() -> None:
    result = _cli("azure-suggest", "--help")
    assert result.returncode == 0, result.stderr
    assert "--expected-cidr" in result.stdout and "--netns" in result.stdout


# ---------------------------------------------------------------------------
# Fuzz: no document, from HTTP or from cloud-init, gives a traceback
# ---------------------------------------------------------------------------

# Fixed seed and count in CI; HR_FUZZ_EXAMPLES=100000 for a longer local run.
FUZZ_EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", "3000"))
ODD_VALUES = [None, True, 0, -1, 2 ** 70, 1.5, float("nan"), "", "x" * 300, "10.0.0.1",
              "10.0.0.0", "24", "33", "fe80::1", [], [None], {}, {"a": 1}, [[[]]],
              "Standard_ND96isr_H100_v5", " ", "\u0000", "1" * 50]


def _mutate(rng: random.Random, node: object, depth: int = 0) -> object:
    """``node`` with some values replaced by odd ones, keys dropped or added."""
    if rng.random() < 0.08 or depth > 8:
        return rng.choice(ODD_VALUES)
    if isinstance(node, dict):
        out = {k: _mutate(rng, v, depth + 1) for k, v in node.items() if rng.random() > 0.05}
        if rng.random() < 0.05:
            out[rng.choice(["vmSize", "ipv4", "subnet", "prefix", "x"])] = rng.choice(ODD_VALUES)
        return out
    if isinstance(node, list):
        items = [_mutate(rng, v, depth + 1) for v in node]
        if rng.random() < 0.1:
            items.append(rng.choice(ODD_VALUES))
        return items
    return node


def test_fuzz_instance_documents_never_raise_anything_but_document_error() -> None:
    rng = random.Random(20261202)
    bases = [load_fixture(n) for n in ("ND96isr_H100_v5", "ND96isr_H100_v5_nic_order",
                                       "ND96isr_H200_v5", "D4s_v5")]
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(FUZZ_EXAMPLES):
        document = _mutate(rng, rng.choice(bases))
        try:
            inst = parse_instance(document)
        except DocumentError as err:
            assert "compute.vmSize" in str(err)
            outcomes["refused"] += 1
            continue
        assert isinstance(inst.vm_size, str) and inst.vm_size
        assert all(isinstance(n.mac, str) for n in inst.nics)
        outcomes["parsed"] += 1
    # The fuzzer reaches both sides: it is not feeding only valid or only broken input.
    assert outcomes["parsed"] > FUZZ_EXAMPLES // 10 and outcomes["refused"] > 10


@pytest.mark.parametrize("body", [
    b"[" * 100_000,  # deeper than json's recursion limit
    b'{"compute": {"vmSize": ' + b"9" * 5000 + b"}}",  # past int's digit limit
    b"\xff\xfe not UTF-8",
    b'{"compute": {"vmSize": 7}}',
    b'{"compute": []}',
    b"null",
])
def test_cli_bad_imds_bodies_exit_1_without_traceback(body: bytes) -> None:
    with FakeImds([Answer(200, body)]) as imds_server:
        result = _cli("azure-suggest", "--imds-url", imds_server.url, "--timeout", "5",
                      "--expected-cidr", "10.0.5.0/24")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("azure-suggest: ")

