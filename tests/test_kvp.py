"""The KVP pool reader and the InfiniBand rules, on real files in the real layout.

Pool files are written here with ``struct`` straight from the kernel's
``struct kvp_record`` (a 512-byte key, a 2048-byte value, NUL-padded, back to
back), not with anything from the package, so the reader is checked against the
layout and not against itself.  Every file state (missing, a directory, too
large, cut short, no key, malformed values) must give its line, never raise.

InfiniBand links cannot be created on this machine (no IB hardware; veth is
Ethernet), so the 20-byte address rule is checked on ``rtnl.Link`` records
built from a documented IPoIB address; the namespace tests
(test_ipoib_netns.py) cover real links by KVP MAC and by name.

The fuzz is deterministic in CI (derandomized, 150 examples); for a longer
local run set ``HR_FUZZ_EXAMPLES=5000``.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from pathlib import Path
from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudinit_hostrouting import ib, kvp
from cloudinit_hostrouting.rtnl import Address, Link

EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", "150"))
RECORD = struct.Struct("512s2048s")  # struct kvp_record, HV_KVP_EXCHANGE_MAX_*_SIZE


def pool(path: Path, records: List[Tuple[bytes, bytes]]) -> str:
    path.write_bytes(b"".join(RECORD.pack(k, v) for k, v in records))
    return str(path)


OTHERS = [(b"HostName", b"hv-host-17"), (b"PhysicalHostNameFullyQualified", b"x.example")]


def test_reads_pairs_after_other_records(tmp_path: Path) -> None:
    value = b"NUMPAIRS:2|00155D33FF1D:172.16.1.4|00155D33FF1E:172.16.1.5"
    read = kvp.read_ipoib(pool(tmp_path / "p", [*OTHERS, (b"IPoIB_Data", value)]))
    assert read.state == kvp.OK and read.problems == ()
    assert read.pairs == (kvp.Pair("00155D33FF1D", ipaddress.IPv4Address("172.16.1.4")),
                          kvp.Pair("00155D33FF1E", ipaddress.IPv4Address("172.16.1.5")))


def test_a_value_filling_all_2048_bytes_is_read_whole(tmp_path: Path) -> None:
    pairs = [f"00155D{i:06X}:10.0.{i // 250}.{i % 250 + 1}" for i in range(200)]
    value = f"NUMPAIRS:{len(pairs)}|" + "|".join(pairs)
    value = value[:2048].rsplit("|", 1)[0]
    value = f"NUMPAIRS:{value.count('|')}|" + value.split("|", 1)[1]
    assert len(value) <= 2048
    read = kvp.read_ipoib(pool(tmp_path / "p", [(b"IPoIB_Data", value.encode())]))
    assert read.state == kvp.OK, read.problems
    assert len(read.pairs) == value.count("|")


def test_the_first_ipoib_record_wins_like_the_agent(tmp_path: Path) -> None:
    read = kvp.read_ipoib(pool(tmp_path / "p", [
        (b"IPoIB_Data", b"NUMPAIRS:1|00155D33FF1D:172.16.1.4"),
        (b"IPoIB_Data", b"NUMPAIRS:1|00155D33FF1D:172.16.9.9")]))
    assert [str(p.address) for p in read.pairs] == ["172.16.1.4"]


def test_a_key_that_only_starts_with_the_name_is_not_it(tmp_path: Path) -> None:
    read = kvp.read_ipoib(pool(tmp_path / "p", [
        (b"IPoIB_DataX", b"NUMPAIRS:1|00155D33FF1D:172.16.1.4")]))
    assert read.state == kvp.NO_KEY and read.pairs == ()


@pytest.mark.parametrize("setup,state,words", [
    ("missing", kvp.ABSENT, "does not exist"),
    ("directory", kvp.UNREADABLE, "cannot be read"),
    ("huge", kvp.TOO_LARGE, "larger than"),
    ("nokey", kvp.NO_KEY, "no IPoIB_Data record"),
    ("empty", kvp.NO_KEY, "no IPoIB_Data record"),
    ("cut", kvp.OK, "not a whole number"),
    ("count", kvp.MALFORMED, "NUMPAIRS:3 but has 1"),
    ("nocount", kvp.MALFORMED, "not NUMPAIRS"),
    ("lowermac", kvp.MALFORMED, "not 12 upper-case hex"),
    ("colonmac", kvp.MALFORMED, "not 12 upper-case hex"),
    ("badip", kvp.MALFORMED, "not an IPv4 address"),
    ("v6", kvp.MALFORMED, "not an IPv4 address"),
    ("nopair", kvp.MALFORMED, "is not MAC:IP"),
    ("binary", kvp.MALFORMED, "not ASCII"),
    ("blank", kvp.MALFORMED, "value is empty"),
])
def test_every_file_state_is_a_line_not_an_exception(
        tmp_path: Path, setup: str, state: str, words: str) -> None:
    path = tmp_path / "pool"
    good = (b"IPoIB_Data", b"NUMPAIRS:1|00155D33FF1D:172.16.1.4")
    values = {"count": b"NUMPAIRS:3|00155D33FF1D:172.16.1.4",
              "nocount": b"PAIRS=1|00155D33FF1D:172.16.1.4",
              "lowermac": b"NUMPAIRS:1|00155d33ff1d:172.16.1.4",
              "colonmac": b"NUMPAIRS:1|00:15:5D:33:FF:1D:172.16.1.4",
              "badip": b"NUMPAIRS:1|00155D33FF1D:172.16.1.400",
              "v6": b"NUMPAIRS:1|00155D33FF1D:fd00::1",
              "nopair": b"NUMPAIRS:1|00155D33FF1D",
              "binary": b"NUMPAIRS:1|\xff\xfe",
              "blank": b""}
    if setup == "directory":
        path.mkdir()
    elif setup == "huge":
        with open(path, "wb") as f:
            f.truncate(kvp.KVP_POOL_MAX_BYTES + 1)  # sparse: a 1 MiB read of zeros
    elif setup == "nokey":
        pool(path, OTHERS)
    elif setup == "empty":
        path.write_bytes(b"")
    elif setup == "cut":
        path.write_bytes(RECORD.pack(*good) + RECORD.pack(*OTHERS[0])[:700])
    elif setup in values:
        pool(path, [*OTHERS, (b"IPoIB_Data", values[setup])])
    read = kvp.read_ipoib(str(path))
    assert read.state == state
    assert any(words in line and str(path) in line for line in read.problems), read.problems
    assert all("\n" not in line for line in read.problems)


def test_malformed_values_keep_the_pairs_that_parse_and_say_the_agent_would_not(
        tmp_path: Path) -> None:
    value = b"NUMPAIRS:2|00155d33ff1d:172.16.1.4|00155D33FF1E:172.16.1.5"
    read = kvp.read_ipoib(pool(tmp_path / "p", [(b"IPoIB_Data", value)]))
    assert [p.mac for p in read.pairs] == ["00155D33FF1E"]
    assert any("assigns no address" in line for line in read.problems)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(data=st.binary(max_size=3 * RECORD.size),
       value=st.text(alphabet="NUMPAIRS:|0123456789ABCDEFabcdef.x\x00\xe9", max_size=120))
def test_fuzz_the_reader_never_raises(tmp_path_factory: pytest.TempPathFactory,
                                      data: bytes, value: str) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    for i, blob in enumerate((data, RECORD.pack(b"IPoIB_Data", value.encode()[:2048]) + data)):
        path = base / f"p{i}"
        path.write_bytes(blob)
        read = kvp.read_ipoib(str(path), max_bytes=4 * RECORD.size)
        assert read.state in (kvp.OK, kvp.NO_KEY, kvp.MALFORMED, kvp.TOO_LARGE)
        assert all(kvp.MAC_RE.match(p.mac) for p in read.pairs)
        # A value problem, and only that, makes the state malformed.
        assert (read.state == kvp.MALFORMED) == any(
            line.startswith(f"KVP pool {path}: ") for line in read.problems)


# --- InfiniBand links -------------------------------------------------------------

# An IPoIB hardware address as `ip link` prints it: 4 bytes of flags/QPN, the
# 8-byte subnet prefix, the 8-byte port GUID.  The agent's MAC is the GUID's
# bytes 0-2 and 5-7 (drops the two middle "ff:fe"-like bytes).
IB_HWADDR = "00:00:01:49:fe:80:00:00:00:00:00:00:00:15:5d:ff:fd:33:ff:1d"
IB_KVP_MAC = "00155D33FF1D"


def link(index: int, name: str, kind: int, hwaddr: str) -> Link:
    return Link(index, name, kind, bytes.fromhex(hwaddr.replace(":", "")))


def test_kvp_mac_of_ethernet_and_infiniband_addresses() -> None:
    assert ib.kvp_mac(link(3, "eth1", 1, "00:15:5d:33:ff:1d")) == "00155D33FF1D"
    assert ib.kvp_mac(link(4, "ibP1s1", 32, IB_HWADDR)) == IB_KVP_MAC
    assert ib.kvp_mac(link(1, "lo", 772, "00:00:00:00:00:00")) == "000000000000"
    assert ib.kvp_mac(link(9, "tun0", 65534, "")) is None


def test_infiniband_by_type_then_kvp_mac_then_name() -> None:
    links = [link(2, "eth0", 1, "00:0d:3a:10:01:3b"),
             link(3, "eth1", 1, "00:15:5d:33:ff:35"),  # Ethernet-backend RDMA NIC
             link(4, "ibP257s1", 32, IB_HWADDR),  # renamed IPoIB link
             link(5, "ib7", 1, "02:00:00:00:00:07"),  # only its name says so
             link(6, "eth2", 1, "00:15:5d:33:ff:36")]
    pairs = [kvp.Pair("00155D33FF35", ipaddress.IPv4Address("172.16.1.9"))]
    found = {lk.name: lk.reason for lk in ib.infiniband_links(links, pairs)}
    assert found == {"eth1": ib.BY_KVP_MAC, "ibP257s1": ib.BY_TYPE, "ib7": ib.BY_NAME}


def test_state_pending_assigned_and_unmatched() -> None:
    links = [link(2, "eth0", 1, "00:0d:3a:10:01:3b"), link(4, "ibP257s1", 32, IB_HWADDR),
             link(5, "eth1", 1, "00:15:5d:33:ff:35")]
    pairs = [kvp.Pair(IB_KVP_MAC, ipaddress.IPv4Address("172.16.1.4")),
             kvp.Pair("00155D33FF35", ipaddress.IPv4Address("172.16.1.9")),
             kvp.Pair("00155D000000", ipaddress.IPv4Address("172.16.1.10"))]
    addrs = [Address(2, "10.1.0.4", 24), Address(5, "172.16.1.9", 16),
             Address(4, "fe80::1", 64)]
    state = ib.ipoib_state(links, addrs, pairs)
    assert [(p.ifname, str(p.network)) for p in state.pending] == [
        ("ibP257s1", "172.16.0.0/16"), ("the link with MAC 00155D000000", "172.16.0.0/16")]
    assert state.assigned == ((pairs[1], "eth1"),)
    assert state.with_ipv4 == frozenset({"eth1"})
    assert state.waiting_for() == ["ibP257s1", "the link with MAC 00155D000000"]
    assert [line for line in state.problems if "00155D000000" in line and "no interface"
            in line]
    assert state.pending[0].describe() == (
        "172.16.0.0/16 on ibP257s1, from KVP IPoIB_Data, not yet assigned")


@pytest.mark.parametrize("text,expected", [
    ("OS.EnableRDMA=y\n", True),
    ("# OS.EnableRDMA=y\nOS.EnableRDMA=n\n", False),
    ("OS.EnableRDMA = Y  # HPC image\n", True),
    ("OS.EnableRDMA=y\nOS.EnableRDMA=n\n", False),
    ("Provisioning.Agent=auto\n", False),
    (None, None),
])
def test_rdma_enabled_reads_waagent_conf_under_the_root(
        tmp_path: Path, text: str, expected: bool) -> None:
    if text is not None:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/waagent.conf").write_text(text)
    enabled, line = kvp.rdma_enabled(str(tmp_path))
    assert enabled is expected
    assert str(tmp_path / "etc/waagent.conf") in line


@pytest.mark.parametrize("key,value,ok", [
    ("anticipate_ipoib", "auto", True), ("anticipate_ipoib", "never", True),
    ("anticipate_ipoib", "always", True), ("anticipate_ipoib", "sometimes", False),
    ("anticipate_ipoib", "AUTO", False), ("anticipate_ipoib", "auto\n", False),
    ("wait_for_ipoib", 0, True), ("wait_for_ipoib", 600, True),
    ("wait_for_ipoib", 601, False), ("wait_for_ipoib", -1, False),
    ("wait_for_ipoib", True, False), ("wait_for_ipoib", 1.5, False),
    ("wait_for_ipoib", float("nan"), False), ("wait_for_ipoib", "30", False),
])
def test_route_overlap_ipoib_keys_are_bounded(key: str, value: object, ok: bool) -> None:
    from cloudinit_hostrouting.config import ConfigError, parse

    raw = {"route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"], key: value}}
    if ok:
        cfg = parse(raw)
        assert getattr(cfg, key) == value
        assert parse(cfg.to_dict()) == cfg  # what the module writes, the units read back
    else:
        with pytest.raises(ConfigError) as err:
            parse(raw)
        assert f"host_routing.route_overlap.{key}" in str(err.value)
