"""The state directory on disk (SPEC §10): one gateway per directory, private modes, plain storage faults.

- `StateDirLock`: an advisory lock (`flock`) on `state_dir/gateway.lock`, taken by `lockergw run` before
  it touches a port, the journal, the broker or the control socket; a second gateway on the same
  directory is refused naming the pid that holds it. The CLI does not take it: its writes go through
  SQLite transactions that are safe beside the running daemon.
- `prepare_state_dir`: the directory 0700 and its databases and keys 0600, whatever the umask; a
  directory that exists with a looser mode is tightened (with a log line).
- `describe_storage_error`: what an operator needs to hear about a failed write — "read-only file
  system", "no space left", or the OS's own words — in one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

log = logging.getLogger("lockergw")

LOCK_FILE = "gateway.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Files in state_dir that hold card numbers, the journal or keys (SQLite's -wal/-shm files follow them).
PRIVATE_FILES = ("credentials.db", "journal.db", "site.key")
#: Below this much free space a commit can fail any moment; doctor says so.
LOW_SPACE_BYTES = 16 * 1024 * 1024


class StateDirBusy(Exception):
    """Another process holds the state directory's lock; the message names its pid."""


class JournalUnavailable(Exception):
    """The journal cannot commit (disk full, read-only, I/O error): nothing was decided or changed."""


class StateDirLock:
    """`with StateDirLock(state_dir):` — raises StateDirBusy when another gateway runs on it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateDirBusy(
                f"another gateway ({who}) is already running on state_dir {self.path.parent}; "
                "stop it first (one gateway per state directory)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def prepare_state_dir(state_dir: Path) -> None:
    """Create `state_dir` with mode 0700 (tightening an existing looser one) and make its private files
    0600. The umask does not matter: modes are set explicitly."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    mode = stat.S_IMODE(state_dir.stat().st_mode)
    if mode & 0o077:
        os.chmod(state_dir, DIR_MODE)
        log.warning("state_dir %s was mode %o (readable by others); tightened to %o", state_dir, mode, DIR_MODE)
    secure_files(state_dir)


def secure_files(state_dir: Path, names: tuple[str, ...] = PRIVATE_FILES) -> None:
    """Make the databases (with their -wal and -shm files) and keys in `state_dir` 0600."""
    for name in names:
        for suffix in ("", "-wal", "-shm"):
            path = Path(state_dir) / f"{name}{suffix}"
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
                    os.chmod(path, FILE_MODE)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside (SQLite's -wal and -shm among them) are 0600 whatever the caller's umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def describe_storage_error(exc: BaseException, where: Path) -> str:
    """One line naming why a write under `where` failed: read-only, no space, or the OS's words."""
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return _errno_text(exc.errno)
    probe = filesystem_problem(where)
    if probe is not None:
        return probe
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        lowered = text.lower()
        if "readonly" in lowered or "read-only" in lowered:
            return "read-only (the database or its directory cannot be written)"
        if "full" in lowered:
            return "no space left on the device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text


def filesystem_problem(where: Path) -> str | None:
    """ "read-only file system" or "no space left on the device" when that is so of `where`, else None."""
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        info = os.statvfs(path)
    except OSError:
        return None
    if info.f_flag & os.ST_RDONLY:
        return _errno_text(errno.EROFS)
    if info.f_bavail * info.f_frsize == 0:
        return _errno_text(errno.ENOSPC)
    return None


def free_bytes(where: Path) -> int | None:
    try:
        info = os.statvfs(where)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def _errno_text(number: int) -> str:
    return {
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large (a file size limit is in force)",
    }.get(number, os.strerror(number))
