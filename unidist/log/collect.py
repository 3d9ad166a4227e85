"""File the central store's records per host, track and day, for long-term keeping.

Layout under the target directory (files 0600, directories 0700)::

    <to>/<host>/<track>/<YYYY-MM-DD>.log       JSON lines, the day of each record (UTC)
    <to>/.collect-state.json                   the stream position per track

Exactly once into the directory: before a batch is appended, the sizes of the files it will
touch are saved in the state file as ``pending``; the lines are then appended and fsynced,
and the position advances with ``pending`` cleared (both state writes atomic: temp file →
fsync → rename → directory fsync). After a crash the pending files are cut back to their
saved sizes and the batch is read again. Host and track names from records are reduced to
``A-Za-z0-9._-:@`` before they become path components. One collector per directory (flock).
Records trimmed from a stream (``MAXLEN``/age cap) before they were collected are not
recoverable: run the collector more often than the cap turns over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from unidist.log._files import (
    atomic_write_json,
    ensure_dir,
    exclusive,
    fsync_dir,
    read_json,
    safe_component,
)
from unidist.log._store import RedisStore

STATE_NAME: Final = ".collect-state.json"
_FIRST_PER_ENTRY: Final = 50
"""Records per stream entry assumed for a track's first batch (about 16 KiB of records)."""
_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class CollectStats:
    """What one :func:`collect` call did."""

    records: int = 0
    files: int = 0
    """Distinct day files appended to."""


def _place(sid: str, line: bytes) -> tuple[str, str]:
    """(host, day) of one record; the stream id's time when the record does not say."""
    host: Any = None
    day = ""
    try:
        rec = json.loads(line)
        if isinstance(rec, dict):
            host = rec.get("host")
            stamp = str(rec.get("timestamp", ""))[:10]
            day = stamp if _DAY.fullmatch(stamp) else ""
    except ValueError:
        pass
    if not day:
        ms = int(sid.split("-", 1)[0])
        day = datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")
    return safe_component(host if host else "unknown"), day


class Collector:
    """Copies new stream entries into the directory; see the module docstring.

    Raises:
        unidist.UnidistError: the state file does not parse.
    """

    def __init__(self, store: RedisStore, to: Path, tracks: set[str] | None, batch: int) -> None:
        self.store = store
        self.to = to
        self.tracks = tracks
        self.batch = max(1, batch)
        self._per_entry: dict[str, int] = {}
        """Records per stream entry in the last batch of each track: sizes the next read."""
        self.state_path = to / STATE_NAME
        self.stats = CollectStats()
        self._touched: set[str] = set()
        saved = read_json(self.state_path) or {}
        self.cursors: dict[str, str] = dict(saved.get("cursors") or {})
        pending = saved.get("pending")
        if pending:
            self._restore(dict(pending))

    def _restore(self, pending: dict[str, int]) -> None:
        """Cut the files of an interrupted batch back to their sizes before it."""
        for rel, size in pending.items():
            path = self.to / rel
            with contextlib.suppress(FileNotFoundError):
                if int(size) == 0:
                    path.unlink()
                else:
                    os.truncate(path, int(size))
        self._save(None)

    def _save(self, pending: dict[str, int] | None) -> None:
        atomic_write_json(self.state_path, {"cursors": self.cursors, "pending": pending})

    def run_once(self) -> int:
        """Copy one batch per track; returns the number of records copied.

        Raises:
            unidist.BackendUnavailable: the store cannot be reached.
            OSError: the directory cannot be written.
        """
        copied = 0
        for track in self.store.tracks():
            if self.tracks is not None and track not in self.tracks:
                continue
            per_entry = self._per_entry.get(track, _FIRST_PER_ENTRY)
            entries = self.store.read(
                track, self.cursors.get(track, "-"), max(1, self.batch // per_entry)
            )
            if not entries:
                continue
            self._per_entry[track] = max(1, len(entries) // len({e[0] for e in entries}))
            groups: dict[str, list[bytes]] = {}
            safe_track = safe_component(track)
            for sid, _rid, line in entries:
                host, day = _place(sid, line)
                groups.setdefault(f"{host}/{safe_track}/{day}.log", []).append(line)
            sizes: dict[str, int] = {}
            for rel in groups:
                try:
                    sizes[rel] = (self.to / rel).stat().st_size
                except FileNotFoundError:
                    sizes[rel] = 0
            self._save(sizes)
            for rel, lines in groups.items():
                self._append(self.to / rel, b"\n".join(lines) + b"\n", created=sizes[rel] == 0)
                self._touched.add(rel)
            self.cursors[track] = entries[-1][0]
            self._save(None)
            copied += len(entries)
        self.stats.records += copied
        self.stats.files = len(self._touched)
        return copied

    @staticmethod
    def _append(path: Path, data: bytes, created: bool) -> None:
        if created:
            ensure_dir(path.parent)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)


def collect(
    url: str,
    to: str | Path,
    *,
    tracks: list[str] | None = None,
    follow: bool = False,
    batch: int = 5000,
    interval: float = 1.0,
    stop: threading.Event | None = None,
) -> CollectStats:
    """Copy the records of the store at ``url`` into ``to`` (see the module docstring).

    Args:
        url: ``redis://host:port/db?prefix=…``.
        to: the target directory (created 0700).
        tracks: only these tracks (default all).
        follow: keep collecting until ``stop`` is set (else until the streams are drained).
        batch: records per batch and track (about: whole stream entries are read).
        interval: seconds between polls that found nothing (``follow``).
        stop: an event that ends ``follow`` mode.

    Returns:
        Counts of records copied and files touched.

    Raises:
        unidist.InvalidURL: not a Redis URL.
        unidist.BackendUnavailable: the store cannot be reached.
        unidist.UnidistError: another collector uses ``to``, or its state does not parse.
        OSError: the directory cannot be written.
    """
    target = Path(to)
    ensure_dir(target)
    stop = stop or threading.Event()
    store = RedisStore(url)
    try:
        with exclusive(target / ".collect.lock", "collector"):
            collector = Collector(store, target, set(tracks) if tracks else None, batch)
            while not stop.is_set():
                copied = collector.run_once()
                if copied == 0 and (not follow or stop.wait(interval)):
                    break
            return collector.stats
    finally:
        store.close()
