"""The IPoIB race against the real kernel: the gate judges the table as it will be.

A namespace shaped like an ND96isr node: ``eth0`` with the default route,
eight IB-like links ``ib0``..``ib7`` and an Ethernet-backend RDMA NIC ``eth1``
(veth pairs: this machine has no InfiniBand, and ``dummy`` does not exist), all
without addresses, as at first boot before the Azure guest agent runs.  A real
KVP pool file in the kernel's record layout (``struct kvp_record``, written here
with ``struct``) announces one address per link, all in 10.0.0.0/16, matched by
MAC: ``eth1`` only by MAC.  Adding an address here does what the agent does
(``ip addr add IP/16``), and the kernel's own ``ip route get`` is the oracle for
whether a prediction came true.

The check and the guard run as their units run them.  Waits are bounded polls
for a state, never assertions about speed.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
from netns import CLUSTER_CIDR, NDHost, sh
from test_guard_netns import GuardProcess, wait_for

from cloudinit_hostrouting import analysis, kvp, overlap
from cloudinit_hostrouting.config import parse
from cloudinit_hostrouting.netlink import Kernel
from cloudinit_hostrouting.routes import Waiter

IB_NAMES = [f"ib{i}" for i in range(8)] + ["eth1"]
ADDRS = {name: f"10.0.200.{i + 1}" for i, name in enumerate(IB_NAMES)}
# The order the addresses arrive in: not the pool's, so the link the kernel's
# first /16 sits on (the one it then answers with) is not the one predicted.
ARRIVALS = ["ib3", "eth1", "ib0", "ib7", "ib1", "ib6", "ib2", "ib5", "ib4"]
RECORD = struct.Struct("512s2048s")  # struct kvp_record
PENDING_RE = re.compile(r"10\.0\.0\.0/16 on (ib\d|eth1), from KVP IPoIB_Data, not yet assigned")


class Farm:
    """The node namespace with its IB-like links, its KVP pool and an image root."""

    def __init__(self, tmp_path: Path, rdma: Optional[str] = "y",
                 pool_value: Optional[str] = None):
        self.tmp = tmp_path
        self.host = NDHost(ib=False)
        try:
            for name in IB_NAMES:
                tag = uuid.uuid4().hex[:6]
                a, b = f"a{tag}", f"b{tag}"
                sh("ip", "link", "add", a, "netns", self.host.ns, "type", "veth",
                   "peer", "name", b, "netns", self.host.peer)
                self.host.ip("link", "set", a, "name", name)
                self.host.ip("link", "set", name, "up")
                sh("ip", "-n", self.host.peer, "link", "set", b, "up")
            links = json.loads(self.host.ip("-j", "link", "show").stdout)
            self.macs = {lk["ifname"]: lk["address"].replace(":", "").upper() for lk in links}
            value = pool_value if pool_value is not None else self.ipoib_value()
            self.pool = tmp_path / "kvp_pool_0"
            self.pool.write_bytes(RECORD.pack(b"HostName", b"hv-host-17")
                                  + RECORD.pack(b"IPoIB_Data", value.encode())
                                  + RECORD.pack(b"NdDriverVersion", b"144.0"))
            self.root = tmp_path / "root"
            (self.root / "etc").mkdir(parents=True)
            if rdma is not None:
                (self.root / "etc/waagent.conf").write_text(
                    f"Provisioning.Agent=auto\nOS.EnableRDMA={rdma}\n")
        except BaseException:
            self.host.close()
            raise

    def ipoib_value(self, names: Sequence[str] = IB_NAMES) -> str:
        return f"NUMPAIRS:{len(names)}|" + "|".join(f"{self.macs[n]}:{ADDRS[n]}" for n in names)

    def assign(self, name: str, address: Optional[str] = None) -> None:
        """What the agent does: ``ip addr add IP/16 dev NIC``."""
        self.host.ip("addr", "add", f"{address or ADDRS[name]}/16", "dev", name)

    def config(self, mode: str = "STRICT", fix: bool = False, **overlap_keys: Any) -> str:
        body: Dict[str, Any] = {"route_overlap": {"mode": mode, "expected_cidrs": [CLUSTER_CIDR],
                                                  **overlap_keys}}
        if fix:
            body["static_routes"] = {"enabled": True, "routes": [{"destination": CLUSTER_CIDR}]}
        path = self.tmp / f"cfg-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps({"host_routing": body}))
        return str(path)

    def ipoib_args(self, pool: Optional[str] = None) -> List[str]:
        return ["--kvp-pool", pool or str(self.pool), "--root", str(self.root)]

    def check(self, cfg: str, *extra: str, wait: str = "0",
              pool: Optional[str] = None) -> Checked:
        run = self.tmp / f"run-{uuid.uuid4().hex[:6]}"
        proc = self.host.run_cli("check-overlap", "--config", cfg, "--run-dir", str(run),
                                 "--wait", wait, *self.ipoib_args(pool), *extra)
        return Checked(proc, json.loads((run / "status.json").read_text()))

    def close(self) -> None:
        self.host.close()


class Checked:
    def __init__(self, proc: subprocess.CompletedProcess, status: Dict[str, Any]):
        self.rc, self.out, self.err, self.status = (
            proc.returncode, proc.stdout, proc.stderr, status)
        assert "Traceback" not in proc.stderr, proc.stderr

    @property
    def ipoib(self) -> Dict[str, Any]:
        return self.status["ipoib"]

    def __repr__(self) -> str:
        return f"rc={self.rc}\n{self.out}{self.err}"


@pytest.fixture
def farm_factory(tmp_path: Path) -> Any:
    made: List[Farm] = []

    def make(**kwargs: Any) -> Farm:
        sub = tmp_path / f"farm{len(made)}"
        sub.mkdir()
        made.append(Farm(sub, **kwargs))
        return made[-1]

    yield make
    for farm in made:
        farm.close()


def guard_in(farm: Farm, cfg: str) -> GuardProcess:
    return GuardProcess(farm.host, cfg, farm.tmp / "guard-run", extra=farm.ipoib_args())


def pending_count(guard: GuardProcess) -> int:
    return len(guard.status()["ipoib"]["pending"])


def test_predicted_shadow_fails_strict_until_the_fix_then_arrivals_change_nothing(
        farm_factory: Any) -> None:
    farm = farm_factory()
    cfg = farm.config(fix=True)
    first = farm.check(cfg)
    # Today's table routes the cluster via eth0: a check of the moment says OK ...
    assert farm.host.route_get_dev("10.0.5.1") == "eth0"
    # ... but the agent will add nine /16s: the gate predicts the shadow and fails.
    assert first.rc == 1, first
    assert PENDING_RE.search(first.out), first
    assert "auto: " in first.ipoib["rule"] and "OS.EnableRDMA=y" in first.ipoib["rule"]
    assert first.ipoib["anticipating"] is True
    assert {p["interface"] for p in first.ipoib["pending"]} == set(IB_NAMES)
    assert first.status["cidrs"][0]["status"] == "overlap"
    assert "not yet assigned" in first.status["cidrs"][0]["shadowed"][0]["culprit"]
    assert {lk["name"]: lk["reason"] for lk in first.ipoib["links"]}["eth1"] == "KVP MAC"

    assert farm.host.run_cli("apply-routes", "--config", cfg, "--wait", "0").returncode == 0
    fixed = farm.check(cfg)
    assert fixed.rc == 0, fixed
    assert "IPoIB routes to come included" in fixed.out

    guard = guard_in(farm, cfg)
    try:
        wait_for(lambda: guard.status()["state"] == "ok", "guard's first verdict")
        for n, name in enumerate(ARRIVALS, 1):
            farm.assign(name)
            wait_for(lambda n=n: pending_count(guard) == len(IB_NAMES) - n,
                     f"guard saw {name}'s address")
            time.sleep(0.2)  # addresses arrive spread out, as from the agent's retries
            again = farm.check(cfg)
            assert again.rc == 0, again
            assert guard.status()["state"] == "ok"
            assert farm.host.route_get_dev("10.0.5.1") == "eth0"
            assert farm.host.route_get_dev("10.0.77.1") in IB_NAMES  # the /16 is real now
    finally:
        guard.stop()
    assert not [ln for ln in guard.lines if "SHADOWED" in ln or "again" in ln], guard.lines
    rules = [ln for ln in guard.lines if "IPoIB: anticipating" in ln]
    assert len(rules) == 1, guard.lines


def test_without_the_fix_the_verdict_stays_overlap_and_the_guard_logs_it_once(
        farm_factory: Any) -> None:
    farm = farm_factory()
    cfg = farm.config()
    assert farm.check(cfg).rc == 1
    guard = guard_in(farm, cfg)
    try:
        wait_for(lambda: guard.status()["state"] == "overlap", "guard's first verdict")
        for n, name in enumerate(ARRIVALS, 1):
            farm.assign(name)
            wait_for(lambda n=n: pending_count(guard) == len(IB_NAMES) - n,
                     f"guard saw {name}'s address")
            now = farm.check(cfg)
            assert now.rc == 1, now
            assert guard.status()["state"] == "overlap"
            # The prediction came true: the kernel itself now sends the cluster to IB.
            assert farm.host.route_get_dev("10.0.5.1") in IB_NAMES
        assert "proto kernel" in now.status["cidrs"][0]["shadowed"][0]["culprit"]
    finally:
        guard.stop()
    shadowed = [ln for ln in guard.lines if "SHADOWED" in ln]
    assert len(shadowed) == 1, guard.lines
    assert PENDING_RE.search(shadowed[0])


def _arrive_later(farm: Farm, started: Path, delay: float) -> threading.Thread:
    """Add every address ``delay`` seconds after the check has begun (its first marker)."""
    def run() -> None:
        wait_for(started.exists, "the check started", limit=30)
        time.sleep(delay)
        for name in IB_NAMES:
            farm.assign(name)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_for_ipoib_waits_for_late_addresses(farm_factory: Any) -> None:
    farm = farm_factory(rdma=None)
    cfg = farm.config(anticipate_ipoib="never", wait_for_ipoib=60)
    run = farm.tmp / "run"
    thread = _arrive_later(farm, run / "status.json", 2.0)
    proc = farm.host.run_cli("check-overlap", "--config", cfg, "--run-dir", str(run),
                             "--wait", "90", *farm.ipoib_args(), timeout=120)
    thread.join(timeout=30)
    status = json.loads((run / "status.json").read_text())
    wait = status["ipoib"]["wait"]
    assert set(wait["waited_for"]) == set(IB_NAMES), wait
    assert wait["still_missing"] == [] and wait["complete"] is True
    assert wait["waited_s"] > 0 and wait["configured_s"] == 60
    assert "IPoIB wait: waited" in proc.stdout
    # It judged the table with the addresses: the real /16 shadows the cluster.
    assert proc.returncode == 1, proc.stdout
    culprit = status["cidrs"][0]["shadowed"][0]["culprit"]
    assert "proto kernel" in culprit and "not yet assigned" not in culprit


def test_wait_for_ipoib_gives_up_at_the_budget_and_is_not_ok(farm_factory: Any) -> None:
    farm = farm_factory(rdma=None)
    cfg = farm.config(anticipate_ipoib="never", wait_for_ipoib=2)
    gave_up = farm.check(cfg, wait="30")
    wait = gave_up.ipoib["wait"]
    assert set(wait["still_missing"]) == set(IB_NAMES) and wait["complete"] is False
    assert "IPoIB wait: gave up after" in gave_up.out
    assert gave_up.rc == 1 and gave_up.status["ok"] is False, gave_up
    assert any("wait_for_ipoib ended before" in u for u in gave_up.ipoib["unchecked"])
    # The shared budget bounds it: less left than configured cuts the wait.
    cut = farm.check(farm.config(anticipate_ipoib="never", wait_for_ipoib=600), wait="1")
    assert cut.ipoib["wait"]["limit_s"] <= 1.0
    assert "cut from 600s" in cut.out
    assert cut.rc == 1


def test_negative_control_no_wait_no_anticipation_gives_the_false_ok(
        farm_factory: Any) -> None:
    farm = farm_factory(rdma=None)
    cfg = farm.config(anticipate_ipoib="never")
    early = farm.check(cfg)
    assert early.rc == 0, early  # the verdict of the moment...
    for name in IB_NAMES:
        farm.assign(name)
    assert farm.host.route_get_dev("10.0.5.1") in IB_NAMES  # ...was false
    assert farm.check(cfg).rc == 1


@pytest.mark.parametrize("setting,rdma", [("never", "y"), ("auto", None), ("auto", "n")])
def test_no_prediction_where_nothing_applies_the_addresses(
        farm_factory: Any, setting: str, rdma: Optional[str]) -> None:
    farm = farm_factory(rdma=rdma)
    got = farm.check(farm.config(anticipate_ipoib=setting))
    assert got.rc == 0, got
    assert got.ipoib["anticipating"] is False
    assert len(got.ipoib["announced_not_anticipated"]) == len(IB_NAMES)
    assert "IPoIB: not anticipating" in got.out and setting in got.ipoib["rule"]
    assert not PENDING_RE.search(got.out)


def test_auto_anticipates_once_an_ib_address_is_present(farm_factory: Any) -> None:
    farm = farm_factory(rdma=None)
    farm.assign("ib0", "10.9.0.5")  # some address, not the announced one, no shadow itself
    got = farm.check(farm.config())
    assert got.ipoib["anticipating"] is True
    assert "already has an IPv4 address" in got.ipoib["rule"]
    assert got.rc == 1 and PENDING_RE.search(got.out), got


@pytest.mark.parametrize("case,state,rc,words", [
    ("missing", "absent", 0, "does not exist"),
    ("directory", "unreadable", 1, "cannot be read"),
    ("huge", "too-large", 1, "larger than"),
    ("count", "malformed", 1, "NUMPAIRS:9 but has 8"),
    ("nomac", "ok", 1, "matches no interface"),
])
def test_every_pool_state_is_a_clear_line(farm_factory: Any, case: str, state: str,
                                          rc: int, words: str) -> None:
    farm = farm_factory()
    pool = str(farm.pool)
    if case == "missing":
        pool = str(farm.tmp / "nothing-here")
    elif case == "directory":
        pool = str(farm.tmp)
    elif case == "huge":
        with open(farm.pool, "r+b") as f:
            f.truncate(kvp.KVP_POOL_MAX_BYTES + 1)
    elif case == "count":
        farm.pool.write_bytes(RECORD.pack(b"IPoIB_Data", farm.ipoib_value(IB_NAMES[:8])
                                          .replace("NUMPAIRS:8", "NUMPAIRS:9").encode()))
    elif case == "nomac":
        farm.pool.write_bytes(RECORD.pack(b"IPoIB_Data", b"NUMPAIRS:1|00155D0000AA:10.0.200.77"))
    got = farm.check(farm.config(anticipate_ipoib="always"), pool=pool)
    assert got.ipoib["kvp"]["state"] == state
    assert got.rc == rc, got
    lines = [ln for ln in got.out.splitlines() if words in ln]
    assert lines and all(ln.startswith("IPoIB: ") for ln in lines), got


def test_negative_controls_a_broken_reader_or_pending_logic_loses_the_prediction(
        farm_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The STRICT failure above comes from the reader and the pending routes, nothing else."""
    farm = farm_factory()
    cfg = parse({"route_overlap": {"mode": "STRICT", "expected_cidrs": [CLUSTER_CIDR]}})

    def verdict() -> bool:
        with Kernel(farm.host.ns) as kernel:
            return overlap.check(cfg, kernel, Waiter(0), str(farm.pool), str(farm.root)).ok

    assert verdict() is False
    with monkeypatch.context() as m:  # a reader that finds nothing
        m.setattr(overlap.kvp, "read_ipoib",
                  lambda path: kvp.KvpRead(path, kvp.NO_KEY, (), ()))
        assert verdict() is True
    with monkeypatch.context() as m:  # pending routes that never win
        m.setattr(analysis.Tables, "anticipate", lambda self, address, answer: answer)
        assert verdict() is True
    # A pool in another layout (256/1024-byte records) is not read as one.
    farm.pool.write_bytes(struct.pack("256s1024s", b"IPoIB_Data", farm.ipoib_value().encode()))
    assert verdict() is True


def test_readme_sample_is_what_the_check_prints(farm_factory: Any) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    at = readme.index("<!-- ipoib-sample -->")
    start = readme.index("\n", readme.index("```", at)) + 1
    sample = readme[start:readme.index("```", start)].strip().splitlines()
    farm = farm_factory()
    got = farm.check(farm.config())
    printed = got.out.replace(str(farm.root), "").splitlines()
    assert got.rc == 1
    assert [line for line in sample if line not in printed] == [], got


def test_the_guard_never_waits_so_missing_addresses_do_not_make_it_unchecked(
        farm_factory: Any) -> None:
    """wait_for_ipoib is the boot check's promise; the guard re-judges on every event."""
    farm = farm_factory()
    cfg = farm.config(fix=True, wait_for_ipoib=5)
    assert farm.host.run_cli("apply-routes", "--config", cfg, "--wait", "0").returncode == 0
    boot = farm.check(cfg)  # the boot check: gives up within its budget, unchecked
    assert boot.rc == 1 and boot.ipoib["wait"]["still_missing"], boot
    guard = guard_in(farm, cfg)
    try:
        wait_for(lambda: guard.status()["state"] != "unknown", "guard's first verdict")
        status = guard.status()
        assert status["state"] == "ok" and status["ipoib"]["wait"] is None, status
    finally:
        guard.stop()
