"""azure-suggest's block, applied with apply-routes, makes check-overlap pass in STRICT.

Everything is real: IMDS is the HTTP server of tests/fake_imds.py, the kernel
is a network namespace (tests/netns.py), the KVP pool is a file in the binary
record layout written here by an independent writer (512-byte NUL-padded key,
2048-byte NUL-padded value, as ``struct kvp_record`` in the kernel's
tools/hv/hv_kvp_daemon.c), and the suggestion is judged by running the real
``apply-routes`` and ``check-overlap`` commands inside the namespace.

The negative controls apply the block the old IB-only computation produced
(``shadowed_parts``/``override_routes``: only connected routes on ``ib*``
links, present ones only, the /16 assumed when ib0 had no address).  Its
output is written out by hand from that rule, as a control, and STRICT
rejects it where a pending route or a non-IB route shadows.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from fake_imds import FakeImds, doc, load_fixture
from netns import ETH_GW, NDHost, sh

from cloudinit_hostrouting import cli

H100 = load_fixture("ND96isr_H100_v5")
RDMA_ON = "# Azure HPC image\nOS.EnableRDMA=y\n"


def write_pool(path: str, records: List[Tuple[str, str]]) -> str:
    """A KVP pool file: records back to back, each key[512] and value[2048], NUL-padded."""
    with open(path, "wb") as handle:
        for key, value in records:
            k, v = key.encode(), value.encode()
            assert len(k) < 512 and len(v) < 2048
            handle.write(k.ljust(512, b"\0") + v.ljust(2048, b"\0"))
    return path


def ipoib_value(pairs: List[Tuple[str, str]]) -> str:
    return "|".join([f"NUMPAIRS:{len(pairs)}"] + [f"{mac}:{ip}" for mac, ip in pairs])


def suggest_cli(host: NDHost, *args: str, capsys: Any, document: Dict[str, Any] = H100
                ) -> Tuple[int, str, str]:
    with FakeImds([doc(document)]) as imds:
        rc = cli.main(["azure-suggest", "--imds-url", imds.url, "--netns", host.ns, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def prose(out: str) -> str:
    """The comments of a YAML suggestion as one line of words, unwrapped."""
    lines = [line.lstrip("#").strip() for line in out.splitlines() if line.startswith("#")]
    return " ".join(" ".join(lines).split())


def save(tmp: Any, name: str, text: str) -> str:
    path = os.path.join(str(tmp), name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class Farm:
    """An ND96isr_H100_v5-like node: eth0 (default route), ib0..ib7 and eth1, no IB address.

    The IB links are veths (link/ether) named ib0..ib7; eth1 is an RDMA NIC
    with an Ethernet name, found only by its MAC in the KVP pool.  Each link
    has a fixed MAC, so the pool can name it.
    """

    def __init__(self, tmp: Any):
        self.host = NDHost(ib=False)
        self.macs: Dict[str, str] = {}
        try:
            for n, name in enumerate([f"ib{i}" for i in range(8)] + ["eth1"]):
                tag = uuid.uuid4().hex[:6]
                a, b = f"a{tag}", f"b{tag}"
                sh("ip", "link", "add", a, "netns", self.host.ns, "type", "veth",
                   "peer", "name", b, "netns", self.host.peer)
                mac = f"02:00:00:00:01:{n:02x}"
                self.host.ip("link", "set", a, "name", name)
                self.host.ip("link", "set", name, "address", mac)
                self.host.ip("link", "set", name, "up")
                sh("ip", "-n", self.host.peer, "link", "set", b, "up")
                self.macs[name] = mac.replace(":", "").upper()
        except BaseException:
            self.host.close()
            raise
        # The addresses the host announces: eight in one /16 (one per IB NIC, as
        # on ND96isr_H100_v5), and eth1's in the /16 that holds the cluster CIDR.
        self.addresses = {f"ib{i}": f"172.16.1.{i + 1}" for i in range(8)}
        self.addresses["eth1"] = "10.0.200.9"
        pairs = [(self.macs[name], ip) for name, ip in self.addresses.items()]
        self.pool = write_pool(os.path.join(str(tmp), "kvp_pool_0"), [
            ("HostName", "node-0017"),
            ("IPoIB_Data", ipoib_value(pairs)),
        ])
        self.root = os.path.join(str(tmp), "root")
        os.makedirs(os.path.join(self.root, "etc"))
        save(os.path.join(self.root, "etc"), "waagent.conf", RDMA_ON)
        self.run_dir = os.path.join(str(tmp), "run")

    def check(self, config: str) -> Any:
        return self.host.run_cli("check-overlap", "--config", config, "--run-dir",
                                 self.run_dir, "--kvp-pool", self.pool, "--root", self.root)

    def apply(self, config: str) -> Any:
        result = self.host.run_cli("apply-routes", "--config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def assign_all(self) -> None:
        """What the guest agent does late: ``ip addr add IP/16 dev NIC``."""
        for name, ip in self.addresses.items():
            self.host.ip("addr", "add", f"{ip}/16", "dev", name)


@pytest.fixture
def farm(tmp_path: Any) -> Iterator[Farm]:
    f = Farm(tmp_path)
    yield f
    f.host.close()


EXPECTED = ["10.0.5.0/24", "172.16.5.0/24", "10.96.0.0/12"]


def test_kvp_suggestion_passes_strict_with_pending_routes_and_the_old_block_does_not(
        farm: Farm, tmp_path: Any, capsys: Any) -> None:
    analysis_path = os.path.join(str(tmp_path), "analysis.json")
    args = ["--kvp-pool", farm.pool, "--analysis", analysis_path]
    for cidr in EXPECTED:
        args += ["--expected-cidr", cidr]
    rc, out, err = suggest_cli(farm.host, *args, capsys=capsys)
    assert rc == 0, err
    block = yaml.safe_load(out)["host_routing"]
    assert block["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/24", "gateway": ETH_GW},
        {"destination": "172.16.5.0/24", "gateway": ETH_GW}]
    assert "#   10.0.200.9" not in out  # pending routes are listed by route, not by address
    assert "# Routes that are not there yet are included" in out
    assert "#   10.0.0.0/16 on eth1, from KVP IPoIB_Data, not yet assigned" in out
    with open(analysis_path, encoding="utf-8") as handle:
        analysis = json.load(handle)
    assert analysis["verified"] is True and analysis["kvp"]["state"] == "ok"
    assert len(analysis["pending"]) == 9
    reasons = {link["name"]: link["reason"] for link in analysis["ib_links"]}
    assert reasons["eth1"] == "KVP MAC"  # matched by MAC only: its name says nothing
    suggested = save(tmp_path, "suggested.yaml", out)

    # Negative control: the old IB-only block.  No IB address yet, so it assumed
    # 172.16.0.0/16 on ib0 and routed only what that shadows; eth1's announced
    # 10.0.0.0/16 was invisible to it.
    old = save(tmp_path, "old.yaml", yaml.safe_dump({"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "172.16.5.0/24", "gateway": ETH_GW}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": EXPECTED}}}))
    before = farm.check(suggested)
    assert before.returncode == 1, before.stdout + before.stderr  # the shadows are predicted
    farm.apply(old)
    control = farm.check(old)
    assert control.returncode == 1, control.stdout + control.stderr
    assert "10.0.5.0/24" in control.stdout
    assert "10.0.0.0/16 on eth1, from KVP IPoIB_Data, not yet assigned" in control.stdout

    farm.apply(suggested)
    after = farm.check(suggested)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "(IPoIB routes to come included)" in after.stdout
    # The agent assigns the addresses: the verdict stands, and the kernel agrees.
    farm.assign_all()
    late = farm.check(suggested)
    assert late.returncode == 0, late.stdout + late.stderr
    assert farm.host.route_get_dev("10.0.5.1") == "eth0"
    assert farm.host.route_get_dev("172.16.5.1") == "eth0"
    assert farm.host.route_get_dev("10.0.77.1") == "eth1"  # other RDMA peers keep RDMA
    assert (farm.host.route_get_dev("172.16.77.1") or "").startswith("ib")


def test_non_ib_route_shadowing_is_fixed_and_the_old_block_fails_strict(
        host: NDHost, tmp_path: Any, capsys: Any) -> None:
    """A static route via another NIC (not IB) inside the cluster CIDR: the old
    computation never looked at it; check-overlap does, and so does the suggester."""
    tag = uuid.uuid4().hex[:6]
    sh("ip", "link", "add", f"a{tag}", "netns", host.ns, "type", "veth",
       "peer", "name", f"b{tag}", "netns", host.peer)
    host.ip("link", "set", f"a{tag}", "name", "eth1")
    host.ip("addr", "add", "10.2.0.4/24", "dev", "eth1")
    host.ip("link", "set", "eth1", "up")
    sh("ip", "-n", host.peer, "link", "set", f"b{tag}", "up")
    host.ip("route", "add", "10.0.5.128/25", "via", "10.2.0.1", "dev", "eth1", "proto", "static")
    run_dir = os.path.join(str(tmp_path), "run")
    absent = os.path.join(str(tmp_path), "no-pool")

    rc, out, err = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--kvp-pool", absent,
                               capsys=capsys)
    assert rc == 0, err
    assert yaml.safe_load(out)["host_routing"]["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/25", "gateway": ETH_GW},
        {"destination": "10.0.5.128/26", "gateway": ETH_GW},  # halves: never the same
        {"destination": "10.0.5.192/26", "gateway": ETH_GW}]  # prefix as a foreign route
    assert "# Override 10.0.5.128/25 via 10.2.0.1 dev eth1 proto static" in out
    suggested = save(tmp_path, "suggested.yaml", out)

    def check(config: str) -> Any:
        return host.run_cli("check-overlap", "--config", config, "--run-dir", run_dir,
                            "--kvp-pool", absent)

    # Negative control: the old block (IB-only: 10.0.5.0/24 out of ib0's /16).
    old = save(tmp_path, "old.yaml", yaml.safe_dump({"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/24", "gateway": ETH_GW}]},
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"]}}}))
    assert host.run_cli("apply-routes", "--config", old).returncode == 0
    control = check(old)
    assert control.returncode == 1, control.stdout
    assert "routes via eth1" in control.stdout or "via eth1" in control.stdout

    applied = host.run_cli("apply-routes", "--config", suggested)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = check(suggested)
    assert after.returncode == 0, after.stdout + after.stderr
    assert host.route_get_dev("10.0.5.130") == "eth0"
    assert host.routes("10.0.5.128/25")[0]["dev"] == "eth1"  # theirs, untouched


def test_config_keeps_routes_gates_and_guard_and_json_is_user_data(
        host: NDHost, tmp_path: Any, capsys: Any) -> None:
    user = {"host_routing": {
        "static_routes": {"enabled": True, "routes": [
            {"destination": "10.0.5.0/25", "gateway": ETH_GW}]},
        "route_overlap": {"mode": "WARN", "expected_cidrs": ["10.0.5.0/24"],
                          "anticipate_ipoib": "always"},
        "gate_units": ["kubelet.service", "systemd-nspawn@kube1.service"],
        "guard": {"enabled": True, "auto_mitigate": True},
    }}
    config = save(tmp_path, "user.yaml", yaml.safe_dump(user))
    absent = os.path.join(str(tmp_path), "no-pool")
    rc, out, err = suggest_cli(host, "--config", config, "--format", "json",
                               "--kvp-pool", absent, capsys=capsys)
    assert rc == 0, err
    document = json.loads(out)
    assert list(document) == ["host_routing"]  # a user-data document, nothing beside it
    block = document["host_routing"]
    # The user's route stays and counts: only the other half still needs one.
    assert block["static_routes"]["routes"] == [
        {"destination": "10.0.5.0/25", "gateway": ETH_GW},
        {"destination": "10.0.5.128/25", "gateway": ETH_GW}]
    assert block["gate_units"] == user["host_routing"]["gate_units"]
    assert block["guard"] == {"enabled": True, "auto_mitigate": True}
    assert block["route_overlap"] == {"mode": "STRICT", "expected_cidrs": ["10.0.5.0/24"],
                                      "anticipate_ipoib": "always"}
    as_user_data = save(tmp_path, "user-data", "#cloud-config\n" + out)
    validated = host.run_cli("validate", as_user_data)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    suggested = save(tmp_path, "suggested.json", out)
    assert host.run_cli("apply-routes", "--config", suggested).returncode == 0
    run_dir = os.path.join(str(tmp_path), "run")
    after = host.run_cli("check-overlap", "--config", suggested, "--run-dir", run_dir,
                         "--kvp-pool", absent)
    assert after.returncode == 0, after.stdout + after.stderr


def test_whole_ib_range_inside_expected_is_split_in_halves_and_warned(
        tmp_path: Any, capsys: Any) -> None:
    host = NDHost(ib_addr="172.16.1.9/16")
    try:
        rc, out, err = suggest_cli(host, "--expected-cidr", "172.16.0.0/12", "--kvp-pool",
                                   os.path.join(str(tmp_path), "none"), capsys=capsys,
                                   document=load_fixture("ND96isr_H200_v5"))
    finally:
        host.close()
    assert rc == 0, err
    # H200's VNet is 10.8.0.0/22 (gateway 10.8.0.1), the kernel's is 10.1.0.1: IMDS wins.
    assert yaml.safe_load(out)["host_routing"]["static_routes"]["routes"] == [
        {"destination": "172.16.0.0/17", "gateway": "10.8.0.1"},
        {"destination": "172.16.128.0/17", "gateway": "10.8.0.1"}]
    assert "contains the whole route 172.16.0.0/16" in prose(out)
    assert "default gateway 10.1.0.1 is not 10.8.0.1" in prose(out)


def test_no_shadow_gives_only_the_strict_check(host: NDHost, tmp_path: Any,
                                               capsys: Any) -> None:
    rc, out, _ = suggest_cli(host, "--expected-cidr", "192.168.0.0/16", "--kvp-pool",
                             os.path.join(str(tmp_path), "none"), capsys=capsys)
    assert rc == 0
    assert yaml.safe_load(out) == {"host_routing": {
        "route_overlap": {"mode": "STRICT", "expected_cidrs": ["192.168.0.0/16"]}}}
    assert "finds no expected CIDR shadowed" in out


def test_no_ib_address_and_no_kvp_assumes_azure_rdma_range(host: NDHost, tmp_path: Any,
                                                           capsys: Any) -> None:
    host.ip("addr", "flush", "dev", "ib0")
    rc, out, _ = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--expected-cidr",
                             "172.16.4.0/24", "--kvp-pool",
                             os.path.join(str(tmp_path), "none"), capsys=capsys)
    assert rc == 0
    assert yaml.safe_load(out)["host_routing"]["static_routes"]["routes"] == [
        {"destination": "172.16.4.0/24", "gateway": ETH_GW}]
    assert "assumes Azure's usual RDMA range 172.16.0.0/16 on ib0" in prose(out)


def test_a_prohibit_rule_cannot_be_fixed_and_is_not_called_verified(
        host: NDHost, tmp_path: Any, capsys: Any) -> None:
    """A rule that refuses the cluster beats any main-table route: the suggestion says
    so instead of claiming STRICT will pass."""
    host.ip("rule", "add", "to", "10.0.5.0/24", "prohibit", "priority", "100")
    analysis = os.path.join(str(tmp_path), "a.json")
    rc, out, _ = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--analysis", analysis,
                             "--kvp-pool", os.path.join(str(tmp_path), "none"), capsys=capsys)
    assert rc == 0
    with open(analysis, encoding="utf-8") as handle:
        result = json.load(handle)
    assert result["verified"] is False and result["unresolved"][0]["status"] == "no-route"
    assert "STRICT will fail until it is fixed" in prose(out)


def test_a_rule_to_another_table_is_not_vouched_for(host: NDHost, tmp_path: Any,
                                                    capsys: Any) -> None:
    """The rule's table sends the cluster out of ib0 as the main table does: the routes
    to be added cannot be judged before they exist, so no claim is made."""
    host.ip("route", "add", "10.0.5.0/24", "dev", "ib0", "table", "100")
    host.ip("rule", "add", "to", "10.0.5.0/24", "lookup", "100", "priority", "100")
    analysis = os.path.join(str(tmp_path), "a.json")
    rc, out, _ = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--analysis", analysis,
                             "--kvp-pool", os.path.join(str(tmp_path), "none"), capsys=capsys)
    assert rc == 0
    with open(analysis, encoding="utf-8") as handle:
        assert json.load(handle)["verified"] is False
    assert "Policy rules select 10.0.5.0/24" in prose(out)
    # And rightly: applied, the block does not make STRICT pass.
    config = save(tmp_path, "s.yaml", out)
    applied = host.run_cli("apply-routes", "--config", config)
    assert applied.returncode == 1 and "does not take effect" in applied.stderr
    check = host.run_cli("check-overlap", "--config", config, "--run-dir",
                         os.path.join(str(tmp_path), "run"), "--kvp-pool",
                         os.path.join(str(tmp_path), "none"))
    assert check.returncode == 1, check.stdout


def test_kvp_pool_problems_are_warnings_not_crashes(host: NDHost, tmp_path: Any,
                                                    capsys: Any) -> None:
    pool = write_pool(os.path.join(str(tmp_path), "pool"),
                      [("IPoIB_Data", "NUMPAIRS:2|NOTAMAC:10.0.0.1")])
    rc, out, err = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--kvp-pool", pool,
                               capsys=capsys)
    assert rc == 0, err
    assert "# WARNING: " in out and pool in prose(out)
    assert "Traceback" not in err


def test_unwritable_analysis_path_is_a_usage_error(host: NDHost, tmp_path: Any,
                                                   capsys: Any) -> None:
    blocker = save(tmp_path, "a-file", "")
    target = os.path.join(blocker, "a.json")  # its "directory" is a file
    rc, out, err = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--analysis", target,
                               "--kvp-pool", os.path.join(str(tmp_path), "none"),
                               capsys=capsys)
    assert rc == 2 and out == ""
    assert f"cannot write --analysis {target}" in err


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
README_COMMAND = ("$ cloudinit-hostrouting azure-suggest --expected-cidr 10.0.5.0/24 "
                  "--expected-cidr 10.96.0.0/12\n")


def test_readme_sample_is_what_the_command_prints(host: NDHost, capsys: Any) -> None:
    """The README's sample, byte for byte, from the namespace it describes."""
    from cloudinit_hostrouting.constants import KVP_POOL_PATH

    if os.path.exists(KVP_POOL_PATH):
        pytest.skip(f"this host has a KVP pool at {KVP_POOL_PATH}; the sample has none")
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index(README_COMMAND) + len(README_COMMAND)
    sample = text[start:text.index("```", start)]
    rc, out, err = suggest_cli(host, "--expected-cidr", "10.0.5.0/24", "--expected-cidr",
                               "10.96.0.0/12", capsys=capsys)
    assert rc == 0, err
    assert out == sample


def test_non_infiniband_json_is_an_empty_document(tmp_path: Any, capsys: Any) -> None:
    analysis = os.path.join(str(tmp_path), "a.json")
    with FakeImds([doc(load_fixture("D4s_v5"))]) as imds:
        rc = cli.main(["azure-suggest", "--imds-url", imds.url, "--format", "json",
                       "--expected-cidr", "10.0.5.0/24", "--analysis", analysis])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out) == {}
    assert out.err.startswith("Standard_D4s_v5 is not an InfiniBand size")
    with open(analysis, encoding="utf-8") as handle:
        assert json.load(handle)["infiniband"] is False
