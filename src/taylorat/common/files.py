"""Files written whole or not at all (atomic writes and folders), a live writer's lock, the user's files read
with one-line errors, and the temporary names an interrupted write leaves behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, TayloratError


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # a failed write (disk full) names no file: name ours
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ------------------------------------------------------------------ reading the user's files
def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file; one-line InputError when it is not text. OSErrors (not found, a folder, permission)
    keep their file name, for the command line's one line."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                         "give a text file saved as UTF-8") from None


def read_json(path: str | os.PathLike, what: str = "file", fix: str = "repair or delete it") -> Any:
    """A JSON file; one-line InputError naming the file, the line and ``fix`` when it is not valid JSON."""
    try:
        return json.loads(read_text(path, what))
    except (json.JSONDecodeError, RecursionError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "nested too deep"
        raise InputError(f"{what} {path} is not valid JSON ({where}); {fix}") from None


def read_jsonl(path: str | os.PathLike, what: str = "file", fix: str = "repair or delete it") -> list[Any]:
    """One JSON value per non-empty line; one-line InputError naming the file, the line and ``fix``."""
    out = []
    for i, line in enumerate(read_text(path, what).splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                raise InputError(f"{what} {path} line {i} is not valid JSON; {fix}") from None
    return out


_OS_FIXES = {
    errno.ENOENT: "no such file or folder; check the path",
    errno.EISDIR: "is a folder; give a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder; give a folder path",
    errno.EACCES: "permission denied; choose a place you can read and write, or change its permissions",
    errno.EPERM: "operation not permitted; choose a place you can read and write, or change its permissions",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.ENAMETOOLONG: "file name too long; use shorter names or a shorter path",
    errno.EEXIST: "already exists and is in the way; remove it or choose another path",
    errno.EROFS: "read-only file system; write elsewhere",
    errno.ENOTEMPTY: "folder not empty; remove its contents or choose another path",
    errno.ELOOP: "too many symbolic links; check the path",
}


def describe_os_error(e: OSError) -> str:
    """One line for an operating-system error on the user's files: the path(s), what happened and the fix."""
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = _OS_FIXES.get(e.errno) if e.errno is not None else None
    what = what or f"{e.strerror or type(e).__name__} (errno {e.errno}); check the path and the device"
    return f"{paths}: {what}" if paths else what
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
