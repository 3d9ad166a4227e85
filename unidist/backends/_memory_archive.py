"""The ``memory://?archive=PATH`` journal: every change on disk before the call returns.

The archive is a journal in the file backend's record format (length, sequence number and
CRC32 per record, see :mod:`unidist.backends.file.journal`). Record 0 is a header; each later
record holds the *effects* of one operation (the resulting values, so replay is idempotent and
needs no logic of the operation itself). When the journal holds many more records than live
objects, it is compacted: a new file with the header and one record of the full state is
written to a temporary file, fsynced, renamed over the archive, and the directory fsynced.

At start the archive is replayed. A torn tail (the process died mid-append) is cut with a
warning; damage in the middle raises :class:`~unidist.errors.CorruptData` naming file and
offset.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Final

from unidist.backends.file.journal import dumps, frame, scan
from unidist.errors import BackendUnavailable, CorruptData

Effect = list[Any]

KIND: Final = "unidist-memory-archive"
COMPACT_MIN_RECORDS: Final = 10_000


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """An append-only effects journal for one memory store (not thread-safe: the backend's
    condition variable serializes every call)."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self._url = url
        self._fd = -1
        self._seq = 0
        self._records = 0
        self._poisoned: str | None = None
        #: compaction starts once the journal holds at least this many records.
        self.compact_min = COMPACT_MIN_RECORDS

    # ------------------------------------------------------------------ open / replay
    def load(self) -> list[Effect]:
        """Read the archive (creating it if missing) and return every effect in order.

        Raises:
            CorruptData: damage in the middle of the archive, or a foreign file.
            BackendUnavailable: the file cannot be read or created.
        """
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_APPEND, 0o600)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot open memory archive {path}: {exc.strerror}", url=self._url
            ) from exc
        self._fd = fd
        data = b""
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read()
        if not data:
            self._write_all([frame(0, dumps({"kind": KIND, "format": 1}))], sync_dir=True)
            self._seq = 1
            return []
        result = scan(data, path=str(path), base=0, next_seq=0)
        if not result.records or result.records[0][2].get("kind") != KIND:
            raise CorruptData(f"{path} is not a unidist memory archive", path=str(path), offset=0)
        if result.torn:
            warnings.warn(
                f"memory archive {path}: cut a torn tail of {result.torn} bytes at offset "
                f"{result.end} (a write was interrupted)",
                RuntimeWarning,
                stacklevel=4,
            )
            os.ftruncate(fd, result.end)
            os.fsync(fd)
        effects: list[Effect] = []
        for _, _, rec in result.records[1:]:
            effects.extend(rec["e"])
        self._seq = len(result.records)
        self._records = len(result.records) - 1
        return effects

    # ------------------------------------------------------------------ append
    def append(self, effects: list[Effect]) -> None:
        """Append one record of ``effects`` and fsync it.

        Raises:
            BackendUnavailable: the write or fsync failed; the archive refuses further writes
                until the process reopens it (the journal is replayed then).
        """
        if self._poisoned is not None:
            raise BackendUnavailable(
                f"memory archive {self.path} failed earlier ({self._poisoned}); "
                "restart the process to replay it",
                url=self._url,
            )
        record = frame(self._seq, dumps({"e": effects}))
        self._write_all([record])
        self._seq += 1
        self._records += 1

    def _write_all(self, chunks: list[bytes], *, sync_dir: bool = False) -> None:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
            if sync_dir:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self._poisoned = exc.strerror or str(exc)
            raise BackendUnavailable(
                f"cannot write memory archive {self.path}: {exc.strerror}", url=self._url
            ) from exc

    def wants_compaction(self, live_objects: int) -> bool:
        """True when the journal holds far more records than live objects."""
        return self._records >= max(self.compact_min, 4 * live_objects)

    def compact(self, state: list[Effect]) -> None:
        """Replace the archive with a header and one record holding ``state`` (atomic)."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                payload = frame(0, dumps({"kind": KIND, "format": 1})) + frame(
                    1, dumps({"e": state})
                )
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise BackendUnavailable(
                f"cannot compact memory archive {self.path}: {exc.strerror}", url=self._url
            ) from exc
        os.close(self._fd)
        self._fd = fd
        os.lseek(fd, 0, os.SEEK_END)
        self._seq = 2
        self._records = 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
