"""The benchmark's other pure parts: ``-X importtime`` parsing and the backend it reveals,
the units' interpreter flags from ExecStart=, the workload, and the bash baseline's probe."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest
from bench_support import BENCHMARKS  # noqa: F401  (puts hrbench on sys.path)
from hrbench.baseline import CHECK_SH, apply_script, check_script
from hrbench.imports import backend_of, import_profile, imported_modules, parse_importtime
from hrbench.package import Package, unit_entry
from hrbench.workload import destinations

from cloudinit_hostrouting.render import check_unit, static_unit

SAMPLE = """\
import time: self [us] | cumulative | imported package
import time:       300 |        300 |     _json
import time:       700 |       1000 |   json.decoder
import time:      1000 |       2000 | json
import time:       500 |        500 |   pyroute2.config
import time:      2500 |       3000 | pyroute2
import time:        10 |         10 | cloudinit_hostrouting.__main__
"""


def test_parse_importtime_depths_and_costs() -> None:
    rows = parse_importtime("noise\n" + SAMPLE)
    assert [(r.name, r.depth, r.self_us, r.cum_us) for r in rows[:3]] == [
        ("_json", 2, 300, 300), ("json.decoder", 1, 700, 1000), ("json", 0, 1000, 2000)]
    assert len(rows) == 6


def test_imported_modules_merge_runs_without_main() -> None:
    assert imported_modules([SAMPLE, "import time:  5 |  5 | zlib\n"]) == [
        "_json", "json.decoder", "json", "pyroute2.config", "pyroute2", "zlib"]


def test_backend_is_judged_by_pyroute2_being_imported() -> None:
    assert backend_of(["json", "pyroute2.netlink"]) == "pyroute2"
    assert backend_of(["pyroute2"]) == "pyroute2"
    # Negative control: a name that merely starts with the same letters is not pyroute2.
    assert backend_of(["cloudinit_hostrouting.rtnl", "pyroute2x"]).startswith(
        "standard library only")


def test_import_profile_medians() -> None:
    other = SAMPLE.replace("|       1000 |   json.decoder", "|       3000 |   json.decoder") \
        .replace("|       2000 | json", "|       4000 | json")
    prof = import_profile([SAMPLE, other, other], "apply-routes")
    # json: medians of 2000, 4000, 4000 us; pyroute2 3000; the __main__ line 10.
    assert prof.top == [("json", 4.0), ("pyroute2", 3.0), ("cloudinit_hostrouting.__main__",
                                                           0.01)]
    assert prof.total_ms == pytest.approx(7.01)  # median of 5010, 7010, 7010 us
    assert prof.children["json"] == [("json.decoder", 3.0)]


def test_unit_entry_from_execstart() -> None:
    line = "ExecStart=/usr/bin/python3 -m cloudinit_hostrouting apply-routes --config /e/c.json"
    assert unit_entry(line, "/usr/bin/python3", "apply-routes") == (
        (), ("-m", "cloudinit_hostrouting"))
    flagged = line.replace("python3 -m", "python3 -X frozen_modules=on -s -m")
    assert unit_entry(flagged, "/usr/bin/python3", "apply-routes") == (
        ("-X", "frozen_modules=on", "-s"), ("-m", "cloudinit_hostrouting"))
    script = ("ExecStart=/usr/bin/python3 -I -S /usr/lib/python3/dist-packages/"
              "cloudinit_hostrouting/unit.py check-overlap --config /e/c.json --wait 90")
    assert unit_entry(script, "/usr/bin/python3", "check-overlap") == (
        ("-I", "-S"), ("/usr/lib/python3/dist-packages/cloudinit_hostrouting/unit.py",))


@pytest.mark.parametrize("line", [
    "ExecStart=/usr/bin/python3 -m cloudinit_hostrouting check-overlap --config F",
    "ExecStart=/usr/bin/python3.11 -m cloudinit_hostrouting apply-routes --config F",
    "ExecStart=/usr/bin/python3 /usr/bin/cloudinit-hostrouting apply-routes",
    "ExecStart=/usr/bin/python3 -m other apply-routes --config F",
    "ExecStart=/usr/bin/python3 -I -S /p/cloudinit_hostrouting/unit.py check-overlap",
])
def test_unit_entry_refuses_another_shape(line: str) -> None:
    with pytest.raises(ValueError):
        unit_entry(line, "/usr/bin/python3", "apply-routes")


def test_unit_entry_of_the_units_the_package_renders() -> None:
    """The benchmark reads the real ExecStart=; this fails if the unit's shape changes."""
    for text, command in ((static_unit("/usr/bin/python3"), "apply-routes"),
                          (check_unit("/usr/bin/python3"), "check-overlap")):
        line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
        flags, entry = unit_entry(line, "/usr/bin/python3", command)
        assert flags == ("-I", "-S") and entry[0].endswith("/cloudinit_hostrouting/unit.py")


def test_unit_command_line() -> None:
    pkg = Package(Path("/s"), "d", "/usr/bin/python3", ("-s",), extra_env={"HR_X": "1"})
    assert pkg.unit_argv("ns1", "check-overlap", Path("/c.json"), Path("/r"),
                         ("-X", "importtime")) == [
        "ip", "netns", "exec", "ns1", "/usr/bin/python3", "-s", "-X", "importtime", "-m",
        "cloudinit_hostrouting", "check-overlap", "--config", "/c.json", "--run-dir", "/r"]
    assert pkg.env()["HR_X"] == "1"
    assert "PYTHONPATH" not in pkg.env()
    pkg = Package(Path("/s"), "d", "/usr/bin/python3", ("-I", "-S"), ("/s/x/unit.py",))
    assert pkg.unit_argv("ns1", "apply-routes", Path("/c.json")) == [
        "ip", "netns", "exec", "ns1", "/usr/bin/python3", "-I", "-S", "/s/x/unit.py",
        "apply-routes", "--config", "/c.json"]
    assert pkg.python_argv("ns1", "-c", "pass")[4:] == ["/usr/bin/python3", "-S", "-c", "pass"]


def test_destinations_alternate_and_start_where_expected() -> None:
    assert destinations(6) == ["10.0.1.0/32", "10.128.0.0/24", "10.0.1.1/32",
                               "10.128.1.0/24", "10.0.1.2/32", "10.128.2.0/24"]


def test_destinations_stay_valid_distinct_and_off_ib0s_addresses() -> None:
    dests = destinations(65536)
    # The last of each kind: /32 number 32,767 after 10.0.1.0, /24 number 32,767 in 10.128/9.
    assert dests[-2:] == ["10.0.128.255/32", "10.255.255.0/24"]
    nets = [ipaddress.ip_network(d) for d in dests]  # raises on an invalid address
    assert len(set(nets)) == len(nets)
    ib16, elsewhere = ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("10.128.0.0/9")
    assert all(n.subnet_of(ib16) for n in nets[::2])
    assert all(n.subnet_of(elsewhere) for n in nets[1::2])
    own = {ipaddress.ip_address("10.0.200.5"), ipaddress.ip_address("10.0.0.1")}
    assert not any(n.network_address in own for n in nets[::2])


def test_destinations_refuse_more_than_fit() -> None:
    """Negative control: past 65,536 the /24s would leave 10.0.0.0/8 (10.256.0.0)."""
    with pytest.raises(ValueError, match="at most 65,536"):
        destinations(65537)


def test_apply_script_lists_every_route() -> None:
    text = apply_script([("10.0.1.0/32", "10.1.0.1", "eth0"), ("10.128.0.0/24", "10.1.0.1",
                                                               "eth0")])
    assert "<<'ROUTES'\n10.0.1.0/32 10.1.0.1 eth0\n10.128.0.0/24 10.1.0.1 eth0\nROUTES\n" in text
    assert "<<'CIDRS'\n10.0.5.0/24\nCIDRS\n" in check_script(["10.0.5.0/24"])


@pytest.mark.parametrize("cidr,probe", [
    ("10.0.5.0/24", "10.0.5.1"),
    ("10.0.1.7/32", "10.0.1.7"),
    ("10.130.4.9/16", "10.130.0.1"),  # host bits masked first
    ("0.0.0.0/0", "0.0.0.1"),
    ("192.168.255.255/31", "192.168.255.255"),
])
def test_baseline_probe_address(cidr: str, probe: str) -> None:
    """The baseline's bash probe arithmetic, run by the real bash."""
    func = re.search(r"^probe_for\(\) \{.*?^\}\n", CHECK_SH, re.S | re.M)
    assert func is not None
    out = subprocess.run(["/bin/bash", "-c", func.group(0) + f'probe_for {cidr}; echo "$PROBE"'],
                         capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.strip() == probe


def test_command_line_defaults_and_quick() -> None:
    from hrbench.cli import parse_args

    full = parse_args([], "")
    assert (full.runs, full.size_list, full.big, full.big_check) == (5, [10, 100, 1000],
                                                                     10000, 4096)
    quick = parse_args(["--quick", "--runs", "1"], "")
    assert (quick.runs, quick.size_list, quick.big) == (1, [10, 100], 0)


@pytest.mark.parametrize("argv", [["--sizes", "10,100", "--big", "100"],
                                  ["--sizes", "10,10"], ["--runs", "0"]])
def test_command_line_refuses_a_repeated_size_or_no_runs(argv: list) -> None:
    """A size given twice would be two points of one curve (the marginal cost between
    them is a division by zero items)."""
    from hrbench.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv, "")
