"""Read records back: from local track files or from the central store, filtered.

Used by ``unidist log tail``. Records are matched by track, host, minimum level, time
(``since``) and a regular expression over the raw JSON line; the last ``lines`` matches are
shown oldest first, then (``follow``) new ones as they arrive. Local following survives
rotation: the old file is read to its end before the new one is opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from unidist.log._files import track_files
from unidist.log._store import RedisStore

Emit = Callable[[dict[str, Any], bytes], None]
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BLOCK: Final = 64 * 1024
_POLL: Final = 0.25
#: listing passes to find the rotated-away file again while rotations keep moving it.
_CATCH_UP_PASSES: Final = 200


def parse_since(text: str) -> float:
    """Unix time from ``10m``/``2h``/``1d`` ago, or an ISO-8601 time (local if no zone).

    Raises:
        ValueError: neither form.
    """
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        return (
            datetime.now(timezone.utc).timestamp() - float(match.group(1)) * _UNIT[match.group(2)]
        )
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()
    return stamp.timestamp()


def level_number(name: object) -> int:
    """``"warning"`` → 30; unknown names → 0."""
    number = logging.getLevelName(str(name).upper())
    return number if isinstance(number, int) else 0


def record_time(rec: dict[str, Any]) -> float:
    """The record's Unix time (0 when it has none)."""
    try:
        return datetime.fromisoformat(str(rec["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return 0.0


@dataclass
class Filter:
    """Which records to show; None means any."""

    tracks: set[str] | None = None
    hosts: set[str] | None = None
    level: int | None = None
    since: float | None = None
    grep: re.Pattern[bytes] | None = None

    def match(self, raw: bytes) -> dict[str, Any] | None:
        """The parsed record if ``raw`` passes, else None (unparseable lines never pass)."""
        if self.grep is not None and self.grep.search(raw) is None:
            return None
        try:
            rec = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        if self.tracks is not None and rec.get("track") not in self.tracks:
            return None
        if self.hosts is not None and rec.get("host") not in self.hosts:
            return None
        if self.level is not None and level_number(rec.get("level")) < self.level:
            return None
        if self.since is not None and record_time(rec) < self.since:
            return None
        return rec


_HIDE: Final = frozenset(
    {"timestamp", "level", "event", "track", "host", "pid", "thread", "script", "file", "line",
     "func", "exception", "traceback"}
)  # fmt: skip


def format_human(rec: dict[str, Any]) -> str:
    """``2024-05-01 12:00:00.123 host track level  event k=v … (file.py:12)``."""
    stamp = str(rec.get("timestamp", "")).replace("T", " ").rstrip("Z")[:23]
    extras = " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in rec.items()
        if k not in _HIDE
    )
    where = f"({os.path.basename(str(rec.get('file', '')))}:{rec.get('line', '')})"
    text = (
        f"{stamp} {rec.get('host', '-')} {rec.get('track', '-')} "
        f"{rec.get('level', '-')!s:<8} {rec.get('event', '')}"
    )
    if extras:
        text += f" {extras}"
    text += f" {where}"
    if rec.get("traceback"):
        text += "\n" + str(rec["traceback"]).rstrip("\n")
    return text


# ---------------------------------------------------------------------------- local files
def _reverse_lines(path: Path) -> Iterator[bytes]:
    """The complete lines of ``path``, last first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size
        rest = b""
        while end > 0:
            start = max(0, end - _BLOCK)
            block = os.pread(fd, end - start, start) + rest
            end = start
            parts = block.split(b"\n")
            rest = parts[0] if start > 0 else b""
            body = parts[1:] if start > 0 else parts
            for line in reversed(body):
                if line:
                    yield line
    finally:
        os.close(fd)


def tail_local(
    directory: Path,
    flt: Filter,
    lines: int,
    emit: Emit,
    follow: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """Show the last ``lines`` matching records of ``directory``'s tracks, then follow."""
    found: list[tuple[float, dict[str, Any], bytes]] = []
    by_track: dict[str, list[Path]] = {}
    for tf in track_files(directory, flt.tracks):
        by_track.setdefault(tf.track, []).append(tf.path)
    positions: dict[str, tuple[int, int, int]] = {}  # track -> (dev, ino, offset)
    for track, paths in by_track.items():
        current = directory / f"{track}.log"
        try:
            st = os.stat(current)
            positions[track] = (st.st_dev, st.st_ino, st.st_size)
        except FileNotFoundError:
            pass
        taken = 0
        for path in sorted(paths, key=_rank):
            for raw in _reverse_lines(path):
                rec = flt.match(raw)
                if rec is not None:
                    found.append((record_time(rec), rec, raw))
                    taken += 1
                if taken >= lines:
                    break
            if taken >= lines:
                break
    found.sort(key=lambda item: item[0])
    for _, rec, raw in found[-lines:] if lines else []:
        emit(rec, raw)
    if follow:
        _follow_local(directory, flt, emit, positions, stop or threading.Event())


def _rank(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _follow_local(
    directory: Path,
    flt: Filter,
    emit: Emit,
    positions: dict[str, tuple[int, int, int]],
    stop: threading.Event,
) -> None:
    open_fds: dict[str, tuple[int, int, int, int]] = {}  # track -> (fd, dev, ino, offset)
    pending: dict[str, bytes] = {}
    try:
        while not stop.is_set():
            for tf in track_files(directory, flt.tracks):
                if tf.rank != 0:
                    continue
                _poll_track(tf.track, tf.path, open_fds, positions, pending, flt, emit)
            stop.wait(_POLL)
    finally:
        for fd, *_ in open_fds.values():
            os.close(fd)


def _poll_track(
    track: str,
    path: Path,
    open_fds: dict[str, tuple[int, int, int, int]],
    positions: dict[str, tuple[int, int, int]],
    pending: dict[str, bytes],
    flt: Filter,
    emit: Emit,
) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    held = open_fds.get(track)
    if held is not None and (held[1], held[2]) != (st.st_dev, st.st_ino):
        _read_new(track, held, open_fds, pending, flt, emit)  # finish the rotated file
        old = open_fds.pop(track)
        pending.pop(track, None)
        try:
            held = _catch_up(path, track, (old[1], old[2]), old[0], flt, emit)
        except BaseException:
            os.close(old[0])
            raise
        if held is None and os.fstat(old[0]).st_nlink > 0:
            # No current file right now (mid-rotation): stay anchored on the file read to its
            # end, so that the next poll catches up from it instead of from the new file.
            held = old
        else:
            os.close(old[0])
        if held is not None:
            open_fds[track] = held
    if held is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        fst = os.fstat(fd)
        start = 0
        known = positions.pop(track, None)
        if known is not None and (known[0], known[1]) == (fst.st_dev, fst.st_ino):
            start = known[2]
        held = (fd, fst.st_dev, fst.st_ino, start)
        open_fds[track] = held
    _read_new(track, held, open_fds, pending, flt, emit)


def _catch_up(
    path: Path,
    track: str,
    old: tuple[int, int],
    old_fd: int,
    flt: Filter,
    emit: Emit,
) -> tuple[int, int, int, int] | None:
    """After ``old`` was rotated away: read whole every file rotated after it, oldest first,
    and return the current file, unread, as ``(fd, dev, ino, 0)``.

    Files are opened (pinned) before any is read, so a rotation meanwhile is caught at the
    next poll. Without a current file (mid-rotation), the newest rotated file read, at its
    end. None when ``old`` was deleted, or nothing newer than it exists yet.
    """
    listed: dict[tuple[int, int], tuple[int, int]] = {}  # key -> (rank, fd)
    try:
        for attempt in range(_CATCH_UP_PASSES):
            if attempt:
                # Rotations outran the pass (``old`` moved past the names listed while it
                # ran): look again once they pause. ``old`` is gone only once deleted.
                for _, fd in listed.values():
                    os.close(fd)
                listed.clear()
                time.sleep(min(0.2, 0.005 * attempt))
            # Newest first: a rotation meanwhile moves files towards names not yet visited, so
            # a file can be seen twice (kept once) but never skipped.
            for tf in reversed(track_files(path.parent, {track})):
                try:
                    fd = os.open(tf.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                fst = os.fstat(fd)
                key = (fst.st_dev, fst.st_ino)
                if key in listed:
                    os.close(fd)
                    continue
                listed[key] = (tf.rank, fd)
            if old in listed or os.fstat(old_fd).st_nlink == 0:
                break
        if old not in listed:
            return None
        old_rank = listed[old][0]
        newer = sorted(
            (rank, key) for key, (rank, _) in listed.items() if rank < old_rank and key != old
        )
        current: tuple[int, int, int, int] | None = None
        last: tuple[int, int, int, int] | None = None
        for rank, key in reversed(newer):
            fd = listed[key][1]
            if rank == 0:  # read by the caller, which keeps any partial last line
                current = (fd, key[0], key[1], 0)
                del listed[key]
                continue
            scratch = {track: (fd, key[0], key[1], 0)}
            _read_new(track, scratch[track], scratch, {}, flt, emit)
            last = scratch[track]
        if current is None and last is not None:
            # No current file (mid-rotation): the newest rotated file, read to its end, is
            # where the next poll catches up from.
            del listed[(last[1], last[2])]
            return last
        return current
    finally:
        for _, fd in listed.values():
            os.close(fd)


def _read_new(
    track: str,
    held: tuple[int, int, int, int],
    open_fds: dict[str, tuple[int, int, int, int]],
    pending: dict[str, bytes],
    flt: Filter,
    emit: Emit,
) -> None:
    fd, dev, ino, offset = held
    while True:
        data = os.pread(fd, 1 << 20, offset)
        if not data:
            break
        offset += len(data)
        data = pending.pop(track, b"") + data
        *complete, rest = data.split(b"\n")
        if rest:
            pending[track] = rest
        for raw in complete:
            rec = flt.match(raw) if raw else None
            if rec is not None:
                emit(rec, raw)
    open_fds[track] = (fd, dev, ino, offset)


# ---------------------------------------------------------------------------- central store
def tail_central(
    store: RedisStore,
    flt: Filter,
    lines: int,
    emit: Emit,
    follow: bool = False,
    stop: threading.Event | None = None,
) -> None:
    """Show the last ``lines`` matching records of the store's streams, then follow."""
    stop = stop or threading.Event()
    tracks = [t for t in store.tracks() if flt.tracks is None or t in flt.tracks]
    cursors: dict[str, str] = {}
    found: list[tuple[float, dict[str, Any], bytes]] = []
    horizon = None if flt.since is None else (flt.since - 3600) * 1000  # allow shipping lag
    for track in tracks:
        before = "+"
        taken = 0
        page_entries = 4  # an entry holds up to about 16 KiB of records: start small
        while taken < lines:
            page = store.read_reverse(track, before, page_entries)
            page_entries = min(page_entries * 4, 1000)
            if not page:
                break
            cursors.setdefault(track, page[0][0])
            for _sid, _rid, raw in page:
                rec = flt.match(raw)
                if rec is not None:
                    found.append((record_time(rec), rec, raw))
                    taken += 1
                    if taken >= lines:
                        break
            before = page[-1][0]
            if horizon is not None and int(before.split("-")[0]) < horizon:
                break
        cursors.setdefault(track, store.last_id(track))
    found.sort(key=lambda item: item[0])
    for _, rec, raw in found[-lines:] if lines else []:
        emit(rec, raw)
    refresh = 0
    while follow and not stop.is_set():
        for track, sid, raw in store.wait(cursors, 1.0):
            cursors[track] = sid
            rec = flt.match(raw)
            if rec is not None:
                emit(rec, raw)
        refresh += 1
        if refresh % 5 == 0:
            for track in store.tracks():
                if track not in cursors and (flt.tracks is None or track in flt.tracks):
                    cursors[track] = "0-0"
