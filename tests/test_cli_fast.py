"""The units' command lines skip argparse, and mean exactly what argparse makes of them.

argparse itself is the oracle: every line the hand parser accepts must give the same
values as ``build_parser().parse_args``, and every line it does not accept must reach
argparse and get argparse's own error or help.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from cli_support import REPO

from cloudinit_hostrouting import cli as cli_mod
from cloudinit_hostrouting import render
from cloudinit_hostrouting.cli import build_parser, unit_args
from cloudinit_hostrouting.constants import RUN_DIR

VALID = [
    "apply-routes --config F",
    "apply-routes --config /etc/x.json --wait 0 --netns ns1 -v",
    "apply-routes --verbose --wait 3600 --config F",
    "apply-routes --config '' --wait 1e1",
    "check-overlap --config F",
    "check-overlap --config F --run-dir /tmp/r --format npd",
    "check-overlap --json --config F --wait 2.5 --netns n --format prometheus",
    "check-overlap --config F --kvp-pool /tmp/pool --root /tmp/root",
]
# Lines argparse accepts in its own way (the last repeat wins, abbreviations, ``=``): it
# parses them, not the hand parser.
UNUSUAL = [
    "apply-routes --config=F",
    "apply-routes --conf F",
    "apply-routes --config F --config G",
    "apply-routes --config F -vv",
    "check-overlap --config F --json --json",
]
INVALID = [
    "apply-routes",  # --config is required
    "apply-routes --help",
    "apply-routes -h --config F",
    "apply-routes --config F --wait -1",
    "apply-routes --config F --wait nan",
    "apply-routes --config F --wait 3601",
    "apply-routes --config F --wait soon",
    "apply-routes --config F --run-dir D",  # check-overlap's option
    "apply-routes --config F extra",
    "apply-routes --config --wait 5",
    "check-overlap --config F --format xml",
    "check-overlap --config F --",
    "check-overlap --config F -v",
    "check-overlap --format text --config a b",
]


def _values(ns: Any) -> Dict[str, Any]:
    got = dict(vars(ns))
    handlers = got.pop("handlers")
    got["handler"] = handlers[got["command"]]
    return got


@pytest.mark.parametrize("line", VALID)
def test_the_fast_path_agrees_with_argparse(line: str) -> None:
    argv = shlex.split(line)
    fast = unit_args(argv)
    assert fast is not None, line
    assert _values(fast) == _values(build_parser().parse_args(argv))


def test_the_fast_path_has_argparse_defaults() -> None:
    """Negative control for the comparison: the defaults are really compared."""
    fast = _values(unit_args(["check-overlap", "--config", "F"]))
    assert (fast["run_dir"], fast["format"], fast["json"], fast["wait"]) == \
        (RUN_DIR, "text", False, 30.0)
    fast["run_dir"] = "/elsewhere"
    assert fast != _values(build_parser().parse_args(["check-overlap", "--config", "F"]))


@pytest.mark.parametrize("line", UNUSUAL)
def test_unusual_spellings_are_argparse_s(line: str) -> None:
    argv = shlex.split(line)
    assert unit_args(argv) is None
    assert build_parser().parse_args(argv).command == argv[0]


@pytest.mark.parametrize("line", INVALID)
def test_other_lines_go_to_argparse(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(line)
    assert unit_args(argv) is None
    with pytest.raises(SystemExit) as expected:
        build_parser().parse_args(argv)
    want = capsys.readouterr()
    with pytest.raises(SystemExit) as got:
        cli_mod.main(argv)
    assert got.value.code == expected.value.code
    assert capsys.readouterr() == want
    assert want.out.startswith("usage: ") or "usage: " in want.err


def _rendered_lines() -> List[List[str]]:
    """The units' command lines exactly as render.py writes them into ExecStart=."""
    lines = []
    for unit in (render.static_unit("/usr/bin/python3"), render.check_unit("/usr/bin/python3"),
                 render.check_unit("/usr/bin/python3", wait_for_ipoib=60)):
        execstart = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
        words = shlex.split(execstart.split("=", 1)[1])
        lines.append(words[next(i for i, w in enumerate(words) if w.endswith("/unit.py")) + 1:])
    return lines


def test_the_rendered_units_take_the_fast_path() -> None:
    lines = _rendered_lines()
    assert [line[0] for line in lines] == ["apply-routes", "check-overlap", "check-overlap"]
    assert "--wait" in lines[2]
    for argv in lines:
        fast = unit_args(argv)
        assert fast is not None, argv
        assert _values(fast) == _values(build_parser().parse_args(argv))


def _imports(tmp_path: Path, *args: str) -> str:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"host_routing": {}}), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cloudinit_hostrouting", "apply-routes",
         *[a.replace("F", str(config)) for a in args]],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    return proc.stderr


def test_a_unit_run_does_not_import_argparse(tmp_path: Path) -> None:
    assert "argparse" not in _imports(tmp_path, "--config", "F")
    # negative control: the same run spelled --config=F goes through argparse
    assert "argparse" in _imports(tmp_path, "--config=F")
