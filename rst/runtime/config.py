"""What the frozen config dataclasses (``SearchConfig``, ``NetworkSpec``, ``AttackConfig``) share: a strict
``from_dict``, a check of unknown field names, and a check of each field's value against its annotation."""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing


def check_known_fields(cls, names, what: str) -> None:
    """Refuse ``names`` that are not fields of ``cls``, naming them and the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} fields: {unknown}; known: {', '.join(known)}")


def strict_from_dict(cls, d: dict, what: str):
    """``cls(**d)``, refusing keys that are not fields of ``cls`` with a message naming them."""
    check_known_fields(cls, d, what)
    return cls(**d)


def _fits(tp, v) -> bool:
    """Whether ``v`` is a value of the annotation ``tp`` (types not listed here are not checked)."""
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)
    if tp is float:       # an int is a float here (width=1); NaN and infinities are not numbers a config means
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if tp is str:
        return isinstance(v, str)
    if tp is type(None):
        return v is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, v) for a in args)
    if origin is tuple:
        if not isinstance(v, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], x) for x in v)
        return len(v) == len(args) and all(_fits(a, x) for a, x in zip(args, v))
    return True


_WORDS = {bool: "True or False", int: "a whole number", float: "a finite number", str: "a string"}
_PLURAL = {bool: "True/False values", int: "whole numbers", float: "finite numbers", str: "strings"}


def _describe(tp) -> str:
    if tp in _WORDS:
        return _WORDS[tp]
    if typing.get_origin(tp) is tuple:
        return f"a tuple of {_PLURAL.get(typing.get_args(tp)[0], 'values')}"
    return " or ".join("None" if a is type(None) else _describe(a) for a in typing.get_args(tp)) or str(tp)


def check_field_types(obj) -> None:
    """Refuse a field whose value does not fit its annotation: ``width='abc'``, ``eps=inf``,
    ``augment=0``. Called first in ``__post_init__``, so the range checks after it compare numbers."""
    for name, tp in _field_types(type(obj)):
        v = getattr(obj, name)
        if not _fits(tp, v):
            raise ValueError(f"{name} must be {_describe(tp)}, got {v!r}")


@functools.cache
def _field_types(cls) -> tuple[tuple[str, object], ...]:
    """``(name, resolved annotation)`` of each field, once per class (the annotations are strings)."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
