"""The units' JSON, read and written without importing ``json`` (issue 11).

``import json`` costs a unit ~2.5 ms of its own (json.decoder, json.encoder,
json.scanner) at every boot.  What does the work in ``json`` is its C
accelerator ``_json``, so this module drives ``_json`` as ``json`` would:

* ``loads(text, parse_int=..., object_pairs_hook=...)`` is ``json.loads`` with
  those arguments: the C scanner, given what ``json.decoder.JSONDecoder`` gives
  it, called through as many Python frames as ``json.loads`` uses, so that a
  deep document meets RecursionError at the same depth.  Text that is not JSON
  gets ``json``'s own JSONDecodeError: ``json`` is imported and reads the text
  again, for its message and position (Python 3.11's scanner cannot raise that
  error unless ``json.decoder`` is loaded; it fails with a SystemError instead).
* ``dumps(obj)`` is ``json.dumps(obj, indent=2, sort_keys=True)``, byte for
  byte, the form of ``--format json``.  Where ``_json``'s
  encoder indents (Python 3.13 on) it does the work, as in ``json``; before
  that ``json`` indents in Python, in ``json.encoder._make_iterencode``, which
  ``_encode_list``/``_encode_dict`` follow step for step, with strings escaped
  by the C ``encode_basestring_ascii`` as there.
* ``dumps_line(obj)`` is ``json.dumps(obj, sort_keys=True)``, the one-line
  status.json the check and the guard write: always the C encoder.

Without ``_json`` both are ``json`` itself.  tests/test_jsonio.py holds both to
``json`` as the oracle.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner
except ImportError:
    _ACCELERATED = False
else:
    _ACCELERATED = True

_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE
_INF = float("inf")
_CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": float("nan")}
_INDENT = "  "


class _NotJson(Exception):
    """The text is not JSON: ``json`` says how."""


class _Decoder:
    """What ``_json.make_scanner`` reads from a ``json.decoder.JSONDecoder``, with the
    values ``json.loads`` gives it, and that class's ``decode``/``raw_decode``."""

    def __init__(self, parse_int: Optional[Callable[[str], Any]],
                 object_pairs_hook: Optional[Callable[[List[Tuple[str, Any]]], Any]]):
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = object_pairs_hook
        self.parse_float = float
        self.parse_int = parse_int or int
        self.parse_constant = _CONSTANTS.__getitem__
        context: Any = self
        self.scan_once = make_scanner(context)

    def decode(self, text: str) -> Any:
        obj, end = self.raw_decode(text, len(text) - len(text.lstrip(_WHITESPACE)))
        if text[end:].lstrip(_WHITESPACE):
            raise _NotJson  # json: "Extra data"
        return obj

    def raw_decode(self, text: str, idx: int) -> Tuple[Any, int]:
        try:
            return self.scan_once(text, idx)
        except (StopIteration, SystemError):  # json: "Expecting value"; 3.11: see above
            raise _NotJson from None


def loads(text: str, *, parse_int: Optional[Callable[[str], Any]] = None,
          object_pairs_hook: Optional[Callable[[List[Tuple[str, Any]]], Any]] = None) -> Any:
    """``json.loads(text, parse_int=parse_int, object_pairs_hook=object_pairs_hook)``.

    The hooks' own exceptions pass through unchanged, as in ``json``; when the
    text is not JSON, the hooks may have been called for a part of it before
    ``json`` reads it again.
    """
    if _ACCELERATED and not text.startswith("\ufeff"):
        try:
            return _Decoder(parse_int, object_pairs_hook).decode(text)
        except _NotJson:
            pass
    import json

    if text.startswith("\ufeff"):
        return json.loads(text)  # "Unexpected UTF-8 BOM", before any parsing
    return json.JSONDecoder(parse_int=parse_int,
                            object_pairs_hook=object_pairs_hook).decode(text)


def dumps(obj: Any) -> str:
    """``json.dumps(obj, indent=2, sort_keys=True)``, byte for byte."""
    if not _ACCELERATED:
        import json

        return json.dumps(obj, indent=2, sort_keys=True)
    if isinstance(obj, str):  # as json.JSONEncoder.encode
        return encode_basestring_ascii(obj)
    if _C_INDENTS:
        return "".join(_c_encoder(_INDENT, ": ", True)(obj, 0))
    out: List[str] = []
    _encode(obj, out, "\n", {})
    return "".join(out)


def dumps_line(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True)``, byte for byte: one line, by the C encoder."""
    if not _ACCELERATED:
        import json

        return json.dumps(obj, sort_keys=True)
    if isinstance(obj, str):
        return encode_basestring_ascii(obj)
    return "".join(_c_encoder(None, ": ", True, ", ")(obj, 0))


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _floatstr(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _encode(o: Any, out: List[str], newline: str, markers: Dict[int, Any]) -> None:
    """``_iterencode``: ``o`` at the nesting whose line break and indent is ``newline``."""
    if isinstance(o, str):
        out.append(encode_basestring_ascii(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_floatstr(o))
    elif isinstance(o, (list, tuple)):
        _encode_list(o, out, newline, markers)
    elif isinstance(o, dict):
        _encode_dict(o, out, newline, markers)
    else:
        markerid = id(o)
        if markerid in markers:
            raise ValueError("Circular reference detected")
        markers[markerid] = o
        _encode(_default(o), out, newline, markers)
        del markers[markerid]


def _encode_value(value: Any, out: List[str], newline: str, markers: Dict[int, Any]) -> None:
    """A list item or dict value: containers straight to their encoder, as json does."""
    if isinstance(value, (list, tuple)):
        _encode_list(value, out, newline, markers)
    elif isinstance(value, dict):
        _encode_dict(value, out, newline, markers)
    else:
        _encode(value, out, newline, markers)


def _encode_list(lst: Any, out: List[str], newline: str, markers: Dict[int, Any]) -> None:
    if not lst:
        out.append("[]")
        return
    markerid = id(lst)
    if markerid in markers:
        raise ValueError("Circular reference detected")
    markers[markerid] = lst
    inner = newline + _INDENT
    out.append("[" + inner)
    first = True
    for value in lst:
        if first:
            first = False
        else:
            out.append("," + inner)
        _encode_value(value, out, inner, markers)
    out.append(newline + "]")
    del markers[markerid]


def _encode_dict(dct: Any, out: List[str], newline: str, markers: Dict[int, Any]) -> None:
    if not dct:
        out.append("{}")
        return
    markerid = id(dct)
    if markerid in markers:
        raise ValueError("Circular reference detected")
    markers[markerid] = dct
    inner = newline + _INDENT
    out.append("{" + inner)
    first = True
    for key, value in sorted(dct.items()):
        if isinstance(key, str):
            pass
        elif isinstance(key, float):
            key = _floatstr(key)
        elif key is True:
            key = "true"
        elif key is False:
            key = "false"
        elif key is None:
            key = "null"
        elif isinstance(key, int):
            key = int.__repr__(key)
        else:
            raise TypeError(f"keys must be str, int, float, bool or None, "
                            f"not {key.__class__.__name__}")
        if first:
            first = False
        else:
            out.append("," + inner)
        out.append(encode_basestring_ascii(key))
        out.append(": ")
        _encode_value(value, out, inner, markers)
    out.append(newline + "}")
    del markers[markerid]


def _c_encoder(indent: Any, key_separator: str, sort_keys: bool,
               item_separator: str = ",") -> Any:
    """``_json``'s encoder as ``json.JSONEncoder.iterencode`` makes it (``indent`` is a
    string there from 3.13 on, where typeshed still says int)."""
    return make_encoder({}, _default, encode_basestring_ascii, indent, key_separator,
                        item_separator, sort_keys, False, True)


def _c_indents() -> bool:
    """Whether ``_json``'s encoder indents, as it does from Python 3.13 on."""
    return "".join(_c_encoder(" ", ":", False)([0], 0)) == "[\n 0\n]"


_C_INDENTS = _ACCELERATED and _c_indents()
