"""Atomic file writes, hashing and a lock file: an interrupted command never leaves a half-written
artifact, two commands writing one file never lose each other's work, and a folder that cannot be
written to is one clear error (:class:`NotWritableError`), not a temp file's name in a traceback."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)

_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class NotWritableError(EdgecatError, OSError):
    """A folder edgecat must write into is read-only or not this user's. An OSError too, so callers
    that treat a read-only bundle as "figures printed, nothing saved" keep doing so."""

    def __init__(self, folder: str | os.PathLike[str], cause: OSError | None = None, what: str = "") -> None:
        code = cause.errno if cause is not None and cause.errno else errno.EACCES
        why = "folder is read-only" if code == errno.EROFS else "folder is not writable by this user"
        message = f"cannot write to {what}{folder}: {why} (copy it somewhere writable)"
        OSError.__init__(self, code, message)
        self.folder = Path(folder)

    def __str__(self) -> str:
        return str(self.strerror)


def not_writable(exc: OSError) -> bool:
    """Whether ``exc`` says the folder cannot be written (permissions, a read-only filesystem)."""
    return isinstance(exc, PermissionError) or exc.errno in _NOT_WRITABLE


def require_writable(folder: str | os.PathLike[str], what: str = "") -> None:
    """Refuse, before any slow work, a folder this process cannot create files in."""
    folder = Path(folder)
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(folder) else errno.EACCES
        raise NotWritableError(folder, OSError(code, os.strerror(code)), what)


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


@contextlib.contextmanager
def _writable(folder: Path) -> Iterator[None]:
    """Turn "permission denied" / "read-only file system" from edgecat's own file operations into
    one line naming the folder."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, NotWritableError) or not not_writable(exc):
            raise
        raise NotWritableError(folder, exc) from exc


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it over ``dest`` only if the block succeeds.

    The temporary file keeps ``dest``'s suffix (Keras insists on ``.keras``, ONNX tools sniff it).
    """
    dest = Path(dest)
    with _writable(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{dest.stem}.", suffix=suffix if suffix is not None else dest.suffix, dir=dest.parent
        )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir():
            raise IsADirectoryError(tmp_path)
        # mkstemp makes 0600 files; artifacts are shared (containers, services): honour the umask.
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync(tmp_path)  # the data is on disk before the name points at it (power cuts on a Jetson)
        with _writable(dest.parent):
            os.replace(tmp_path, dest)
        _fsync(dest.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    """fsync a file or a directory (the rename); best effort where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in whole when the block succeeds."""
    dest = Path(dest)
    with _writable(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(lock_file: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) for the block: processes that
    read-modify-write one file take turns. ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows;
    where neither exists the block runs unlocked (the caller's re-read just before writing still
    narrows the window to a few milliseconds). The lock dies with its process, so a killed command
    never leaves it held."""
    lock_file = Path(lock_file)
    flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(lock_file, os.O_RDWR | flags, 0o666)
    except PermissionError:  # another user's lock file in a folder we may still write: lock it read-only
        try:
            fd = os.open(lock_file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise NotWritableError(lock_file.parent, exc) from exc
    except OSError as exc:
        if not_writable(exc):
            raise NotWritableError(lock_file.parent, exc) from exc
        raise
    try:
        _lock(fd, True)
        try:
            yield
        finally:
            _lock(fd, False)
    finally:
        os.close(fd)


def _lock(fd: int, take: bool) -> None:
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX if take else fcntl.LOCK_UN)
        return
    try:
        import msvcrt
    except ImportError:
        log.debug("no file locking on this platform: concurrent writers are merged without a lock")
        return
    os.lseek(fd, 0, os.SEEK_SET)
    if take:
        while True:  # LK_LOCK gives up after 10 s; a slow writer is waited for, not failed
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError as exc:
                if exc.errno != getattr(errno, "EDEADLOCK", errno.EDEADLK):
                    raise
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike[str], data: Any) -> None:
    write_text(dest, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays end up in metrics; keep json.dumps free of numpy imports elsewhere.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """Per-user cache (image checks, converted images); EDGECAT_CACHE_DIR overrides it."""
    root = os.environ.get("EDGECAT_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "edgecat"
    path.mkdir(parents=True, exist_ok=True)
    return path
