"""One registry type for every extension point (models, datasets, bases, attacks, minimizers), its
"did you mean", and the user's plug-in modules (``TAYLORAT_PLUGINS``)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import InputError

# ------------------------------------------------------------------ registries
T = TypeVar("T")


def did_you_mean(name: Any, choices: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``name`` (difflib, ratio >= 0.6), else ``""``.

    ``prefix`` is put before the suggestion (``timm:``) without taking part in the match.
    """
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """Names -> objects of one kind (a model constructor, a base, an attack, a dataset) with per-entry metadata.

    ``get`` of a name not registered raises one line::

        unknown {kind} 'x'; available: a, b, c; did you mean 'y'?

    ``listing`` replaces ``available:`` (``choose from``), ``describe(name, metadata)`` how each name is
    listed, ``normalize`` maps a requested name to its key (``Fashion-MNIST`` -> ``fashion_mnist``);
    ``sort`` lists names sorted instead of in registration order. Every query first imports the plug-ins
    named in ``TAYLORAT_PLUGINS`` (once per process), so a user's own entries are there when looked up.
    """

    def __init__(self, kind: str, *, listing: str = "available:", sort: bool = False,
                 normalize: Callable[[str], str] | None = None,
                 describe: Callable[[str, dict[str, Any]], str] | None = None) -> None:
        self.kind = kind
        self._listing, self._sort, self._normalize, self._describe = listing, sort, normalize, describe
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}

    def register(self, name: str, obj: T | None = None, **metadata: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that registers what it decorates."""
        self._check_new(name)
        if obj is None:
            def decorator(target: T) -> T:
                self._check_new(name)
                self._entries[name] = (target, dict(metadata))
                return target

            return decorator
        self._entries[name] = (obj, dict(metadata))
        return obj

    def _check_new(self, name: str) -> None:
        if name in self._entries:
            raise InputError(f"{self.kind} {name!r} is already registered")

    def unregister(self, name: str) -> None:
        """Remove ``name`` if registered (tests and plug-ins that replace an entry)."""
        self._entries.pop(name, None)

    def known(self, name: str) -> bool:
        """Whether ``name`` is registered now, without importing plug-ins (for checks while modules register)."""
        return name in self._entries

    def _key(self, name: Any) -> Any:
        load_plugins_from_env()
        return self._normalize(name) if self._normalize is not None and isinstance(name, str) else name

    def get(self, name: str) -> T:
        """The object registered under ``name``; the one-line "unknown ..." :class:`InputError` otherwise."""
        key = self._key(name)
        if key not in self._entries:
            raise self.error(name)
        return self._entries[key][0]

    def metadata(self, name: str) -> dict[str, Any]:
        """A copy of the keyword arguments ``name`` was registered with."""
        key = self._key(name)
        if key not in self._entries:
            raise self.error(name)
        return dict(self._entries[key][1])

    def names(self) -> list[str]:
        """Registered names, in registration order (sorted if the registry was made with ``sort=True``)."""
        load_plugins_from_env()
        return sorted(self._entries) if self._sort else list(self._entries)

    def error(self, name: Any, choices: Iterable[str] | None = None) -> InputError:
        """The one-line error for an unknown ``name``, listing ``choices`` (default: :meth:`names`)."""
        listed = self.names() if choices is None else list(choices)
        shown = [self._describe(n, self._entries[n][1]) if self._describe and n in self._entries else n
                 for n in listed]
        key = self._key(name)
        return InputError(f"unknown {self.kind} {str(name)!r}; {self._listing} {', '.join(shown)}"
                          + did_you_mean(key, listed))

    def __contains__(self, name: object) -> bool:
        return self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


# --------------------------------------------------------------------- plug-ins
PLUGINS_ENV = "TAYLORAT_PLUGINS"
_imported_plugins: set[str] = set()
_env_plugins_loaded = False


def import_plugins(specs: Iterable[str]) -> None:
    """Import each plug-in: a dotted module name on the Python path or a path to a ``.py`` file.

    A plug-in registers entries (``register_dataset``, ``models.register``, ``register_base``,
    ``register_attack``) when imported; each is imported once per process. A plug-in that is not
    there raises a one-line :class:`InputError`.
    """
    for spec in (str(s).strip() for s in specs):
        if not spec:
            continue
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            _import_file(Path(spec).expanduser())
        elif spec not in _imported_plugins:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as e:
                if e.name is None or not (spec == e.name or spec.startswith(e.name + ".")):
                    raise  # the plug-in itself imports something missing: its own traceback says what
                raise InputError(f"plugin {spec!r} not found: no module {e.name!r} on the Python path; "
                                 "give a dotted module name or a path to a .py file") from None
            _imported_plugins.add(spec)


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"plugin file {str(path)!r} not found; give a path to a .py file or a dotted module name")
    key = str(path.resolve())
    if key in _imported_plugins:
        return
    name = "_taylorat_plugin_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"plugin file {str(path)!r} cannot be imported; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _imported_plugins.add(key)  # before running it: a plug-in that queries a registry does not import itself again
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        _imported_plugins.discard(key)
        raise


def load_plugins_from_env() -> None:
    """Import the plug-ins listed (comma-separated) in ``TAYLORAT_PLUGINS``, once per process.

    Every registry query calls this, so the command line sees a user's own models, bases, attacks
    and datasets without a code change; a front end may call it first to report a bad entry early.
    """
    global _env_plugins_loaded
    if _env_plugins_loaded:
        return
    _env_plugins_loaded = True
    import_plugins(os.environ.get(PLUGINS_ENV, "").split(","))
