"""jsonio against the standard library's json, the oracle.

``jsonio.loads(text, parse_int=..., object_pairs_hook=...)`` must do what
``json.loads`` does with those arguments, and ``jsonio.dumps(obj)`` what
``json.dumps(obj, indent=2, sort_keys=True)`` does: the same value or text, or
the same exception with the same message.  Documents are random (hypothesis),
valid and broken, and hostile: deep nesting, huge numbers, NaN and Infinity,
lone surrogates, duplicate keys, a BOM, control characters, every kind of
whitespace.  ``HR_FUZZ_EXAMPLES`` sets the number of examples per test.
"""

from __future__ import annotations

import enum
import json
import math
import os
import subprocess
import sys
from typing import Any, Callable, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudinit_hostrouting import jsonio
from cloudinit_hostrouting.loader import MAX_INT_DIGITS, _json_int

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = int(os.environ.get("HR_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (NaN equals NaN; -0.0 is not 0.0;
    dict order counts).  Iterative: parsed documents may nest thousands deep."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not ((math.isnan(x) and math.isnan(y)) or repr(x) == repr(y)):
                return False
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


def outcome(call: Callable[[], Any]) -> Tuple[str, Any]:
    try:
        return "value", call()
    except json.JSONDecodeError as err:
        return "JSONDecodeError", (err.msg, err.pos, err.lineno, err.colno, str(err))
    except Exception as err:  # the exception is the outcome compared
        return type(err).__name__, str(err)


def agree(got: Tuple[str, Any], want: Tuple[str, Any]) -> bool:
    return got[0] == want[0] and (same(got[1], want[1]) if got[0] == "value"
                                  else got[1] == want[1])


class Recorder:
    """An object_pairs_hook that logs every call (the log is compared on success)."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def __call__(self, pairs: List[Tuple[str, Any]]) -> dict:
        self.calls.append(list(pairs))
        return dict(pairs)


def _raising_int(text: str) -> int:
    if len(text) > 3:
        raise OverflowError(f"{text} has more than 3 digits")
    return int(text)


PARSE_INTS: List[Optional[Callable[[str], Any]]] = [None, _json_int, _raising_int]


def check_loads(text: str) -> None:
    """Every hook combination: jsonio.loads and json.loads agree on ``text``."""
    for parse_int in PARSE_INTS:
        for use_pairs in (False, True):
            mine, theirs = Recorder(), Recorder()
            got = outcome(lambda: jsonio.loads(
                text, parse_int=parse_int, object_pairs_hook=mine if use_pairs else None))  # noqa: B023
            want = outcome(lambda: json.loads(
                text, parse_int=parse_int, object_pairs_hook=theirs if use_pairs else None))  # noqa: B023
            assert agree(got, want), (text[:300], parse_int, use_pairs, got, want)
            if want[0] == "value":
                assert same(mine.calls, theirs.calls)


scalars = (st.none() | st.booleans()
           | st.integers() | st.integers(min_value=-10 ** 150, max_value=10 ** 150)
           | st.floats() | st.sampled_from([0.0, -0.0, 1e308, 5e-324, 1e16, 1e-7])
           | st.text(st.characters(exclude_categories=()), max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=25)


@st.composite
def documents(draw: Any) -> str:
    """JSON as json writes it in any of its styles, with surrounding whitespace."""
    text = json.dumps(draw(values), ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 0, 2, "\t"])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])))
    pad = st.text(st.sampled_from(" \t\n\r"), max_size=3)
    return draw(pad) + text + draw(pad)


JSONISH = [*'{}[]:,"\\ \t\n\r0123456789.eE+-truefalsnNaIiy',
           "\ufeff", "\x00", "\x1f", "\x0c", "\x0b", "\xa0", "\u2028", "\ud800", "\udfff", "é",
           "\\u", "\\ud800", "\\udc00", "\\n", "NaN", "Infinity", "-Infinity", "true", "null",
           "1e999"]


@st.composite
def broken(draw: Any) -> str:
    """A document with random edits: mostly no longer JSON, sometimes still."""
    chars = list(draw(documents()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        if chars and draw(st.booleans()):
            del chars[min(at, len(chars) - 1)]
        else:
            chars.insert(at, draw(st.sampled_from(JSONISH)))
    return "".join(chars)


@FUZZ
@given(documents())
def test_loads_valid_documents(text: str) -> None:
    check_loads(text)


@FUZZ
@given(broken())
def test_loads_broken_documents(text: str) -> None:
    check_loads(text)


@FUZZ
@given(st.lists(st.sampled_from(JSONISH), max_size=30))
def test_loads_json_like_noise(tokens: List[str]) -> None:
    check_loads("".join(tokens))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "\\u0061", "c"]), values), max_size=6),
       st.integers(0, 3))
def test_loads_duplicate_keys(items: List[Tuple[str, Any]], depth: int) -> None:
    body = "{" + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in items) + "}"
    check_loads("[" * depth + body + "]" * depth)


HOSTILE = [
    "", " ", "\ufeff{}", "\ufeff", " \ufeff{}", "{}\ufeff", "[1]\x0c", "[1]\xa0", "\x0b[1]",
    "NaN", "-NaN", "Infinity", "-Infinity", "[NaN, Infinity, -Infinity]", "nan", "inf",
    "1" * 100, "1" * 101, "-" + "1" * 100, "-" + "1" * 101, "1" * 4300, "1" * 4301,
    "1" + "0" * 5000 + ".5", "1e99999", "-1e99999", "0." + "0" * 400 + "1",
    '"\\ud800"', '"\\udc00\\ud800"', '"\ud800"', '{"\\ud800": 1}', '"\\u00"', '"\\x41"',
    '"a\x00b"', '"a\nb"', '"a\tb"', '{"a": 1, "a": 2}', '{"a": {"b": 1, "b": 2}, "a": 3}',
    '{"a" 1}', '{"a": 1,}', "[1,]", "[,1]", "[1 2]", '{1: 2}', "[01]", "[-]", "[1.]", "[.5]",
    "[1e]", "[true false]", "tru", "nul", "[1]]", "[[1]", '"unterminated', "1 2", "{} {}",
    "[" * 5000, "[" * 5000 + "]" * 5000, "{\"a\":" * 3000 + "1" + "}" * 3000,
    "[" * 100 + "1" * 101 + "]" * 100, "[" * 64 + "]" * 64, "[" * 65 + "]" * 65,
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t[:20]) + f"({len(t)})" for t in HOSTILE])
def test_loads_hostile(text: str) -> None:
    check_loads(text)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _depth_outcome(loads: Callable[[str], Any], n: int) -> str:
    """Called from this one frame for both, so both start at the same stack depth."""
    try:
        loads(_deep(n))
    except RecursionError:
        return "RecursionError"
    return "value"


def _first_failing_depth(loads: Callable[[str], Any]) -> int:
    low, high = 1, 1_000_000
    assert _depth_outcome(loads, high) == "RecursionError"
    while high - low > 1:
        mid = (low + high) // 2
        if _depth_outcome(loads, mid) == "RecursionError":
            high = mid
        else:
            low = mid
    return high


def test_recursion_error_comes_at_the_same_depth() -> None:
    """The loader reports a file too deep for the interpreter (RecursionError) apart from
    one merely deeper than MAX_DEPTH, so where json stops, jsonio must stop too."""
    depth = _first_failing_depth(json.loads)
    for n in (depth - 2, depth - 1, depth, depth + 1):
        assert _depth_outcome(jsonio.loads, n) == _depth_outcome(json.loads, n), n


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="from 3.12 on Python frames do not count toward C recursion")
def test_negative_control_fewer_frames_go_deeper() -> None:
    """Why jsonio keeps json's frames: the scanner called directly gets further."""
    def direct(text: str) -> Any:
        return jsonio._Decoder(None, None).scan_once(text, 0)

    assert _first_failing_depth(direct) > _first_failing_depth(json.loads)


def test_loader_limits_are_what_the_hostile_cases_probe() -> None:
    assert MAX_INT_DIGITS == 100  # HOSTILE's "1" * 100 / 101 sit on either side of it


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


class Real(float):
    def __repr__(self) -> str:
        return "Real!"


class Mapping(dict):
    pass


class Items(list):
    pass


odd = st.sampled_from([Color.RED, Text("t"), Real(2.5), Mapping(a=1), Items([1, 2]), (1, 2),
                       (), Mapping(), object(), {1, 2}, b"x", Real("nan")]) \
    | st.integers(4290, 4310).map(lambda digits: 10 ** digits)  # str() refuses > 4300 digits
keys = (st.text(max_size=4) | st.integers(-5, 5) | st.floats() | st.booleans() | st.none()
        | st.sampled_from([Text("k"), Color.RED, (1,), b"k"]))
dumpable = st.recursive(scalars | odd, lambda inner: st.lists(inner, max_size=4)
                        | st.tuples(inner, inner)
                        | st.dictionaries(keys, inner, max_size=4), max_leaves=20)


def check_dumps(value: Any) -> None:
    want = outcome(lambda: json.dumps(value, indent=2, sort_keys=True))
    assert outcome(lambda: jsonio.dumps(value)) == want
    line = outcome(lambda: json.dumps(value, sort_keys=True))
    assert outcome(lambda: jsonio.dumps_line(value)) == line
    out: List[str] = []  # the Python port, also where the C encoder indents instead
    assert outcome(lambda: (jsonio._encode(value, out, "\n", {}), "".join(out))[1]) == want


@FUZZ
@given(dumpable)
def test_dumps(value: Any) -> None:
    check_dumps(value)


@FUZZ
@given(st.dictionaries(st.text(max_size=4), values, max_size=6))
def test_dumps_string_keyed(value: Any) -> None:
    """The shape of status.json: string keys only, so sorting always succeeds."""
    check_dumps(value)


def test_dumps_circular_and_edge_values() -> None:
    loop: List[Any] = []
    loop.append(loop)
    mapping: dict = {}
    mapping["self"] = [mapping]

    class Unknown:
        pass

    for value in (loop, mapping, [Unknown()], {"a": {1: 2, "b": 3}}, {(1,): 1}, "\ud800é\n",
                  float("nan"), -0.0, 10 ** 4300, 10 ** 4301, [[], {}, [[]], {"": {}}], {}):
        check_dumps(value)


def test_dumps_status_shape_from_the_package() -> None:
    """A real verdict's to_dict, as written to status.json."""
    from cloudinit_hostrouting.overlap import Unknown

    check_dumps(Unknown("why, with ünïcode and \u2028", "STRICT").to_dict())


def test_the_c_encoder_is_used_where_it_indents() -> None:
    assert jsonio._ACCELERATED
    indents = sys.version_info >= (3, 13)
    assert jsonio._C_INDENTS is indents


def test_negative_control_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison catches a decoder that differs: one taking form feed as whitespace."""
    monkeypatch.setattr(jsonio, "_WHITESPACE", " \t\n\r\x0c")
    with pytest.raises(AssertionError):
        check_loads("[1]\x0c")


def test_negative_control_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and an encoder that differs: one indenting by three spaces."""
    monkeypatch.setattr(jsonio, "_INDENT", "   ")
    with pytest.raises(AssertionError):
        check_dumps({"a": [1]})


def test_negative_control_dumps_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """...and a one-line encoder that differs: another item separator."""
    real = jsonio._c_encoder
    monkeypatch.setattr(jsonio, "_c_encoder", lambda indent, key, sort, item=",":
                        real(indent, key, sort, ","))
    assert jsonio.dumps_line({"a": [1, 2]}) != json.dumps({"a": [1, 2]}, sort_keys=True)


PROBE = """
import sys
{block}
from cloudinit_hostrouting import jsonio
text = sys.stdin.read()
try:
    print("value", repr(jsonio.loads(text)))
except ValueError as err:
    print(type(err).__module__, type(err).__name__, err)
print("dumps", repr(jsonio.dumps([{{"b": 1.5, "a": None}}, "\\ud800"])))
print("json loaded:", "json" in sys.modules)
"""


def _probe(text: str, block: str = "") -> List[str]:
    proc = subprocess.run([sys.executable, "-I", "-c",
                           f"import sys; sys.path.insert(0, {REPO!r})" + PROBE.format(
                               block=block)],
                          input=text, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _oracle_lines(text: str) -> List[str]:
    try:
        first = f"value {json.loads(text)!r}"
    except ValueError as err:
        first = f"{type(err).__module__} {type(err).__name__} {err}"
    dumped = json.dumps([{"b": 1.5, "a": None}, "\ud800"], indent=2, sort_keys=True)
    return [first, f"dumps {dumped!r}"]


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x"]}', '{"a" 1}', "[1,]", "", "\ufeff[]",
                                  '"\\x"', "[1] 2"])
def test_a_fresh_interpreter_reads_without_json(text: str) -> None:
    """As in a unit: nothing imported json before.  Valid JSON and dumps never import it;
    invalid JSON does (negative control: the probe sees json when it is there), and still
    gets json's own JSONDecodeError (on 3.11 the scanner alone could not raise it)."""
    lines = _probe(text)
    assert lines[:2] == _oracle_lines(text)
    valid = lines[0].startswith("value")
    assert lines[2] == f"json loaded: {not valid}"


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x"]}', '{"a" 1}', "\ufeff[]", "[1] 2"])
def test_without_the_c_accelerator_it_is_json(text: str) -> None:
    """``_json`` missing: both functions are json's own (then pure Python, as json is)."""
    block = "sys.modules['_json'] = None"
    lines = _probe(text, block)
    assert lines[:2] == _oracle_lines(text)
    assert lines[2] == "json loaded: True"
