"""Small helpers every layer uses; this module imports nothing of taylorat.

* error types: :class:`TayloratError` and :class:`InputError` (bad input: the CLI prints it as
  one line; anything else is a bug and keeps its traceback);
* files written atomically (temp file in the same directory, fsync, rename, fsync the directory), sets
  of files written whole or not at all (:func:`atomic_folder`), and a writer's lock on a folder
  (:class:`FolderLock`);
* devices, seeds, and [0,1] images from uint8 or float tensors;
* :class:`Registry`, the name -> object table behind models, bases, attacks and datasets, with one
  "unknown ... did you mean" wording (:func:`did_you_mean`), and :func:`import_plugins`, which
  imports the user's own modules or ``.py`` files that register more of them (``TAYLORAT_PLUGINS``).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch


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


def require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency or raise a one-line :class:`MissingDependency` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}: pip install 'taylorat[{extra}]'") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


TEMP_NAME = re.compile(r"\..+\.tmp")  # ``.NAME.XXXX.tmp``: what an interrupted atomic write leaves behind


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file or folder of an atomic write (never a result)."""
    return TEMP_NAME.fullmatch(name) is not None


def remove_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete what interrupted atomic writes left directly in ``folder``; returns the names removed."""
    gone = []
    for p in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if is_temp_name(p.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(p.name)
    return gone


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files whole or not at all: yields a temporary folder to write them into.

    On success a new ``path`` is the temporary folder renamed (one atomic step); into an existing ``path``
    (which may hold other files) the files are renamed one by one, each atomically, once every one of
    them is written. On any error the temporary folder is removed and ``path`` is as it was.
    """
    path = Path(path)
    fresh = not path.exists()
    parent = path.parent if fresh else path
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if fresh:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
            os.replace(tmp, path)
        else:
            for f in sorted(tmp.iterdir()):
                os.replace(f, path / f.name)
            tmp.rmdir()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class FolderLocked(TayloratError, RuntimeError):
    """Another live process is writing the folder."""


class FolderLock:
    """A writer's lock on a folder: ``FOLDER/.taylorat.lock`` holding the owner's PID, created atomically.

    A second writer is refused at once (:class:`FolderLocked`); a lock whose process is gone (killed) is
    taken over, and :attr:`took_over` names that process. PIDs are this machine's: the folder's writers
    must run here.
    """

    NAME = ".taylorat.lock"

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / self.NAME
        self.took_over: int | None = None
        self.held = False

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None and _alive(owner):
                    raise FolderLocked(f"{self.what} {self.folder} is being written by process {owner} (lock "
                                       f"{self.path}); wait for it to finish or stop it, then run again") from None
                self.took_over = owner if owner is not None else self.took_over
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise FolderLocked(f"could not take the lock {self.path}; another process keeps taking it")

    def release(self) -> None:
        if self.held and _lock_owner(self.path) == os.getpid():
            self.path.unlink()
        self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _lock_owner(path: Path) -> int | None:
    """The PID in a lock file; None when it is unreadable or empty (a writer killed before writing it)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda``, ``cuda:N``; one-line error without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"device={name!r} is not one of auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    return dev


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed mixed from ``parts`` (independent streams per run, epoch and purpose)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def as_float_images(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Images as float32 in [0,1]: uint8 tensors are divided by 255, float tensors cast (optionally moved)."""
    if device is not None:
        x = x.to(device)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def check_unit_range(x: torch.Tensor, what: str = "images") -> None:
    """Refuse float images outside [0,1] (normalized ones, say); uint8 images are in range by type."""
    if x.dtype != torch.uint8 and x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError(f"{what} must lie in [0,1] (got [{x.min().item():.3g}, {x.max().item():.3g}]); "
                         "keep normalization inside the model")


def new_figure(what: str, **kwargs: Any):
    """A matplotlib ``Figure`` (no pyplot state); one-line error naming ``taylorat[plot]`` without matplotlib."""
    require("matplotlib", "plot", what)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def write_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """Render a matplotlib figure to PNG and write it atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


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
