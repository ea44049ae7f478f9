"""The error types of taylorat: one line for bad input, a traceback for a bug; optional imports."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


class TayloratError(Exception):
    """An error taylorat raises on purpose; its message names the fix.

    The CLI prints ``taylorat: {prefix}{message}`` and exits with ``exit_code``.
    """

    exit_code = 2
    prefix = "error: "


class InputError(TayloratError, ValueError):
    """Bad input (a value, a file, a name): reported as one line."""


class MissingDependency(InputError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when the message is empty): for one-line reports."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency or raise a one-line :class:`MissingDependency` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}: pip install 'taylorat[{extra}]'") from None
