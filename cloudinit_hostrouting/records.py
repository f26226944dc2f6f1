"""``class X(NamedTuple)`` for the units' modules without importing ``typing`` (issue 11).

The units' records (routes, findings, verdicts) are class-syntax NamedTuples.
``typing`` costs the units ~4 ms to import, and each ``typing.NamedTuple``
class turns every field's annotation into a ``ForwardRef``, compiling its text,
as the class is made.  Here is the same construction, step for step, as
``typing.NamedTupleMeta`` (3.11 to 3.13): a ``collections.namedtuple`` (already
imported when the package loads: functools imports it) with the class body's
fields, defaults, docstring, methods and properties.  What differs is only
what nothing here reads at run time: ``__annotations__`` holds the strings of
``from __future__ import annotations`` instead of ForwardRefs, and there is no
``__orig_bases__``.  mypy sees ``typing.NamedTuple`` itself, so every record is
type-checked as before.
tests/test_records.py holds this to ``typing.NamedTuple`` as the oracle.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    from collections import namedtuple

    # typing's: what a NamedTuple body may not set, and what is not copied onto the class.
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__",
                             "_fields", "_field_defaults",
                             "_make", "_replace", "_asdict", "_source"})
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _NamedTupleMeta(type):
        def __new__(cls, typename, bases, ns):
            if bases != (NamedTuple,):
                raise TypeError("can only inherit from NamedTuple alone")
            if "__annotations__" not in ns and "__annotate__" in ns:
                # Python 3.14 without the future import: the fields would be lost.
                raise TypeError(f"{typename}: records need `from __future__ import annotations`")
            types = ns.get("__annotations__", {})
            default_names = []
            for field_name in types:
                if field_name in ns:
                    default_names.append(field_name)
                elif default_names:
                    raise TypeError(f"Non-default namedtuple field {field_name} "
                                    f"cannot follow default field"
                                    f"{'s' if len(default_names) > 1 else ''} "
                                    f"{', '.join(default_names)}")
            nm_tpl = namedtuple(typename, list(types),
                                defaults=[ns[n] for n in default_names],
                                module=ns["__module__"])
            nm_tpl.__annotations__ = nm_tpl.__new__.__annotations__ = dict(types)
            for key, val in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key not in _SPECIAL:
                    if key not in nm_tpl._fields:
                        setattr(nm_tpl, key, val)
                    set_name = getattr(type(val), "__set_name__", None)
                    if set_name is not None:  # as a class statement does (typing from 3.12)
                        set_name(val, nm_tpl, key)
            return nm_tpl

    NamedTuple = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})
