"""Read a JSON or YAML file into plain data: bounded, strict, and never a traceback.

Every command that reads a file goes through here (``--config`` of the units
and tools, ``validate``'s ``#cloud-config`` files), so one place decides what
a file may be:

* at most ``MAX_FILE_BYTES`` (``--config /dev/zero`` must not read forever);
* UTF-8 text;
* no key given twice in one mapping: YAML and JSON both silently keep the last
  value, so ``mode: STRICT`` followed by ``mode: WARN`` would quietly be WARN;
* no integer longer than ``MAX_INT_DIGITS`` digits, nothing nested deeper than
  ``MAX_DEPTH``, no alias that contains itself, and no aliases expanding to
  more than ``MAX_VALUES`` values (a few lines of YAML can name billions).

JSON is tried first and costs no import: the module writes JSON and the units
read it on the boot path.  PyYAML is imported only for hand-written files.
Its C loader is used when a cheap scan proves the nesting shallow; it would
crash the interpreter on a few hundred thousand levels, where the pure-Python
loader stops cleanly at its recursion limit.

Errors are ``FileError`` (one line: what is wrong and the fix) or, for
duplicate keys, ``ConfigError`` naming each key's path.
"""

from __future__ import annotations

from itertools import accumulate

from . import jsonio
from .records import NamedTuple
from .schema import ConfigError, Problem, key_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_INT_DIGITS = 100
MAX_DEPTH = 64
MAX_VALUES = 2_000_000
# Above this (over-)estimate of YAML nesting, use the pure-Python loader.
_C_LOADER_MAX_NESTING = 5000


class FileError(ConfigError):
    """A file that cannot be used at all: one line saying why, and the fix."""

    def __init__(self, message: str, fix: str):
        self.message, self.fix = message, fix
        super().__init__([Problem("", None, message, fix)], title="unusable file")

    def lines(self) -> List[str]:
        return [f"{self.message}. {self.fix}"]


class _Duplicate(NamedTuple):
    mapping: dict
    key: Any
    line: Optional[str]  # "line 4 column 5" (YAML only)
    first_line: Optional[str]


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The file's text; OSError if it cannot be opened, FileError if too big or not UTF-8."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileError(f"is larger than {limit // (1024 * 1024)} MiB",
                        "Fix: point at the config file itself; a host_routing config "
                        "with the largest lists allowed is far smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileError(f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                        f"{err.start})", "Fix: save the file as UTF-8") from None


def load_path(path: str) -> Any:
    """``read_text`` then ``load_text``."""
    return load_text(read_text(path))


def load_text(text: str) -> Any:
    """JSON if the text is JSON, else YAML; checked as the module docstring says."""
    duplicates: List[_Duplicate] = []
    try:
        data = jsonio.loads(text, parse_int=_json_int,
                            object_pairs_hook=lambda pairs: _json_object(pairs, duplicates))
    except _TooLong:
        raise _too_long_error(None) from None
    except RecursionError:
        raise _too_deep_error("") from None
    except ValueError:
        return load_yaml(text)
    if duplicates:  # JSON has no aliases and json.loads bounds depth: only these to find
        _check(data, duplicates)
    return data


def load_yaml(text: str) -> Any:
    """YAML only (``#cloud-config`` files), with every check."""
    import yaml

    py_loader, c_loader = _yaml_loaders()
    fast = c_loader is not None and _nesting_bound(text) <= _C_LOADER_MAX_NESTING
    loader = (c_loader if fast else py_loader)(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except _TooLong as err:
        raise _too_long_error(err.line) from None
    except RecursionError:
        raise _too_deep_error("") from None
    except yaml.YAMLError as err:
        raise FileError(f"is neither JSON nor YAML ({_one_line(err)})",
                        "Fix: correct the file's syntax") from None
    except (ValueError, TypeError, OverflowError) as err:
        # A well-formed scalar no value can be made of, such as 2024-02-30.
        raise FileError(f"has a YAML value that cannot be built ({_one_line(err)})",
                        "Fix: correct the value, or quote it to make it a string") from None
    finally:
        loader.dispose()
    _check(data, loader.duplicates)
    return data


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _short(path: str) -> str:
    return path if len(path) <= 100 else path[:60] + "..." + path[-37:]


def _nesting_bound(text: str) -> int:
    """An over-estimate of how deep the YAML in ``text`` nests, in C-speed passes.

    Flow nesting is at most the running count of open brackets (quotes ignored,
    so brackets in strings only make it larger); block nesting at most twice
    the widest run of indentation and ``-``/``?``/``:`` indicators starting a line.
    """
    import re

    brackets = re.sub(r"[^\[\]{}]+", "", text)
    flow = max(accumulate(map(_BRACKET.__getitem__, brackets)), default=0)
    lead = max(map(len, re.findall(r"^[ \t?:-]*", text, re.M)), default=0)
    return flow + 2 * lead + 2


_BRACKET = {"[": 1, "{": 1, "]": -1, "}": -1}


class _TooLong(ValueError):
    def __init__(self, line: Optional[int] = None):
        super().__init__("integer too long")
        self.line = line


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong()
    return int(text)


def _json_object(pairs: List[Tuple[str, Any]], duplicates: List[_Duplicate]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                duplicates.append(_Duplicate(data, key, None, None))
            seen.add(key)
    return data


def _too_long_error(line: Optional[int]) -> FileError:
    where = f" (line {line})" if line else ""
    return FileError(f"has an integer longer than {MAX_INT_DIGITS} digits{where}",
                     "Fix: no setting takes a number that large; correct the value")


def _too_deep_error(path: str) -> FileError:
    where = f" at {_short(path)}" if path else ""
    return FileError(f"nests deeper than {MAX_DEPTH} levels{where}",
                     "Fix: flatten it; host_routing nests 5 levels and no cloud-config "
                     "setting comes near the limit")


def _check(data: Any, duplicates: List[_Duplicate]) -> None:
    """Depth, self-containing aliases, expanded size, then duplicate keys with their paths.

    One iterative walk over each distinct container, so it costs the size of
    what was parsed, not of what aliases expand to, and cannot overflow.
    """
    dup_at = {id(d.mapping): [] for d in duplicates}  # type: ignore[var-annotated]
    for d in duplicates:
        dup_at[id(d.mapping)].append(d)
    problems: List[Problem] = []
    sizes: dict = {}  # id(container) -> (values it expands to, levels below it)
    on_path: set = set()
    # Stack of [container, path, depth, children iterator, values, height].
    stack: List[list] = []

    def enter(value: Any, path: str, depth: int) -> Optional[Tuple[int, int]]:
        if not isinstance(value, (dict, list)):
            return 1, -1  # a scalar: one value, no level of its own
        if id(value) in on_path:
            raise FileError(f"has an alias that contains itself at {_short(path) or 'the top'}",
                            "Fix: a recursive YAML anchor has no finite value; "
                            "remove the alias")
        if id(value) in sizes:
            return sizes[id(value)]
        if depth >= MAX_DEPTH:
            raise _too_deep_error(path)
        for dup in dup_at.get(id(value), ()):
            lines = f" ({dup.line}; first at {dup.first_line})" if dup.line else ""
            problems.append(Problem(
                _join(path, dup.key), dup.key,
                f"is given twice in one mapping{lines}; the file would silently mean "
                "only the last one", "Fix: keep exactly one of them."))
        on_path.add(id(value))
        items = (((_join(path, k), v) for k, v in value.items())
                 if isinstance(value, dict) else
                 ((f"{path}[{i}]", v) for i, v in enumerate(value)))
        stack.append([value, path, depth, items, 1, 0])
        return None

    enter(data, "", 0)
    total = 0
    while stack:
        frame = stack[-1]
        step = next(frame[3], None)
        if step is not None:
            got = enter(step[1], step[0], frame[2] + 1)
            if got is not None:
                frame[4] += got[0]
                frame[5] = max(frame[5], got[1] + 1)
                if got[1] >= 0 and frame[2] + 1 + got[1] >= MAX_DEPTH:
                    raise _too_deep_error(step[0])
            continue
        stack.pop()
        on_path.discard(id(frame[0]))
        sizes[id(frame[0])] = (frame[4], frame[5])
        if stack:
            stack[-1][4] += frame[4]
            stack[-1][5] = max(stack[-1][5], frame[5] + 1)
        total = frame[4]
        if total > MAX_VALUES:
            raise FileError(f"expands to more than {MAX_VALUES:,} values through "
                            f"its aliases (at {_short(frame[1]) or 'the top'})",
                            "Fix: write the values out, or use fewer aliases")
    if problems:
        raise ConfigError(problems, title="duplicate keys")


_LOADERS: List[Any] = []


def _join(path: str, key: Any) -> str:
    return key_path(path, key) if path else key_path("", key)[1:]


def _yaml_loaders() -> Tuple[Any, Any]:
    """SafeLoader (and CSafeLoader if built) with duplicate-key and long-int checks."""
    import yaml

    if _LOADERS:
        return _LOADERS[0], _LOADERS[1]

    def construct_map(loader: Any, node: Any) -> Any:
        data: dict = {}
        yield data
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" keys may be overridden; that is the point
            key = loader.construct_object(key_node, deep=False)
            mark = key_node.start_mark
            line = f"line {mark.line + 1} column {mark.column + 1}"
            try:
                if key in first:
                    loader.duplicates.append(_Duplicate(data, key, line, first[key]))
                else:
                    first[key] = line
            except TypeError:
                continue  # unhashable: construct_mapping below says so, with the mark
        data.update(loader.construct_mapping(node))

    def construct_int(loader: Any, node: Any) -> Any:
        if len(node.value) > MAX_INT_DIGITS:
            raise _TooLong(node.start_mark.line + 1)
        return yaml.SafeLoader.construct_yaml_int(loader, node)

    made: List[Any] = []
    for base in (yaml.SafeLoader, getattr(yaml, "CSafeLoader", None)):
        if base is None:
            made.append(None)
            continue
        cls: Any = type(f"Strict{base.__name__}", (base,), {})
        cls.add_constructor("tag:yaml.org,2002:map", construct_map)
        cls.add_constructor("tag:yaml.org,2002:int", construct_int)
        made.append(cls)
    _LOADERS.extend(made)
    return made[0], made[1]
