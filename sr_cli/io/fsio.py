"""File-system primitives every srx writer shares: atomic writes, file modes, locks, output claims.

- ``atomic_write``: a temporary file beside the destination, flushed to disk, renamed into place; an
  interruption at any point leaves either the old file or the complete new one. New files get the
  permissions the user's umask gives (0666 minus the umask, like ``open()``), a replaced file keeps its
  mode.
- Temporary files (``.<name>.<random>.srx-tmp``) and claim files (``.<name>.srx-claim``) carry an
  exclusive ``flock`` while their owner works on them. The lock goes away with the process, so a file
  whose lock can be taken was left by a process that is gone (killed): it is stale and may be removed.
  Another running srx's files are never touched.
- ``claim``: an exclusive lock beside an output, held while that output is computed, so that parallel
  runs over the same folder split the work instead of doing it twice.
- ``locked``: a blocking exclusive lock for read-modify-write of caches (hash records, converted
  models, datasets).
- ``atomic_dir``: a folder built in a hidden staging folder beside its destination and renamed into place
  (downloaded datasets): readers see the old folder or the complete new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_SUFFIX = ".srx-tmp"
CLAIM_SUFFIX = ".srx-claim"
LOCK_SUFFIX = ".srx-lock"
STAGING_SUFFIX = ".srx-staging"  # a folder being built by atomic_dir

_umask_lock = threading.Lock()
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NO_LOCK_STALE_SECONDS = 24 * 3600  # without flock (Windows): a temporary file is stale when this old

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; claims always succeed, staleness goes by age
    fcntl = None


class DestinationExists(FileExistsError):
    """``atomic_write(..., overwrite=False)`` found the destination already there."""


def current_umask() -> int:
    """The process umask, read without changing it where the kernel tells it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # the only portable way reads it by setting it: restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(dest: Path | None = None) -> int:
    """Mode for a file written to ``dest``: an existing regular file keeps its own, else 0666 minus the umask."""
    if dest is not None:
        try:
            st = os.stat(dest)
            if stat.S_ISREG(st.st_mode):
                return stat.S_IMODE(st.st_mode)
        except OSError:
            pass
    return 0o666 & ~current_umask()


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it may have been removed and recreated)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_locked(path: Path, blocking: bool) -> int | None:
    """Open (creating) ``path`` and take its exclusive lock; None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o666 & ~current_umask())
        try:
            if blocking:
                _lock(fd)
            elif not _try_lock(fd):
                os.close(fd)
                return None
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file while we waited: lock the new one


def _temp_path(dest: Path) -> tuple[int, Path]:
    """Create and lock a fresh temporary file beside ``dest``."""
    while True:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=TEMP_SUFFIX)
        tmp = Path(name)
        try:
            _lock(fd)  # our own fresh file: only a stale-file sweep can race us
            if _same_file(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)  # swept between creation and locking: make another


def atomic_write(dest: str | Path, data: bytes | None = None, *, writer: Callable[[Path], None] | None = None,
                 overwrite: bool = True, mode: int | None = None, fsync: bool = True) -> None:
    """Write ``data`` (or whatever ``writer(temp_path)`` writes) to ``dest`` atomically.

    The parent folders are created. Without ``overwrite`` an existing ``dest`` is never replaced, even one
    that appears while we write (``DestinationExists``). Other failures are ``OSError`` with the path.
    """
    dest = Path(dest)
    if (data is None) == (writer is None):
        raise TypeError("atomic_write needs exactly one of data and writer")
    make_folder(dest.parent)
    if not overwrite and os.path.lexists(dest):
        raise DestinationExists(errno.EEXIST, "exists", str(dest))
    fd, tmp = _temp_path(dest)
    try:
        if data is not None:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
        else:
            writer(tmp)
        os.chmod(tmp, new_file_mode(dest if overwrite else None) if mode is None else mode)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # fails if dest appeared meanwhile: never clobber
            except FileExistsError:
                raise DestinationExists(errno.EEXIST, "appeared while srx was working", str(dest)) from None
            except OSError:
                if os.path.lexists(dest):
                    raise DestinationExists(errno.EEXIST, "exists", str(dest)) from None
                os.replace(tmp, dest)  # file systems without hard links
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Build a folder in place of ``dest``: yields an empty staging folder beside it, renamed to ``dest`` when
    the block succeeds (an existing ``dest`` is replaced), removed when it fails.

    The staging folder gets the umask's mode (not ``mkdtemp``'s 0700, which it would pass on to ``dest``).
    Callers that may race hold ``locked(lock_path_for(dest))`` around it.
    """
    dest = Path(dest)
    make_folder(dest.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=STAGING_SUFFIX, dir=dest.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        yield staging
        old = None
        if os.path.lexists(dest):  # a folder cannot be renamed over a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".srx-old", dir=dest.parent))
            os.replace(dest, old / dest.name)
        try:
            os.replace(staging, dest)
        except BaseException:
            if old is not None:
                os.replace(old / dest.name, dest)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was renamed


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose error names the real problem: a file standing where a folder must be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the folder", e.filename or str(folder)) from None


def write_text(dest: str | Path, text: str, overwrite: bool = True) -> None:
    atomic_write(dest, text.encode("utf-8"), overwrite=overwrite)


# ----------------------------------------------------------------------------- locks and claims


@contextlib.contextmanager
def locked(path: str | Path, best_effort: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing; kept, so that every process locks the same file).

    ``best_effort``: where the lock file cannot be created (a read-only cache), go on without the lock.
    """
    path = Path(path)
    try:
        make_folder(path.parent)
        fd = _open_locked(path, blocking=True)
    except OSError:
        if not best_effort:
            raise
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def lock_path_for(target: str | Path) -> Path:
    """The lock file that guards ``target`` (a file or folder): a hidden sibling."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def claim_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}{CLAIM_SUFFIX}"


class Claim:
    """An exclusive claim on an output: ``take`` (non-blocking) or ``wait``, then ``release``."""

    def __init__(self, dest: Path):
        self.path = claim_path(dest)
        self.fd: int | None = None

    def take(self, blocking: bool = False) -> bool:
        make_folder(self.path.parent)
        self.fd = _open_locked(self.path, blocking)
        return self.fd is not None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: a waiter then sees another file and retries
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def claimed(dest: str | Path, best_effort: bool = True) -> Iterator[None]:
    """Hold ``dest``'s claim (waiting for another process that holds it). ``best_effort``: where the claim file
    cannot be created, go on without it (the write that follows reports the real problem)."""
    claim = Claim(Path(dest))
    try:
        claim.take(blocking=True)
    except OSError:
        if not best_effort:
            raise
    try:
        yield
    finally:
        claim.release()


def is_stale(path: Path) -> bool:
    """Whether no process holds the lock of a temporary or claim file (its owner is gone)."""
    if fcntl is None:
        try:
            return time.time() - path.lstat().st_mtime > NO_LOCK_STALE_SECONDS
        except OSError:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
    except OSError:
        return False
    try:
        return _try_lock(fd)  # taken: nobody else has it (released when fd closes)
    finally:
        os.close(fd)


def stale_files(folder: Path) -> list[Path]:
    """Temporary and claim files in ``folder`` whose owner process is gone (killed mid-write)."""
    if not folder.is_dir():
        return []
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        if p.name.startswith(".") and p.name.endswith((TEMP_SUFFIX, CLAIM_SUFFIX)) and is_stale(p):
            found.append(p)
    return found


def remove_stale(path: Path) -> bool:
    """Remove a stale temporary/claim file, checking under its lock that it is still stale and still there."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not _try_lock(fd) or not _same_file(fd, path) or (fcntl is None and not is_stale(path)):
            return False
        path.unlink(missing_ok=True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
