"""Low-level file helpers of the file backend: private modes, no symlinks, durable renames.

Every path below the data directory is opened relative to an already-open directory
descriptor with ``O_NOFOLLOW``, so a symlink planted anywhere below the root is refused
instead of followed. Files are created 0600 and directories 0700 whatever the umask (the
mode is forced with ``fchmod`` after creation).

Injectable system calls. The journal and snapshot code reaches the disk only through the
module attributes :data:`os_open`, :data:`write`, :data:`pwrite`, :data:`pread`,
:data:`fsync`, :data:`fdatasync`, :data:`ftruncate`, :data:`rename`, :data:`unlink` and
:data:`mkdir` (bound to the :mod:`os` functions, so production pays one module-attribute
lookup per call, as ``os.write`` would). The reliability tests swap them with
:func:`injected` to record every write/fsync/rename of an operation sequence (simulated power
loss) or to fail the Nth one with ``ENOSPC``/``EIO``/``EACCES``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

# The system calls of the data path (see the module docs); replaced only by `injected`.
os_open: Callable[..., int] = os.open
write: Callable[[int, Any], int] = os.write
pwrite: Callable[[int, Any, int], int] = os.pwrite
pread: Callable[[int, int, int], bytes] = os.pread
fsync: Callable[[int], None] = os.fsync
fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
ftruncate: Callable[[int, int], None] = os.ftruncate
rename: Callable[..., None] = os.rename
unlink: Callable[..., None] = os.unlink
mkdir: Callable[..., None] = os.mkdir

SYSCALLS: Final = (
    "os_open",
    "write",
    "pwrite",
    "pread",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "unlink",
    "mkdir",
)


@contextlib.contextmanager
def injected(layer: object) -> Iterator[None]:
    """Route the data path's system calls through ``layer`` while the block runs (tests).

    ``layer`` provides any of the names in :data:`SYSCALLS` as attributes with the signature
    of the :mod:`os` function; the others stay the real ones. Not thread-aware: install it
    before the threads that should see it start and remove it after they finish.
    """
    g = globals()
    saved = {name: g[name] for name in SYSCALLS}
    try:
        for name in SYSCALLS:
            fn = getattr(layer, name, None)
            if fn is not None:
                g[name] = fn
        yield
    finally:
        g.update(saved)


FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
TMP_MARK: Final = ".tmp."

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkRefused(OSError):
    """A path below the data directory is a symlink (or not what it should be)."""


def _refuse(exc: OSError, name: str) -> OSError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return SymlinkRefused(exc.errno, f"{name} is a symlink or not a regular entry; refusing it")
    return exc


def open_dir(name: str, dir_fd: int | None, *, create: bool) -> int | None:
    """Open directory ``name`` (relative to ``dir_fd``) without following a symlink.

    Args:
        name: one path component (or an absolute path when ``dir_fd`` is None).
        dir_fd: the parent directory descriptor, or None.
        create: create it (mode 0700, forced) when missing.

    Returns:
        The descriptor, or None when it is missing and ``create`` is false.

    Raises:
        SymlinkRefused: ``name`` is a symlink or not a directory.
        OSError: any other failure.
    """
    created = False
    if create:
        try:
            mkdir(name, DIR_MODE, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            pass
    try:
        fd = os_open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        raise _refuse(exc, name) from exc
    if created:
        try:
            os.fchmod(fd, DIR_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd


def open_file(name: str, dir_fd: int, flags: int, *, create: bool = False) -> int:
    """Open regular file ``name`` in ``dir_fd`` with ``O_NOFOLLOW`` (created 0600 if asked).

    Raises:
        SymlinkRefused: ``name`` is a symlink.
        FileNotFoundError: it is missing and ``create`` is false.
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        try:
            fd = os_open(name, flags | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _refuse(exc, name) from exc
        else:
            try:
                os.fchmod(fd, FILE_MODE)
            except OSError:
                os.close(fd)
                raise
            return fd
    try:
        return os_open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refuse(exc, name) from exc


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (looping over short writes).

    Raises:
        OSError: the write failed; part of ``data`` may have been written.
    """
    if not data:
        return
    n = write(fd, data)  # one call in practice: no memoryview unless the write was short
    if n == len(data):
        return
    view = memoryview(data)
    while True:
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0 bytes")
        view = view[n:]
        if not view:
            return
        n = write(fd, view)


def fsync_dir(dir_fd: int) -> None:
    """fsync a directory so that created/renamed/removed entries are durable."""
    fsync(dir_fd)


def tmp_name(final: str) -> str:
    """A fresh temporary name next to ``final`` (recognised and removed as stale at open)."""
    return f"{final}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}"


def atomic_write(dir_fd: int, final: str, data: bytes | Sequence[bytes], *, durable: bool) -> None:
    """Replace ``final`` in ``dir_fd`` with ``data`` (bytes, or a sequence of buffers written
    one after another) atomically.

    tmp (``O_CREAT|O_EXCL|O_NOFOLLOW``, 0600) → write → fsync → rename → fsync directory.
    A reader sees the old file or the whole new one, never a mix. With ``durable`` false the
    two fsyncs are skipped (the rename is still atomic, but a power loss may leave garbage).

    Raises:
        OSError: the replacement did not happen (the temporary file is removed).
    """
    tmp = tmp_name(final)
    fd = os_open(tmp, _NEW_FLAGS, FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            for part in [data] if isinstance(data, bytes) else data:
                write_all(fd, part)
            if durable:
                fsync(fd)
        finally:
            os.close(fd)
        rename(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            unlink(tmp, dir_fd=dir_fd)
        raise
    if durable:
        fsync_dir(dir_fd)


def close_quietly(fd: int) -> None:
    """Close ``fd`` ignoring errors (used on teardown paths only)."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
