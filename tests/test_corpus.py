"""The hostile corpus (tests/corpus/) through every command that reads a file, and handle().

Each file is a config no command may accept: YAML edge cases (duplicate keys,
recursive anchors, an alias bomb, nesting 20,000 deep, 5,000-digit integers,
!!binary, dates, non-string keys, tabs, NUL, python tags), bad encodings, and
every field of the schema with the wrong type or out of range.  Through
``render``, ``apply-routes`` and ``check-overlap`` (subprocesses, the units'
own form) each must give exit 2, one error naming the file, a bounded message
and no traceback, and write nothing; through ``validate`` exit 1 and an error
line; through ``handle()`` (where cloud-init's own YAML loading gets that far)
one of the two end states.  Inputs too big to keep as files are made here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
import yaml
from cli_support import cli
from module_support import Systemctl, end_state, run_handle

from cloudinit_hostrouting.schema import HOST_ROUTING_SCHEMA, _leaves

CORPUS = Path(__file__).parent / "corpus"

# file: (what every unit command's error must contain, what validate's must; None:
# the same).
EXPECT: Dict[str, Tuple[str, Optional[str]]] = {
    "alias-bomb.yaml": ("expands to more than 2,000,000 values", None),
    "bad-date-value.yaml": ("cannot be built (day is out of range for month)", None),
    "bigint-metric.json": ("integer longer than 100 digits", None),
    "bigint-metric.yaml": ("integer longer than 100 digits (line 6)",
                           "integer longer than 100 digits (line 7)"),
    "binary-section.yaml": ("host_routing: must be of type object, not bytes", None),
    "binary-value.yaml": ("host_routing.gate_units[0]: must be of type string, not bytes", None),
    "bool-key.yaml": ("host_routing.True: unknown key", None),
    "comment-only.yaml": ("has no top-level host_routing mapping", "top level must be a mapping"),
    "complex-key.yaml": ("found unhashable key", None),
    "date-key.yaml": ("host_routing.2024-01-01: unknown key", None),
    "date-value.yaml": ("host_routing.route_overlap.mode: must be of type string, not date",
                        None),
    "deep-block.yaml": ("nests deeper than 64 levels", None),
    "deep-flow.yaml": ("nests deeper than 64 levels", None),
    "deep-json.json": ("nests deeper than 64 levels", None),
    "default-route.yaml": ("routes[1].destination: is the IPv6 default route", None),
    "dup-key-flow.yaml": ("host_routing.route_overlap.mode: is given twice", None),
    "dup-key-mode.yaml": ("host_routing.route_overlap.mode: is given twice", None),
    "dup-key-route.yaml": ("routes[0].destination: is given twice", None),
    "dup-key-top.yaml": ("host_routing: is given twice", None),
    "dup-key.json": ("host_routing.route_overlap.mode: is given twice", None),
    "empty.yaml": ("has no top-level host_routing mapping", "top level must be a mapping"),
    "float-metric.yaml": ("routes[0].metric: must be of type integer, not str", None),
    "gate-cycle.yaml": ("host_routing.gate_units[3]: cannot be gated: it is one of our own",
                        None),
    "gateway-unspecified.yaml": ("routes[0].gateway: is unspecified", None),
    "inf-metric.yaml": ("routes[0].metric: must be of type integer, not float", None),
    "int-key.yaml": ("host_routing.1: unknown key", None),
    "invalid-utf8-latin1.yaml": ("is not UTF-8 text (byte 0xe9", None),
    "invalid-utf8.yaml": ("is not UTF-8 text (byte 0xff", None),
    "list-section.yaml": ("host_routing: must be of type object, not list", None),
    "metric-range.yaml": ("routes[1].metric: is outside 0..4294967295", None),
    "multiline-mode.yaml": ("host_routing.route_overlap.mode: is not valid here", None),
    "nan-metric.yaml": ("routes[0].metric: must be of type integer, not float (got nan)", None),
    "nul-byte.yaml": ("control characters are not allowed", None),
    "null-key.yaml": ("host_routing.None: unknown key", None),
    "null-section.yaml": ("host_routing: must be of type object, not NoneType", None),
    "octal-metric.yaml": ("routes[0].metric: must be of type integer, not str", None),
    "omap-value.yaml": ("host_routing.route_overlap: must be of type object, not list", None),
    "python-tag.yaml": ("could not determine a constructor for the tag", None),
    "recursive-anchor.yaml": ("alias that contains itself at host_routing.guard", None),
    "recursive-list.yaml": ("alias that contains itself at host_routing.gate_units[1]", None),
    "set-value.yaml": ("host_routing.gate_units: must be of type array, not set", None),
    "sexagesimal-metric.yaml": ("routes[0].metric: is outside 0..4294967295", None),
    "string-section.yaml": ("host_routing: must be of type object, not str", None),
    "tab-indent.yaml": ("found character that cannot start any token", None),
    "top-list.yaml": ("has no top-level host_routing mapping", "top level must be a mapping"),
    "top-scalar.json": ("has no top-level host_routing mapping", "top level must be a mapping"),
    "unclosed-flow.yaml": ("did not find expected ',' or ']'", None),
    "yes-no-enabled.yaml": ("host_routing.static_routes.enabled: must be of type boolean", None),
    "zone-id.yaml": ("expected_cidrs[0]: has an IPv6 zone id", None),
}
# Every leaf and container of the schema, once per wrong type: the error must name each.
WRONG_TYPES = {f"wrong-{kind}-{t}.yaml": kind
               for kind, types in (("leaves", ("int", "list", "map", "null", "bool", "string")),
                                   ("containers", ("int", "list", "string", "bool")),
                                   ("sections", ("int", "list", "string", "bool")))
               for t in types}
FILE_LEVEL = ("is not UTF-8", "integer longer", "nests deeper", "contains itself", "expands to",
              "neither JSON nor YAML", "cannot be built", "no top-level", "given twice")
UNIT_COMMANDS = ("render", "apply-routes", "check-overlap")


def _leaf_paths() -> Dict[str, str]:
    """Each schema leaf's path as errors spell it (list items at index 0), and its type."""
    out = {}
    for path, node in _leaves(HOST_ROUTING_SCHEMA, "host_routing"):
        want = node.get("type", "")
        if want == "array" and node["items"].get("type") != "object":
            path, want = path + "[0]", node["items"]["type"]
        if want not in ("object", "array"):
            out[path.replace("[]", "[0]")] = want
    return out


def test_every_corpus_file_has_an_expectation() -> None:
    """A file added without an expectation (or an expectation without its file) fails."""
    assert sorted(os.listdir(CORPUS)) == sorted([*EXPECT, *WRONG_TYPES])


def _run(command: str, path: Path, tmp_path: Path) -> Tuple[int, str, str, Path]:
    out = tmp_path / "out"
    if command == "render":
        proc = cli("render", "--config", str(path), "--root", str(out))
    else:
        out.mkdir()
        extra = ["--run-dir", str(out)] if command == "check-overlap" else []
        proc = cli(command, "--config", str(path), "--wait", "0", "--netns",
                   "hr-no-such-ns", *extra)
    return proc.returncode, proc.stdout, proc.stderr, out


def _assert_refused(path: Path, rc: int, stdout: str, stderr: str, out: Path,
                    command: str = "render") -> None:
    assert rc == 2, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.startswith(f"error: {path}: "), stderr[:300]
    assert stdout == ""
    assert len(stderr) < 6000 and stderr.count("\n") <= 23, "the error must be bounded"
    if any(marker in stderr.splitlines()[0] for marker in FILE_LEVEL):
        assert stderr.count("\n") <= 3, stderr
    written = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if command == "check-overlap":
        # check-overlap records that it could not decide, and nothing else (issue 10 §4).
        assert written == ["route-overlap.unknown", "status.json"], written
        status = json.loads((out / "status.json").read_text())
        assert (status["state"], status["ok"]) == ("unknown", False)
        assert status["reason"].splitlines()[0] in stderr
    else:
        assert written == [], "nothing may be written"


@pytest.mark.parametrize("command", UNIT_COMMANDS)
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_unit_commands_refuse_the_corpus(tmp_path: Path, command: str, name: str) -> None:
    path = CORPUS / name
    rc, stdout, stderr, out = _run(command, path, tmp_path)
    _assert_refused(path, rc, stdout, stderr, out, command)
    assert EXPECT[name][0] in stderr, stderr


@pytest.mark.parametrize("command", UNIT_COMMANDS)
@pytest.mark.parametrize("name", sorted(WRONG_TYPES))
def test_wrong_types_are_named_at_every_path(tmp_path: Path, command: str, name: str) -> None:
    """Every leaf (or container) path of the schema set to one wrong type, in one file."""
    path = CORPUS / name
    rc, stdout, stderr, out = _run(command, path, tmp_path)
    _assert_refused(path, rc, stdout, stderr, out, command)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))["host_routing"]
    if WRONG_TYPES[name] == "leaves":
        kind = name.rsplit("-", 1)[1][:-len(".yaml")]
        leaves = _leaf_paths()
        assert len(leaves) == 14, sorted(leaves)
        for leaf, want in leaves.items():
            right = (kind, want) in (("int", "integer"), ("bool", "boolean"))
            # Where the value is of the right type, no error: the negative control.
            assert (f"{leaf}:" in stderr) is not right, (leaf, stderr)
    else:
        for key in data:
            assert f"host_routing.{key}" in stderr, (key, stderr)


@pytest.mark.parametrize("name", sorted([*EXPECT, *WRONG_TYPES]))
def test_validate_refuses_the_corpus(tmp_path: Path, name: str) -> None:
    """As user-data: the same file behind '#cloud-config'; exit 1, an error line each."""
    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"#cloud-config\n" + (CORPUS / name).read_bytes())
    proc = cli("validate", str(user_data))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    errors = [line for line in proc.stdout.splitlines() if line.startswith(f"{user_data}: error: ")]
    assert errors, proc.stdout
    assert f"{user_data}: valid" not in proc.stdout
    if name in EXPECT:
        needle = EXPECT[name][1] or EXPECT[name][0]
        assert any(needle in line for line in errors), proc.stdout


@pytest.mark.parametrize("name", sorted([*EXPECT, *WRONG_TYPES]))
def test_handle_on_the_corpus_as_cloudinit_would_load_it(tmp_path: Path, name: str) -> None:
    """cloud-init loads user-data with PyYAML's safe loader (duplicate keys: last wins);
    what it can load reaches handle(), which must end in one of the two end states."""
    try:
        cfg = yaml.safe_load((CORPUS / name).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return  # cloud-init cannot load it either: handle() is never called
    calls = Systemctl()
    end_state(cfg, str(tmp_path), calls, run_handle(cfg, str(tmp_path), calls))


# ---------------------------------------------------------------------------
# Too big to keep as files.


def _routes_json(n: int) -> str:
    routes = [{"destination": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"}
              for i in range(n)]
    return json.dumps({"host_routing": {"static_routes": {"enabled": True, "routes": routes}}})


GENERATED = {
    "70k-routes.json": (lambda: _routes_json(70_000), "has 70000 items, more than the limit"),
    "9mib.yaml": (lambda: "host_routing: {}\n" + "#" * (9 << 20) + "\n", "larger than 8 MiB"),
    "deep-400k.yaml": (lambda: "host_routing: " + "[" * 400_000 + "]" * 400_000 + "\n",
                       "nests deeper than 64 levels"),
    "huge-string.yaml": (lambda: "host_routing:\n  gate_units: ['" + "x" * 1_000_000 + "']\n",
                         "is longer than 255 characters"),
    "huge-key.yaml": (lambda: "host_routing:\n  ? " + "k" * 200_000 + "\n  : x\n",
                      "unknown key"),
    "many-bad-routes.json": (lambda: _routes_json(16_000).replace("/32", "/33"),
                             "and 15980 more problem(s)"),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_oversize_input_is_refused_with_a_bounded_message(tmp_path: Path, name: str) -> None:
    make, needle = GENERATED[name]
    path = tmp_path / name
    path.write_text(make(), encoding="utf-8")
    rc, stdout, stderr, out = _run("render", path, tmp_path)
    _assert_refused(path, rc, stdout, stderr, out)
    assert needle in stderr, stderr[:2000]


@pytest.mark.parametrize("command", UNIT_COMMANDS)
def test_dev_zero_is_refused_after_a_bounded_read(tmp_path: Path, command: str) -> None:
    rc, stdout, stderr, out = _run(command, Path("/dev/zero"), tmp_path)
    _assert_refused(Path("/dev/zero"), rc, stdout, stderr, out, command)
    assert "larger than 8 MiB" in stderr


def test_validate_reads_dev_zero_boundedly_too() -> None:
    proc = cli("validate", "/dev/zero")
    assert proc.returncode == 1 and "larger than 8 MiB" in proc.stdout, proc.stdout


def test_a_directory_as_config_is_a_clear_error(tmp_path: Path) -> None:
    rc, stdout, stderr, out = _run("render", tmp_path, tmp_path)
    assert rc == 2 and "Traceback" not in stderr and "cannot read" in stderr, stderr
