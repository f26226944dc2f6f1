"""records.NamedTuple against typing.NamedTuple, the oracle.

Every record class of the package is built twice from its own module's source,
once as shipped (records.NamedTuple) and once with ``typing.NamedTuple`` in its
place, and the two classes and their instances must agree in everything but
what records.py says differs (``__annotations__`` as strings, no
``__orig_bases__``).  Synthetic records cover what the package does not use yet
(properties, class and static methods, pickling, subclasses with and without
``__slots__``) and every error typing raises for a bad body.
"""

from __future__ import annotations
import __future__

import importlib
import os
import pickle
import pkgutil
import sys
import typing
from types import FunctionType, ModuleType
from typing import Any, Dict, List, Optional, Tuple

import pytest

import cloudinit_hostrouting
from cloudinit_hostrouting import records
from cloudinit_hostrouting.records import NamedTuple as Lean

SHIPPED = "from .records import NamedTuple\n"
ORACLE = "from typing import NamedTuple\n"
# Allowed to differ (records.py's docstring): typing's annotations are ForwardRefs (compared
# below as such), kept from 3.14 on behind __annotate__ rather than in __annotations__.
NOT_COMPARED = {"__annotations__", "__orig_bases__", "__annotate_func__", "__annotations_cache__"}


def _record_modules() -> List[str]:
    """Every module of the package whose records are made by records.NamedTuple."""
    names = []
    for info in pkgutil.iter_modules(cloudinit_hostrouting.__path__):
        path = os.path.join(cloudinit_hostrouting.__path__[0], f"{info.name}.py")
        with open(path, encoding="utf-8") as handle:
            if SHIPPED in handle.read():
                names.append(f"cloudinit_hostrouting.{info.name}")
    return sorted(names)


def _oracle_module(name: str) -> ModuleType:
    """``name`` executed again from its source with typing.NamedTuple (not registered in
    sys.modules, so the package's own modules are untouched)."""
    shipped = importlib.import_module(name)
    path = shipped.__file__ or ""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    assert source.count(SHIPPED) == 1, name
    module = ModuleType(name)
    module.__file__, module.__package__ = path, "cloudinit_hostrouting"
    exec(compile(source.replace(SHIPPED, ORACLE), path, "exec"), module.__dict__)
    return module


def _records(module: ModuleType) -> Dict[str, type]:
    return {k: v for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, tuple) and hasattr(v, "_fields")
            and v.__module__ == module.__name__}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, FunctionType) and isinstance(b, FunctionType):
        return a.__code__ == b.__code__ and a.__defaults__ == b.__defaults__
    if isinstance(a, property) and isinstance(b, property):
        return all(_same_value(getattr(a, f), getattr(b, f)) for f in ("fget", "fset", "fdel"))
    if isinstance(a, (staticmethod, classmethod)) and type(a) is type(b):
        return _same_value(a.__func__, b.__func__)
    return bool(a is b or a == b)


def _outcome(call: Any) -> Tuple[str, str]:
    try:
        return "ok", repr(call())
    except Exception as err:  # the exception is the outcome compared
        return type(err).__name__, str(err)


def differences(lean: type, oracle: type) -> List[str]:
    """Every way ``lean`` and ``oracle`` (made from one class body) differ."""
    out = []
    keys = set(vars(lean)) | set(vars(oracle))
    for key in sorted(keys - NOT_COMPARED):
        if key not in vars(lean) or key not in vars(oracle):
            out.append(f"{key}: only in {'lean' if key in vars(lean) else 'oracle'}")
        elif key in ("__new__", "_make", "_replace", "__repr__", "_asdict", "__getnewargs__",
                     "__replace__") or key in lean._fields:
            continue  # namedtuple's own code, made fresh per class: compared by behaviour below
        elif not _same_value(vars(lean)[key], vars(oracle)[key]):
            out.append(f"{key}: {vars(lean)[key]!r} != {vars(oracle)[key]!r}")
    for attr in ("__name__", "__qualname__", "__module__", "__doc__", "__mro__"):
        got, want = getattr(lean, attr), getattr(oracle, attr)
        if attr == "__mro__":
            got, want = len(got), len(want)
        if got != want:
            out.append(f"{attr}: {got!r} != {want!r}")
    annotations = {k: v.__forward_arg__ for k, v in oracle.__annotations__.items()}
    if lean.__annotations__ != annotations:
        out.append(f"__annotations__: {lean.__annotations__} != {annotations}")
    n = len(lean._fields)
    required = n - len(oracle._field_defaults)  # the call shapes are the oracle's
    args = tuple(f"v{i}" for i in range(n))
    calls = {
        "all": lambda c: c(*args),
        "required only": lambda c: c(*args[:required]),
        "one missing": lambda c: c(*args[:required - 1]) if required else c(*args, 1),
        "one too many": lambda c: c(*args, "extra"),
        "keywords": lambda c: c(**dict(zip(c._fields, args))),
        "unknown keyword": lambda c: c(*args, nosuch=1),
        "_make": lambda c: c._make(args),
        "_make short": lambda c: c._make(args[:-1]),
        "_replace": lambda c: c(*args)._replace(**{c._fields[-1]: "new"}),
        "_replace unknown": lambda c: c(*args)._replace(nosuch=1),
        "_asdict": lambda c: c(*args)._asdict(),
        "tuple": lambda c: tuple(c(*args)),
        "hash": lambda c: hash(c(*args)) == hash(args),
        "equal": lambda c: (c(*args) == args, c(*args) != args, c(*args) < (*args, 0)),
        "str": lambda c: str(c(*args)),
        "getnewargs": lambda c: c(*args).__getnewargs__(),
        "setattr": lambda c: setattr(c(*args), c._fields[0], 1),
        "new attribute": lambda c: setattr(c(*args), "nosuch", 1),
        "field access": lambda c: [getattr(c(*args), f) for f in c._fields],
    }
    for what, call in calls.items():
        got, want = _outcome(lambda: call(lean)), _outcome(lambda: call(oracle))  # noqa: B023
        if got != want:
            out.append(f"{what}: {got} != {want}")
    return out


def test_every_record_module_is_found() -> None:
    """The discovery below must see the modules the units use (else it proves nothing)."""
    found = _record_modules()
    for name in ("config", "netlink", "rtnl", "overlap", "analysis", "routes", "schema",
                 "loader", "kvp", "ib"):
        assert f"cloudinit_hostrouting.{name}" in found


@pytest.mark.parametrize("name", _record_modules())
def test_package_records_match_typing(name: str) -> None:
    lean = _records(importlib.import_module(name))
    oracle = _records(_oracle_module(name))
    assert lean and sorted(lean) == sorted(oracle)
    for cls_name in lean:
        assert type(lean[cls_name]) is type, cls_name  # a plain class, as typing's
        assert differences(lean[cls_name], oracle[cls_name]) == [], cls_name


SYNTHETIC = '''
class Rec(NamedTuple):
    """A record with every kind of member."""

    a: int
    b: str = "x"
    c: Optional[List[int]] = None
    LIMIT = 5  # no annotation: a class attribute, not a field

    def total(self) -> int:
        return self.a + len(self.b)

    @property
    def doubled(self) -> int:
        return 2 * self.a

    @staticmethod
    def zero() -> int:
        return 0

    @classmethod
    def of(cls, a: int) -> Rec:
        return cls(a)

    def __str__(self) -> str:
        return f"Rec {self.a}"


class Bare(NamedTuple):
    a: int
    b: int


class AllDefaults(NamedTuple):
    a: int = 1
    b: Tuple[int, ...] = ()


class Slotted(Rec):
    __slots__ = ()

    def more(self) -> int:
        return self.total() + 1


class Open(Rec):
    def more(self) -> int:
        return 1
'''


def _build(named_tuple: Any, source: str = SYNTHETIC) -> Dict[str, Any]:
    """Run ``source`` as a module body, under ``from __future__ import annotations``."""
    ns: Dict[str, Any] = {"__name__": "synthetic", "NamedTuple": named_tuple,
                          "Optional": Optional, "List": List, "Tuple": Tuple}
    exec(compile(source, "<synthetic>", "exec", flags=__future__.annotations.compiler_flag,
                 dont_inherit=True), ns)
    return ns


def test_synthetic_records_match_typing() -> None:
    lean, oracle = _build(Lean), _build(typing.NamedTuple)
    for name in ("Rec", "Bare", "AllDefaults"):
        assert differences(lean[name], oracle[name]) == [], name
    for cls in ("Rec", "Slotted", "Open"):
        for build in (lambda c: c(3), lambda c: c.of(4), lambda c: c(1, "yy", [2])):
            got, want = build(lean[cls]), build(oracle[cls])
            assert (got.total(), got.doubled, got.zero(), str(got), repr(got), got.LIMIT) \
                == (want.total(), want.doubled, want.zero(), str(want), repr(want), want.LIMIT)
            assert got._field_defaults == want._field_defaults == {"b": "x", "c": None}
    for name in ("Slotted", "Open"):
        got, want = lean[name](1), oracle[name](1)
        assert (hasattr(got, "__dict__"), got.more()) == (hasattr(want, "__dict__"), want.more())
        assert _outcome(lambda: setattr(got, "z", 1)) == _outcome(lambda: setattr(want, "z", 1))  # noqa: B023
    assert not hasattr(lean["Slotted"](1), "__dict__")  # the point of __slots__ = ()
    assert lean["Rec"].__doc__ == "A record with every kind of member."
    assert lean["Bare"].__doc__ == oracle["Bare"].__doc__ == "Bare(a, b)"


def test_a_descriptors_set_name_is_called() -> None:
    """As for any class, and by typing from 3.12 on (typing 3.11 skips it)."""
    seen = []

    class Named:
        def __set_name__(self, owner: type, name: str) -> None:
            seen.append((owner.__name__, name))

    source = "class Rec(NamedTuple):\n    a: int\n    tag = TAG\n"
    oracles = [typing.NamedTuple] if sys.version_info >= (3, 12) else []
    for named_tuple in [Lean, *oracles]:
        seen.clear()
        ns: Dict[str, Any] = {"NamedTuple": named_tuple, "TAG": Named(), "__name__": "s"}
        exec(compile(source, "<synthetic>", "exec", flags=__future__.annotations.compiler_flag,
                     dont_inherit=True), ns)
        assert seen == [("Rec", "tag")], named_tuple


BAD_BODIES = {
    "default before a field": "class R(NamedTuple):\n    a: int = 1\n    b: int\n",
    "two defaults before a field":
        "class R(NamedTuple):\n    a: int = 1\n    b: int = 2\n    c: int\n",
    "overwrites _replace":
        "class R(NamedTuple):\n    a: int\n    def _replace(self): pass\n",
    "sets __slots__": "class R(NamedTuple):\n    a: int\n    __slots__ = ()\n",
    "overwrites __new__": "class R(NamedTuple):\n    a: int\n    def __new__(cls): pass\n",
    "underscore field": "class R(NamedTuple):\n    _a: int\n",
    "a second base": "class R(NamedTuple, Bare):\n    a: int\n",
}


@pytest.mark.parametrize("what", sorted(BAD_BODIES))
def test_bad_bodies_fail_as_typing_does(what: str) -> None:
    source = "class Bare:\n    pass\n" + BAD_BODIES[what]
    got = _outcome(lambda: _build(Lean, source))
    want = _outcome(lambda: _build(typing.NamedTuple, source))
    assert got[0] == want[0] != "ok", (got, want)
    if what != "a second base":  # typing names Generic, which records does not offer
        assert got == want


class PickledLean(Lean):
    a: int
    b: str = "x"


class PickledTyping(typing.NamedTuple):
    a: int
    b: str = "x"


def test_pickling_round_trips_as_typing() -> None:
    for cls in (PickledLean, PickledTyping):
        value = cls(1)
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(value, protocol))
            assert type(back) is cls and back == value
    assert PickledLean(1).__reduce_ex__(2)[1][1:] == PickledTyping(1).__reduce_ex__(2)[1][1:]


def test_negative_control_a_lost_default_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison sees a broken NamedTuple: here one that drops the defaults."""
    real = records.namedtuple  # type: ignore[attr-defined]

    def no_defaults(*args: Any, **kwargs: Any) -> Any:
        kwargs["defaults"] = None
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "namedtuple", no_defaults)
    lean, oracle = _build(Lean), _build(typing.NamedTuple)
    found = differences(lean["Rec"], oracle["Rec"])
    assert any(line.startswith("_field_defaults") for line in found), found
    assert any(line.startswith("required only") for line in found), found


def test_negative_control_a_lost_docstring_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "_SPECIAL", records._SPECIAL | {"__doc__"})  # type: ignore[attr-defined]
    lean, oracle = _build(Lean), _build(typing.NamedTuple)
    assert "__doc__" in " ".join(differences(lean["Rec"], oracle["Rec"]))


def test_package_records_are_not_typing_ones() -> None:
    """What the oracle test compares is really records.NamedTuple's work."""
    from cloudinit_hostrouting.config import Route

    assert "__orig_bases__" not in vars(Route)
    assert Route.__annotations__["destination"] == "IPNetwork"
    assert os.path.basename(records.__file__ or "") == "records.py"
