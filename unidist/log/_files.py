"""File helpers shared by the shipper, the collector and ``tail``.

* :func:`fingerprint` names a file by its content (its first line), so a file keeps its
  identity through ``rename`` and through the copy ``copytruncate`` makes, and a truncated or
  recreated file (inode reuse) gets a new one.
* :func:`atomic_write_json` replaces a small state file so that a crash at any instant leaves
  either the old or the new content: temp file (``O_EXCL|O_NOFOLLOW``, 0600) → write → fsync
  → rename → fsync the directory.
* :func:`exclusive` holds an ``flock`` so that one shipper (collector) owns one state file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

from unidist.errors import UnidistError

FINGERPRINT_BYTES: Final = 1024
"""At most this many leading bytes (up to the first newline) identify a file."""
_TRACK_FILE: Final = re.compile(
    r"(?P<track>[A-Za-z0-9_\-:@][A-Za-z0-9._\-:@]*?)\.log(?:\.(?P<n>\d+))?"
)


class TrackFile(NamedTuple):
    """A track file found in a log directory; ``rank`` 0 is current, n is ``.log.n``."""

    track: str
    path: Path
    rank: int


def track_files(directory: Path, tracks: set[str] | None = None) -> list[TrackFile]:
    """Current and rotated track files in ``directory`` (oldest first per track).

    Hidden files (lock and state files) and compressed rotations are ignored.
    """
    found: list[TrackFile] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        match = _TRACK_FILE.fullmatch(name)
        if match is None:
            continue
        track = match.group("track")
        if tracks is not None and track not in tracks:
            continue
        n = match.group("n")
        found.append(TrackFile(track, directory / name, int(n) if n else 0))
    found.sort(key=lambda f: (f.track, -f.rank))
    return found


def fingerprint(fd: int) -> str | None:
    """16 hex digits naming the file by its first line (≤ 1024 bytes); None if not yet known.

    A file whose first line is still incomplete (and shorter than 1024 bytes) has no
    fingerprint yet: it is not shipped until the line is whole.
    """
    try:
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
    except OSError:
        return None
    end = head.find(b"\n")
    if end >= 0:
        head = head[: end + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head).hexdigest()[:16]


def atomic_write_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically and durably.

    Raises:
        OSError: the directory is not writable or the disk is full (the old file is intact).
    """
    atomic_write_bytes(path, json.dumps(data, separators=(",", ":"), sort_keys=True).encode())


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` durably: a new temp file beside it (``O_EXCL`` and
    ``O_NOFOLLOW``, mode 0600, so a planted file or symlink is never written through), fsync,
    rename, fsync of the directory. A crash leaves the old file or the new one, never a mix.

    Raises:
        OSError: the directory is not writable or the disk is full (the old file is intact).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (whatever the umask).

    Raises:
        OSError: a component cannot be created.
    """
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that a rename or a new entry in it survives a power loss."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it does not exist.

    Raises:
        unidist.UnidistError: the file exists but does not parse (names the file).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UnidistError(f"state file {path} does not parse: {exc}") from exc


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600) for the block.

    Raises:
        unidist.UnidistError: another process holds it (``what`` says who that would be).
    """
    ensure_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UnidistError(f"another {what} is running (it holds {lock_path})") from None
        yield
    finally:
        os.close(fd)


_SAFE: Final = re.compile(r"[^A-Za-z0-9._\-:@]")


def safe_component(text: object, fallback: str = "unknown") -> str:
    """A path component made from untrusted text: only ``A-Za-z0-9._-:@``, never hidden/empty."""
    cleaned = _SAFE.sub("_", str(text))[:200]
    if not cleaned or cleaned.startswith("."):
        cleaned = "_" + cleaned if cleaned else fallback
    return cleaned
