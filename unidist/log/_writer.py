"""Append records to ``<dir>/<track>.log`` from many processes, rotating by size and/or time.

Design (why not ``concurrent-log-handler``): that handler takes a lock file around *every*
record (two extra system calls and cross-process contention per line), sits behind the stdlib
``Handler`` machinery, and has had fork-shared lock descriptors break its exclusion (its
issue #8). Appending needs no lock at all on a local file system, so this writer locks only
for the rare rotation step:

* **Writes.** The file is opened ``O_WRONLY|O_APPEND|O_CREAT`` (0600) and each record is one
  ``write()`` of one complete line. With ``O_APPEND`` the kernel moves to the end and writes
  under the inode lock, so lines from different processes never interleave or overwrite
  each other (local file systems; not NFS, where ``O_APPEND`` is emulated by the client).
* **Size rotation.** Before each write the writer asks the kernel for the current size
  (``lseek(SEEK_END)``, no I/O). Only when it is at or past ``max_bytes`` does it take an
  exclusive ``flock`` on ``.<track>.log.lock`` and **re-check under the lock**: if the path
  now names another file, someone else rotated and this process just reopens; if the file
  is still too big, it shifts ``<track>.log.N`` → ``.N+1`` (dropping those past ``keep``),
  renames ``<track>.log`` → ``.1`` and opens a fresh file. A rotated file is always at or
  past ``max_bytes``, so a process still holding it notices on its very next write and
  reopens; it never writes more than the one record it had already sized into the old
  file, which is kept (a record is lost only if its writer stalls between the size check and
  the write for longer than ``keep`` whole rotations).
* **Time rotation.** Each process re-checks (under the lock) once per period boundary
  (UTC-aligned: ``daily`` rotates at 00:00 UTC). The lock file records which period the
  current file belongs to, so the period is decided once, by whichever process is first.
* **External rotation** (logrotate rename, deletion): the path's identity is compared with
  the open file at most once a second and the file is reopened when they differ.

Durability: with ``fsync=True`` every record is ``fdatasync``-ed before the call returns and
the directory is fsynced after a rotation; otherwise records reach the page cache at once
(they survive a crash of the process, not of the machine).

Errors never reach the caller: an ``OSError`` (full disk, unwritable directory) drops the
record and prints one warning on stderr; the next successful write re-arms the warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

from unidist.log._files import ensure_dir

_STAT_EVERY: Final = 1.0
"""Seconds between checks that the path still names the open file (external rotation)."""
_FILE_MODE: Final = 0o600
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def rotated_path(path: Path, n: int) -> Path:
    """``<track>.log.<n>``: the n-th most recent rotated file."""
    return path.with_name(f"{path.name}.{n}")


def _period(now: float, interval: float) -> int:
    return math.floor(now / interval)


def _first_record_time(fd: int) -> float | None:
    """Unix time of the first record of the open file, or None when empty or unreadable."""
    try:
        head = os.pread(fd, 4096, 0)
    except OSError:
        return None
    line, _, _ = head.partition(b"\n")
    try:
        stamp = json.loads(line)["timestamp"]
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return None


class TrackWriter:
    """One track's file in one process; thread-safe; see the module docstring for the design.

    Args:
        path: ``<dir>/<track>.log``; the directory is created (0700) when missing.
        max_bytes: rotate when the file reaches this size; None for no size rotation.
        interval: rotate at each multiple of this many seconds (UTC); None for no time rotation.
        keep: rotated files kept (``.1`` … ``.keep``); older ones are deleted.
        fsync: ``fdatasync`` every record, fsync the directory after rotating.
        warn: called with a one-line message when writing starts failing.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int | None,
        interval: float | None,
        keep: int,
        fsync: bool,
        warn: Callable[[str], None],
    ) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self.max_bytes = max_bytes
        self.interval = interval
        self.keep = max(1, keep)
        self.fsync = fsync
        self._warn = warn
        self._lock = threading.Lock()
        self._fd = -1
        self._ident: tuple[int, int] | None = None
        self._next_stat = 0.0
        self._period: int | None = None
        self._failing = False

    def after_fork(self) -> None:
        """In a forked child: a fresh thread lock (the parent's may have been held)."""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes, when: float | None = None) -> bool:
        """Append one complete record (one line); True if it was written.

        ``when`` is the record's time (default: now): time rotation goes by it, so a record
        made just before a period boundary but written just after it stays with its period's
        file whenever that file is still the current one.

        Never raises ``OSError``: a failure drops the record and warns once on stderr.
        """
        with self._lock:
            try:
                fd = self._fd if self._fd >= 0 else self._open()
                if self._must_check(fd, when):
                    fd = self._rotate_locked(when)
                elif time.monotonic() >= self._next_stat:
                    fd = self._check_path()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fdatasync(fd)
            except OSError as exc:
                self._failed(exc)
                return False
            if self._failing:
                self._failing = False
            return True

    def _must_check(self, fd: int, when: float | None = None) -> bool:
        """The file reached ``max_bytes`` or the record belongs to a later period than the
        current file's."""
        if self.max_bytes is not None and os.lseek(fd, 0, os.SEEK_END) >= self.max_bytes:
            return True
        if self.interval is None:
            return False
        period = _period(time.time() if when is None else when, self.interval)
        return self._period is None or period > self._period

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        with self._lock:
            self._close()

    # ------------------------------------------------------------------ internals
    def _failed(self, exc: OSError) -> None:
        self._close()
        if not self._failing:
            self._failing = True
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno in {errno.EACCES, errno.EPERM, errno.EROFS}:
                hint = "check the directory's owner and permissions or set UNIDIST_LOG_DIR"
            elif exc.errno in {errno.ENOSPC, errno.EDQUOT}:
                hint = "free some space"
            else:
                hint = "records are dropped until writing works again"
            self._warn(f"cannot write {self.path}: {reason}; {hint}")

    def _close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self._ident = None

    def _open(self) -> int:
        self._close()
        try:
            fd = os.open(self.path, _OPEN_FLAGS, _FILE_MODE)
        except FileNotFoundError:
            ensure_dir(self.path.parent)
            fd = os.open(self.path, _OPEN_FLAGS, _FILE_MODE)
        st = os.fstat(fd)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._next_stat = time.monotonic() + _STAT_EVERY
        return fd

    def _check_path(self) -> int:
        """Reopen when the path no longer names the open file (rotated or deleted outside)."""
        self._next_stat = time.monotonic() + _STAT_EVERY
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._open()
        if (st.st_dev, st.st_ino) != self._ident:
            return self._open()
        return self._fd

    def _rotate_locked(self, when: float | None = None) -> int:
        """Under the track's flock: catch up with another process's rotation, or rotate."""
        lock_fd = os.open(
            self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            fd = self._check_path()
            now = time.time() if when is None else when
            current = _period(now, self.interval) if self.interval is not None else None
            size = os.fstat(fd).st_size
            too_big = self.max_bytes is not None and size >= self.max_bytes
            file_period = self._file_period(lock_fd, fd) if current is not None and size else None
            # Rotate only forward: a record older than the current file (written late, or by
            # another process that rotated first) goes into the current file.
            too_old = current is not None and file_period is not None and file_period < current
            if file_period is not None and current is not None and file_period > current:
                current = file_period
            if too_big or too_old:
                self._shift()
                fd = self._open()
                if self.fsync:
                    self._fsync_dir()
            if current is not None:
                self._record_period(lock_fd, current)
            self._period = current
            return fd
        finally:
            os.close(lock_fd)  # releases the flock

    def _file_period(self, lock_fd: int, fd: int) -> int | None:
        """The period the open file belongs to (lock file record, else its first record)."""
        assert self.interval is not None
        try:
            raw = os.pread(lock_fd, 128, 0).decode("ascii").split()
            if len(raw) == 3 and (int(raw[0]), int(raw[1])) == self._ident:
                return int(raw[2])
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        first = _first_record_time(fd)
        return None if first is None else _period(first, self.interval)

    def _record_period(self, lock_fd: int, period: int) -> None:
        if self._ident is None:
            return
        text = f"{self._ident[0]} {self._ident[1]} {period}\n".encode("ascii")
        with contextlib.suppress(OSError):
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, text, 0)

    def _shift(self) -> None:
        """``.N`` → ``.N+1`` for the existing N < keep; files from ``.keep`` on are deleted."""
        top = 0  # rotated files are numbered without gaps: find the last one
        while os.path.lexists(rotated_path(self.path, top + 1)):
            top += 1
        for n in range(top, self.keep - 1, -1):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rotated_path(self.path, n))
        for n in range(min(top, self.keep - 1), 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(rotated_path(self.path, n), rotated_path(self.path, n + 1))
        os.rename(self.path, rotated_path(self.path, 1))

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
