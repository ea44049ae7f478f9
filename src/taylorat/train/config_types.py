"""Typed values of a run configuration: fractions as numbers, ``Literal`` choices, declared ranges.

The generic half of reading a config (``train.config`` holds the sections and what a run means):
``coerce(value, type, key)`` turns a YAML value into the field's type or raises a one-line
:class:`ConfigError`; ``ranged(default, bound)`` declares a field's range, ``within`` checks it.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import field
from typing import Any, Literal, Union, get_args, get_origin

from ..common import InputError


class ConfigError(InputError):
    """A config value or key that cannot be used; the message names the fix."""


def ranged(default: Any, bound: str) -> Any:
    """A field whose value (unless None) must be finite and ``bound``: ``>= 0``, ``> 0``, ``in [0, 1)``, ..."""
    return field(default=default, metadata={"range": bound})


_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            return float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{key} must be a number (e.g. 0.031 or 8/255), got {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    if get_origin(tp) is Literal:
        if isinstance(value, bool) and "true" in get_args(tp):  # YAML reads true / false as booleans
            value = "true" if value else "false"
        return choice(value, get_args(tp), key)
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        return number(value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if tp is list or get_origin(tp) is list:
        item = (get_args(tp) or (float,))[0]
        if item is str or get_origin(item) is Literal:  # a list of names; a single name is a list of one
            items = [value] if isinstance(value, str) else value
            if isinstance(items, (list, tuple)) and all(isinstance(v, str) for v in items):
                return [coerce(v, item, key) for v in items]
            raise ConfigError(f"{key} must be a list of names, got {value!r}")
        if isinstance(value, (list, tuple)):
            return [number(v, key) for v in value]
        raise ConfigError(f"{key} must be a list, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def allowed(tp: Any) -> tuple[str, ...]:
    """The values a ``Literal[...]`` (or a list of one, or an optional one) allows; () for any other type."""
    if get_origin(tp) is Union:
        tp = next(a for a in get_args(tp) if a is not type(None))
    if get_origin(tp) is list and get_args(tp):
        tp = get_args(tp)[0]
    return get_args(tp) if get_origin(tp) is Literal else ()


def choice(value: Any, choices: tuple[str, ...], key: str) -> Any:
    """``value`` if it is one of ``choices``; else one line naming them and the closest."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}{hint}")
    return value


def within(value: float, bound: str) -> bool:
    """Whether ``value`` is finite and satisfies ``bound``: ``>= a``, ``> a`` or ``in [a, b]`` (any brackets)."""
    if not math.isfinite(value):
        return False
    if bound.startswith(">"):
        op, lo = bound.split()
        return value >= float(lo) if op == ">=" else value > float(lo)
    lo, hi = (float(x) for x in bound[4:-1].split(","))
    return (lo <= value if bound[3] == "[" else lo < value) and (value <= hi if bound[-1] == "]" else value < hi)
