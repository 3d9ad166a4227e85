"""Ship track files to the central store (Redis streams), at least once, deduplicated there.

The shipper reads ``<dir>/<track>.log`` and its rotated files ``<track>.log.N``, sends complete
lines in batches to :class:`~unidist.log._store.RedisStore`, and after each acknowledged batch
saves its read position in a small state file (by default ``<dir>/.ship-state-<hash>.json``,
one per store URL), written atomically (temp file ``O_EXCL`` 0600 → fsync → rename →
directory fsync). Per file it keeps ``dev``/``inode``, a content fingerprint (of the first
line) and the offset shipped up to.

Rotation:

* rename (ours, or logrotate's ``create``): the renamed file keeps inode and fingerprint and
  is read to its end; the new file is a new fingerprint and starts at offset 0;
* ``copytruncate``: the copy has a new inode but the same fingerprint, so it continues from
  the saved offset; the truncated original gets a new fingerprint when written again.
  Records written between logrotate's copy and its truncation are lost: that window is
  logrotate's (see logrotate(8)), not the shipper's;
* truncation, deletion, inode reuse: a changed fingerprint means a new file from offset 0;
  a file deleted while open is read to its end through the open descriptor.

Guarantees: at-least-once from file to store. Every record's id is
``<host>/<fingerprint>/<offset>`` and the store drops ids it already holds (see
:mod:`unidist.log._store`), so a batch re-sent after a crash (``kill -9`` between the store's
acknowledgement and the state file rename) is not stored twice. Records are lost only when a
file is rotated past ``keep`` or deleted while the shipper is not running. One shipper per
state file (an ``flock`` on ``<state>.lock``); temp files a killed shipper left beside the
state file are removed at start. If the store is down, the shipper retries with
backoff (0.1 s doubling to 5 s); ``follow=False`` gives up after ``retry_for`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

from unidist.errors import BackendUnavailable
from unidist.log._config import build_config
from unidist.log._files import (
    atomic_write_json,
    exclusive,
    fingerprint,
    read_json,
    track_files,
)
from unidist.log._store import DEFAULT_MAXLEN, RedisStore

DEFAULT_BATCH: Final = 5000
STATE_NAME: Final = ".ship-state-{}.json"
"""Default state file in the log directory, one per store (hash of the redacted URL)."""
_CHUNK: Final = 4 << 20
"""Byte cap of one batch (a single longer line is still sent whole)."""
_READ_MIN: Final = 64 << 10
_GONE_RANK: Final = 1 << 30


@dataclass
class ShipStats:
    """What one :func:`ship` call did."""

    records: int = 0
    """Records read and sent (including those the store already had)."""
    stored: int = 0
    """Records the store added (the rest were duplicates it dropped)."""
    batches: int = 0
    files: int = 0
    """Distinct files (fingerprints) seen."""


class _Source(NamedTuple):
    key: tuple[int, int]
    fd: int
    fp: str
    size: int
    track: str
    rank: int
    path: str


class Shipper:
    """Ships one log directory; call :meth:`run_once` or :meth:`run` (see module docstring).

    Args:
        store: the central store.
        directory: the log directory.
        state_path: the state file.
        host: the host name in record ids.
        tracks: ship only these tracks (None: all).
        batch: records per batch (the most a crash can make the shipper re-send); a batch
            also stops at about 4 MiB, except for a single longer record.
        retry_for: seconds to retry an unavailable store before raising (None: forever).
        stop: set it to make :meth:`run` (and retries) return.

    Raises:
        unidist.UnidistError: the state file does not parse.
    """

    def __init__(
        self,
        store: RedisStore,
        directory: Path,
        state_path: Path,
        host: str,
        tracks: set[str] | None = None,
        batch: int = DEFAULT_BATCH,
        retry_for: float | None = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.state_path = state_path
        self.host = host
        self.tracks = tracks
        self.batch = max(1, batch)
        self.retry_for = retry_for
        self.stop = stop or threading.Event()
        self.stats = ShipStats()
        self.entries: dict[str, dict[str, Any]] = {}
        self._fds: dict[tuple[int, int], int] = {}
        self._key_track: dict[tuple[int, int], tuple[str, str]] = {}
        self._seen_fps: set[str] = set()
        self._present: dict[tuple[int, int], tuple[str, str, int]] = {}
        self._line_bytes = 256
        """Bytes per line of the last batch: sizes the next read."""
        saved = read_json(state_path)
        if isinstance(saved, dict) and isinstance(saved.get("files"), dict):
            self.entries = {str(k): dict(v) for k, v in saved["files"].items()}

    def close(self) -> None:
        """Close every open file."""
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    # ------------------------------------------------------------------ main loops
    def run(self, follow: bool, interval: float = 0.5) -> ShipStats:
        """Ship what is there (``follow=False``), or keep shipping until :attr:`stop` is set."""
        while True:
            sent = self.run_once()
            if not follow or self.stop.is_set():
                return self.stats
            if sent == 0 and self.stop.wait(interval):
                return self.stats

    def run_once(self) -> int:
        """One pass over the directory; returns the number of records sent.

        Raises:
            unidist.BackendUnavailable: the store stayed unreachable for ``retry_for`` s.
            OSError: the state file cannot be written.
        """
        sources = self._scan()
        sent = 0
        for src in sources:
            if self.stop.is_set():
                break
            sent += self._ship_source(src)
        self._cleanup(sources)
        return sent

    # ------------------------------------------------------------------ scanning
    def _scan(self) -> list[_Source]:
        present: dict[tuple[int, int], tuple[str, str, int]] = {}
        self._present = present
        for tf in track_files(self.directory, self.tracks):
            try:
                st = os.stat(tf.path)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            present[key] = (tf.track, str(tf.path), tf.rank)
            if key not in self._fds:
                try:
                    fd = os.open(tf.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) != key:  # replaced between stat and open
                    os.close(fd)
                    continue
                self._fds[key] = fd
            self._key_track[key] = (tf.track, str(tf.path))
        candidates: dict[str, list[_Source]] = {}
        for key, fd in list(self._fds.items()):
            fp = fingerprint(fd)
            if fp is None:
                if key not in present:
                    self._forget(key)
                continue
            track, path = self._key_track[key]
            rank = present[key][2] if key in present else _GONE_RANK
            src = _Source(key, fd, fp, os.fstat(fd).st_size, track, rank, path)
            candidates.setdefault(fp, []).append(src)
        chosen: list[_Source] = []
        for fp, group in candidates.items():
            self._seen_fps.add(fp)
            entry = self.entries.get(fp)
            preferred = [
                s
                for s in group
                if entry is not None
                and [s.key[0], s.key[1]] == [entry.get("dev"), entry.get("ino")]
                and s.size >= int(entry.get("offset", 0))
            ]
            chosen.append(preferred[0] if preferred else max(group, key=lambda s: s.size))
        chosen.sort(key=lambda s: (s.track, -s.rank))
        self.stats.files = len(self._seen_fps)
        return chosen

    def _forget(self, key: tuple[int, int]) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._key_track.pop(key, None)

    def _cleanup(self, sources: list[_Source]) -> None:
        """Forget files that are gone: entries of vanished fingerprints, and descriptors of
        deleted or renamed-away files once they are shipped to their end."""
        live = {s.fp for s in sources}
        dropped = [fp for fp in self.entries if fp not in live]
        for fp in dropped:
            del self.entries[fp]
        chosen = {s.key: s for s in sources}
        for key in list(self._fds):
            if key in self._present:
                continue
            src = chosen.get(key)
            if src is None or int(self.entries.get(src.fp, {}).get("offset", 0)) >= src.size:
                self._forget(key)
        if dropped:
            self._save()

    # ------------------------------------------------------------------ shipping
    def _ship_source(self, src: _Source) -> int:
        entry = self.entries.get(src.fp)
        if entry is None:
            entry = {"offset": 0}
            self.entries[src.fp] = entry
        entry.update(track=src.track, dev=src.key[0], ino=src.key[1], path=src.path)
        sent = 0
        while not self.stop.is_set():
            offset = int(entry["offset"])
            chunk, count = read_chunk(src.fd, offset, self.batch, self._read_hint)
            if not chunk or not still_same(src.fd, src.fp, offset):
                # Truncated (and maybe rewritten) since the scan: the chunk may be a piece
                # of the new content. The next scan sees the new fingerprint.
                break
            self._line_bytes = max(1, len(chunk) // count)
            self.stats.stored += self._send(src.track, src.fp, offset, chunk, count)
            self.stats.records += count
            self.stats.batches += 1
            sent += count
            entry["offset"] = offset + len(chunk)
            self._save()
        return sent

    @property
    def _read_hint(self) -> int:
        return self.batch * self._line_bytes * 17 // 16 + 4096

    def _send(self, track: str, fp: str, offset: int, chunk: bytes, lines: int) -> int:
        delay = 0.1
        deadline = None if self.retry_for is None else time.monotonic() + self.retry_for
        warned = False
        while True:
            try:
                added = self.store.append(track, self.host, fp, offset, chunk, lines)
                if warned:
                    _warn(f"log store {self.store.url} reachable again")
                return added
            except BackendUnavailable as exc:
                if self.stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    raise
                if not warned:
                    warned = True
                    _warn(f"{exc}; retrying")
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _save(self) -> None:
        atomic_write_json(self.state_path, {"version": 1, "host": self.host, "files": self.entries})


def still_same(fd: int, fp: str, offset: int) -> bool:
    """True if the file behind ``fd`` still has fingerprint ``fp`` and a line ends just
    before ``offset``: checked after reading, so that a read that raced a truncation
    (``truncate``, ``copytruncate``) and then new writes is never shipped as records."""
    if fingerprint(fd) != fp:
        return False
    try:
        return offset == 0 or os.pread(fd, 1, offset - 1) == b"\n"
    except OSError:
        return False


def read_chunk(
    fd: int, offset: int, max_lines: int, size_hint: int = _READ_MIN
) -> tuple[bytes, int]:
    """Complete lines from ``offset`` on: at most ``max_lines`` and about 4 MiB (more only for
    a single longer line), ending at a newline; ``(b"", 0)`` when no complete line is there.
    ``size_hint`` is the first read's size (the bytes ``max_lines`` lines are expected to
    take); reads grow until the batch is full, the file ends or the cap is reached.
    Returns the chunk and its number of lines."""
    want = min(max(size_hint, _READ_MIN), _CHUNK)
    buf = os.pread(fd, want, offset)
    count = _newlines(buf)
    while count < max_lines and len(buf) == want and (count == 0 or want < _CHUNK):
        # The file goes on and the batch is not full: read on (beyond the cap only while
        # not even one line is complete).
        extra = want if count == 0 else min(want, _CHUNK - want)
        more = os.pread(fd, extra, offset + len(buf))
        buf += more
        count += _newlines(more)
        want += extra
    if count == 0:
        return b"", 0
    if len(buf) > _CHUNK and count > 1:  # read on for one long line: keep the cap otherwise
        cut = buf.rfind(b"\n", 0, _CHUNK)
        buf = buf[: (cut if cut >= 0 else buf.find(b"\n")) + 1]
        count = buf.count(b"\n")
    if count <= max_lines:
        return buf[: buf.rfind(b"\n") + 1], count
    return buf[: _nth_newline(buf, max_lines, count) + 1], max_lines


def _newlines(data: bytes) -> int:
    """The number of newlines in ``data``: ``bytes.count`` compares byte by byte, while
    ``replace`` jumps between newlines with ``memchr``, several times faster for log lines."""
    return len(data) - len(data.replace(b"\n", b""))


def _nth_newline(buf: bytes, n: int, total: int) -> int:
    """Index of the ``n``-th newline of ``buf`` (which holds ``total`` > ``n``): a guess
    from the average line length, corrected by counting only the part after the guess."""
    end = len(buf) * n // total
    seen = total - buf.count(b"\n", end)  # newlines in buf[:end]
    while seen >= n:
        end = buf.rfind(b"\n", 0, end)
        seen -= 1
    while True:
        end = buf.find(b"\n", end)
        seen += 1
        if seen == n:
            return end
        end += 1


def remove_stale_temps(state_path: Path) -> int:
    """Remove temp files a crashed shipper left beside ``state_path`` (a kill between
    creating the temp file and renaming it over the state file); call it only while holding
    the state file's lock. Returns how many were removed."""
    removed = 0
    for tmp in state_path.parent.glob(f".{state_path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def _warn(message: str) -> None:
    from unidist.log._core import warn

    warn(message)


def ship(
    url: str,
    *,
    dir: str | Path | None = None,
    state: str | Path | None = None,
    host: str | None = None,
    tracks: list[str] | None = None,
    follow: bool = False,
    batch: int = DEFAULT_BATCH,
    interval: float = 0.5,
    retry_for: float | None = 30.0,
    maxlen: int = DEFAULT_MAXLEN,
    max_age: float | None = None,
    stop: threading.Event | None = None,
) -> ShipStats:
    """Ship the track files of ``dir`` to the Redis store at ``url``.

    Args:
        url: ``redis://host:port/db?prefix=…`` (keys live under the prefix).
        dir: the log directory (default: the configured ``unidist.log`` directory).
        state: the state file (default ``<dir>/.ship-state-<hash of url>.json``).
        host: the host name in record ids (default: the configured host).
        tracks: only these tracks (default all).
        follow: keep shipping new records until ``stop`` is set (else one pass).
        batch: records per batch (also capped at about 4 MiB, except for a single longer
            record). The store runs one script per batch, so a larger batch means fewer round
            trips and state-file writes but a longer pause for other clients of the Redis
            server (about 7 ms for 5,000 records of 300 bytes).
        interval: seconds between passes that found nothing new.
        retry_for: seconds to retry an unreachable store (None: forever; ``follow`` mode
            passes None).
        maxlen: approximate cap of each track's stream.
        max_age: also trim stream entries older than this many seconds.
        stop: an event that ends ``follow`` mode.

    Returns:
        Counts of records sent and stored.

    Durability: the state file is replaced atomically after each batch the store has
    acknowledged; a crash re-sends at most one batch, which the store deduplicates.

    Raises:
        unidist.InvalidURL: not a Redis URL.
        unidist.BackendUnavailable: the store stayed unreachable for ``retry_for`` seconds.
        unidist.UnidistError: another shipper uses the same state file, or it does not parse.
        OSError: the state file cannot be written.
    """
    cfg = build_config()
    directory = Path(dir) if dir is not None else cfg.dir
    store = RedisStore(url, maxlen=maxlen, max_age=max_age)
    if state is not None:
        state_path = Path(state)
    else:
        tag = hashlib.sha256(f"{store.url} {store.prefix}".encode()).hexdigest()[:10]
        state_path = directory / STATE_NAME.format(tag)
    try:
        with exclusive(state_path.with_name(state_path.name + ".lock"), "shipper"):
            remove_stale_temps(state_path)
            shipper = Shipper(
                store,
                directory,
                state_path,
                host or cfg.host,
                set(tracks) if tracks else None,
                batch,
                None if follow else retry_for,
                stop,
            )
            try:
                return shipper.run(follow, interval)
            finally:
                shipper.close()
    finally:
        store.close()
