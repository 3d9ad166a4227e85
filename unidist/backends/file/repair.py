"""``repair``: quarantine damaged journal records of the file backend and keep the rest.

Opening an object whose journal is damaged in the middle raises
:class:`~unidist.errors.CorruptData` naming file and offset; nothing is skipped silently.
:func:`repair_object` is the explicit way out (``unidist backend repair`` runs it over every
object). Under the object's exclusive lock it

1. reads the current journal generation ``journal.<G>`` record by record: a stretch of bytes
   that does not validate (bad checksum, absurd length, garbage, a torn tail) and a record
   that validates but does not apply to the state (not a JSON object, an unknown operation,
   a record after the generation's seal) are *bad*; every other record is kept in order;
2. appends each bad stretch or record to the side file ``quarantine.<G>.<time>.jsonl`` in the
   object's directory: one JSON line per item with the file, offset, length, the reason and
   the raw bytes in base64 (inspect it, or delete it when done);
3. writes the kept records, renumbered, as the new ``journal.<G>`` (temporary file, fsync,
   rename, directory fsync), so the next open replays exactly what was kept.

Processes that have the object open notice the replaced journal and reload it. A damaged
snapshot is rebuilt from the previous generation by a normal open; when that is impossible the
repair reports the object as unrepairable (restore it from a backup) and changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from unidist.backends.file import _io
from unidist.backends.file._groupcommit import SYNC_FILE
from unidist.backends.file._objects import ObjectState
from unidist.backends.file.journal import HEADER_SIZE, MAX_RECORD, _next_valid, _valid_at, frame
from unidist.backends.file.journal import dumps as _dumps
from unidist.backends.file.journal_handle import (
    _APPLY_ERRORS,
    Handle,
    StoreConfig,
    _gens,
    _pread_all,
)
from unidist.errors import CorruptData


@dataclass
class RepairReport:
    """What :func:`repair_object` found and did for one object.

    Attributes:
        path: the object's directory.
        kept: records kept (the header not counted).
        quarantined: bad items moved to the quarantine file.
        bytes_quarantined: their total size.
        quarantine_file: path of the side file ('' when nothing was quarantined).
        error: why the object could not be repaired ('' when it was or needed nothing).
        items: (offset, length, reason) of each quarantined item.
    """

    path: str
    kept: int = 0
    quarantined: int = 0
    bytes_quarantined: int = 0
    quarantine_file: str = ""
    error: str = ""
    items: list[tuple[int, int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``unidist backend repair --json``)."""
        return {
            "path": self.path,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "bytes_quarantined": self.bytes_quarantined,
            "quarantine_file": self.quarantine_file,
            "error": self.error,
        }


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def repair_object(
    cfg: StoreConfig,
    cls: type[ObjectState],
    family: str,
    name: str,
    dir_fd: int,
    *,
    dry_run: bool = False,
) -> RepairReport:
    """Quarantine the bad records of one object's current journal (see the module docs).

    Args:
        cfg: the backend's store settings.
        cls: the object's state class.
        family: its directory family (``counters``, ``state``, ``queues``, ``members``).
        name: its name.
        dir_fd: an open descriptor of its directory (taken over: closed on return).
        dry_run: only report what would be quarantined; change nothing.

    Returns:
        The report; ``error`` is set when the object cannot be repaired this way.

    Raises:
        OSError: reading or writing the object's files failed.
    """
    h = Handle(cfg, cls, family, name, dir_fd)
    report = RepairReport(h.path)
    try:
        fcntl.flock(h.lock_fd, fcntl.LOCK_EX)
        names = set(os.listdir(h.dir_fd))
        jgens = _gens(names, "journal.")
        if not jgens:
            return report
        gen = max(jgens)
        try:
            state = h._base(gen, names)
        except CorruptData as exc:
            report.error = str(exc)
            return report
        jname = f"journal.{gen}"
        jpath = f"{h.path}/{jname}"
        fd = _io.open_file(jname, h.dir_fd, os.O_RDONLY)
        try:
            data = _pread_all(fd, 0, os.fstat(fd).st_size)
        finally:
            _io.close_quietly(fd)
        kept, bad = _sort_records(data, h._header(gen), state)
        report.kept = len(kept)
        report.items = [(off, len(raw), why) for off, raw, why in bad]
        report.quarantined = len(bad)
        report.bytes_quarantined = sum(len(raw) for _, raw, _ in bad)
        if not bad or dry_run:
            return report
        qname = f"quarantine.{gen}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.jsonl"
        lines = [
            json.dumps(
                {
                    "file": jpath,
                    "offset": off,
                    "length": len(raw),
                    "reason": why,
                    "base64": base64.b64encode(raw).decode(),
                }
            )
            for off, raw, why in bad
        ]
        _io.atomic_write(h.dir_fd, qname, ("\n".join(lines) + "\n").encode(), durable=True)
        report.quarantine_file = f"{h.path}/{qname}"
        out = [frame(0, _dumps(h._header(gen)))]
        out += [frame(i + 1, payload) for i, payload in enumerate(kept)]
        _io.atomic_write(h.dir_fd, jname, b"".join(out), durable=True)
        with contextlib.suppress(OSError):
            _io.unlink(SYNC_FILE, dir_fd=h.dir_fd)
        return report
    finally:
        h.close(flush=False)


def _sort_records(
    data: bytes, header: dict[str, Any], state: ObjectState
) -> tuple[list[bytes], list[tuple[int, bytes, str]]]:
    """(payloads to keep, bad items as (offset, raw bytes, reason)) of one journal."""
    buf = memoryview(data)
    kept: list[bytes] = []
    bad: list[tuple[int, bytes, str]] = []
    pos = 0
    first = True
    sealed = False
    while pos < len(data):
        hit = _valid_at(buf, pos, MAX_RECORD)
        if hit is None:
            later = _next_valid(buf, pos + 1, MAX_RECORD)
            stop = len(data) if later is None else later
            why = "torn tail" if later is None else "damaged bytes (checksum or framing)"
            if stop - pos:
                bad.append((pos, data[pos:stop], why))
            pos = stop
            first = False
            continue
        _, length = hit
        end = pos + HEADER_SIZE + length
        payload = data[pos + HEADER_SIZE : end]
        obj = _decode(payload)
        if first and obj is not None and all(obj.get(k) == v for k, v in header.items()):
            first = False
        elif obj is None:
            bad.append((pos, data[pos:end], "valid checksum but not a JSON object"))
        elif sealed:
            bad.append((pos, data[pos:end], "record after the generation's seal"))
        elif "seal" in obj:
            sealed = True
            kept.append(payload)
        else:
            try:
                state.apply(obj)
            except _APPLY_ERRORS as exc:
                bad.append((pos, data[pos:end], f"does not apply to the state ({exc!r})"))
            else:
                kept.append(payload)
        first = False
        pos = end
    return kept, bad
