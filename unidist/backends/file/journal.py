"""Journal record format of the file backend: framing, validation, torn-tail vs. corruption.

A journal file is a sequence of self-validating records::

    +-------+---------+---------+-------+-----------------+
    | magic | length  | seq     | crc32 | payload         |
    | 2 B   | u32 BE  | u64 BE  | u32BE | ``length`` bytes|
    +-------+---------+---------+-------+-----------------+

``magic`` is ``b"\\xa5U"``; ``crc32`` (zlib) covers magic, length, seq and payload; ``seq`` is 0
for the header record that opens every journal and snapshot file and then counts 1, 2, 3...
within one journal generation; the payload is a UTF-8 JSON object (never pickle).

Reading never trusts a length before checking it: a length larger than :data:`MAX_RECORD` or
than the bytes actually present marks the record invalid, so a corrupt 4 GB prefix allocates
nothing. An invalid record followed by nothing valid is a *torn tail* (a writer died or the
machine lost power mid-append): the scan reports where the valid part ends so the caller can
cut it. An invalid record followed by any valid record is *damage in the middle*:
:class:`~unidist.errors.CorruptData` naming file and offset.

One exception, the signature of a power loss: an invalid stretch followed by valid records
that is zero from its start (where a record should begin) to the next 512-byte sector
boundary, or holds a run of at least 16 zero bytes ending at a sector boundary (a page or
sector the kernel never wrote back reads as zeros up to its end), is a *lost-write hole*.
The kernel wrote back later pages of the file before an earlier one; that cannot happen below
the last successful fsync (fsync makes every earlier write of the file durable), so the
stretch and everything after it were never synced and, under ``fsync=always``, never
acknowledged. It is cut like a torn tail (with a warning) instead of refusing to open.
Records never contain such a run (JSON text has no NUL bytes; a record header holds at most
about 9 zero bytes in a row), so bit rot, a garbled record or a foreign file are still
:class:`CorruptData`.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from unidist.errors import CorruptData

MAGIC: Final = b"\xa5U"
_HEAD: Final = struct.Struct(">2sIQ")
_CRC: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEAD.size + _CRC.size  # 18 bytes
#: the largest payload one record may carry (256 MiB); larger puts raise ValueError.
MAX_RECORD: Final = 256 * 1024 * 1024
FORMAT_VERSION: Final = 1
#: the unit a disk writes atomically at best; zeros up to its end mark a lost write.
SECTOR: Final = 512
#: zero bytes in a row, ending at a sector boundary, that mark a lost write (see module docs).
HOLE_RUN: Final = 16
_ZERO_RUN: Final = bytes(HOLE_RUN)


class RecordTooLarge(ValueError):
    """An operation's record would exceed :data:`MAX_RECORD`; nothing was written."""


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_DECODER: Final = json.JSONDecoder()


def _c_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder :data:`_ENCODER` builds on every call, built once (None where absent).

    No circular-reference bookkeeping: records and snapshots are trees of JSON values. It is
    used only if it writes exactly what :data:`_ENCODER` writes for a sample record.
    """
    try:
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

        if c_make_encoder is None:
            return None
        enc: Callable[[Any, int], Any] = c_make_encoder(
            None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False
        )
        sample = {"o": "s", "k": 'k\u00e9\n"', "v": [1, -2.5, True, None, {"x": 1e300}]}
        if "".join(enc(sample, 0)) != _ENCODER.encode(sample):
            return None
    except Exception:  # any other interpreter: the portable encoder
        return None
    return enc


_C_ENCODE: Final = _c_encoder()


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON for a record payload.

    Raises:
        ValueError: ``obj`` holds NaN or an infinity.
        TypeError: ``obj`` holds something that is not JSON.
    """
    if _C_ENCODE is None:
        return _ENCODER.encode(obj).encode()
    return "".join(_C_ENCODE(obj, 0)).encode()


def frame(seq: int, payload: bytes, *, limit: int = MAX_RECORD) -> bytes:
    """Frame ``payload`` as one record with sequence number ``seq``.

    Raises:
        RecordTooLarge: the payload exceeds ``limit`` (:data:`MAX_RECORD` for journal records;
            snapshots pass a larger limit).
    """
    return frame_head(seq, payload, limit=limit) + payload


def frame_head(seq: int, *parts: bytes, limit: int = MAX_RECORD) -> bytes:
    """The header (magic, length, seq, crc) that :func:`frame` puts before the payload made
    of ``parts`` (written one after another), so that a large record is written without
    joining or copying its parts.

    Raises:
        RecordTooLarge: as :func:`frame`.
    """
    size = sum(len(p) for p in parts)
    if size > limit or size > 0xFFFFFFFF:
        raise RecordTooLarge(
            f"a single operation of {size} bytes exceeds the file backend's record "
            f"limit of {min(limit, 0xFFFFFFFF)} bytes"
        )
    head = _HEAD.pack(MAGIC, size, seq)
    crc = zlib.crc32(head)
    for p in parts:
        crc = zlib.crc32(p, crc)
    return head + _CRC.pack(crc)


def _valid_at(buf: memoryview, pos: int, max_len: int) -> tuple[int, int] | None:
    """(seq, payload length) of a record that validates at ``pos``, else None."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    magic, length, seq = _HEAD.unpack_from(buf, pos)
    if magic != MAGIC or length > max_len or pos + HEADER_SIZE + length > len(buf):
        return None
    (crc,) = _CRC.unpack_from(buf, pos + _HEAD.size)
    body = buf[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
    if zlib.crc32(body, zlib.crc32(buf[pos : pos + _HEAD.size])) != crc:
        return None
    return seq, length


def _next_valid(buf: memoryview, start: int, max_len: int) -> int | None:
    raw = buf.obj
    assert isinstance(raw, bytes)
    pos = raw.find(MAGIC, start)
    while pos >= 0:
        if _valid_at(buf, pos, max_len) is not None:
            return pos
        pos = raw.find(MAGIC, pos + 1)
    return None


@dataclass
class Scan:
    """Result of scanning a buffer of records.

    Attributes:
        records: (file offset, seq, decoded JSON object) per valid record, in order.
        end: file offset just past the last valid record.
        torn: bytes after ``end`` that belong to a torn tail (0 if none).
        hole: the torn part starts with a lost-write hole and valid-looking (never synced)
            records follow it; they are cut too.
    """

    records: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    end: int = 0
    torn: int = 0
    hole: bool = False


def _zero_sector_in(raw: bytes, start: int, stop: int, base: int) -> bool:
    """Whether ``raw[start:stop]`` (``base``: the file offset of ``raw[0]``) looks like a
    lost write: zeros from ``start`` (where a record should begin) to the next sector
    boundary, or :data:`HOLE_RUN` zero bytes ending at a sector boundary."""
    first = start + SECTOR - (base + start) % SECTOR
    if first <= stop and not raw[start:first].strip(b"\0"):
        return True
    end = start + HOLE_RUN
    end += (-(base + end)) % SECTOR  # the first sector boundary with a full run before it
    while end <= stop:
        if raw[end - HOLE_RUN : end] == _ZERO_RUN:
            return True
        end += SECTOR
    return False


def decode_payload(payload: bytes | str | memoryview, path: str, offset: int) -> dict[str, Any]:
    """Decode a CRC-valid payload (UTF-8 bytes, or text); anything but a JSON object is
    CorruptData."""
    try:
        obj = _DECODER.decode(payload if isinstance(payload, str) else str(payload, "utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptData(
            f"{path}: record at offset {offset} passed its checksum but is not valid JSON ({exc})",
            path=path,
            offset=offset,
        ) from None
    if not isinstance(obj, dict):
        raise CorruptData(
            f"{path}: record at offset {offset} is not a JSON object", path=path, offset=offset
        )
    return obj


def scan(data: bytes, *, path: str, base: int, next_seq: int, max_len: int = MAX_RECORD) -> Scan:
    """Validate and decode the records in ``data`` (the file's bytes from offset ``base``).

    Args:
        data: the bytes read from the file.
        path: file name for messages.
        base: file offset of ``data[0]``.
        next_seq: the sequence number the first record must carry.
        max_len: the largest acceptable payload length.

    Returns:
        The valid records and where the valid part ends; trailing invalid bytes with no valid
        record after them are reported in ``torn`` (the caller cuts them).

    Raises:
        CorruptData: an invalid record is followed by a valid one (unless the invalid stretch
            is a lost-write hole, see the module docs), a valid record carries the wrong
            sequence number, or a payload is not a JSON object.
    """
    buf = memoryview(data)
    out = Scan()
    records = out.records
    pos = 0
    size = len(buf)
    # _valid_at and decode_payload inlined: this loop runs for every record another process
    # appended before each operation.
    unpack_head = _HEAD.unpack_from
    unpack_crc = _CRC.unpack_from
    crc32 = zlib.crc32
    decode = _DECODER.decode
    while size - pos >= HEADER_SIZE:
        magic, length, seq = unpack_head(buf, pos)
        start = pos + HEADER_SIZE
        end = start + length
        if magic != MAGIC or length > max_len or end > size:
            break
        body = buf[start:end]
        if crc32(body, crc32(buf[pos : pos + _HEAD.size])) != unpack_crc(buf, pos + _HEAD.size)[0]:
            break
        if seq != next_seq:
            raise CorruptData(
                f"{path}: record at offset {base + pos} has sequence {seq}, expected {next_seq}"
                " (records duplicated, reordered or from another journal)",
                path=path,
                offset=base + pos,
            )
        try:
            obj = decode(str(body, "utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            obj = None
        if type(obj) is not dict:
            obj = decode_payload(body, path, base + pos)  # raises CorruptData
        records.append((base + pos, seq, obj))
        next_seq += 1
        pos = end
    out.end = base + pos
    if pos < size:
        later = _next_valid(buf, pos + 1, max_len)
        if later is not None and _zero_sector_in(data, pos, later, base):
            out.hole = True
        elif later is not None:
            raise CorruptData(
                f"{path}: damaged record at offset {base + pos} followed by valid data at offset "
                f"{base + later}; refusing to skip it (restore from backup or repair)",
                path=path,
                offset=base + pos,
            )
        out.torn = size - pos
    return out


def read_single(data: bytes, *, path: str) -> dict[str, Any]:
    """Decode a file holding exactly one record (a snapshot).

    Raises:
        CorruptData: the file is empty, truncated, zero-filled, has a bad checksum or trailing
            bytes (``offset`` -1: the whole file is unusable).
    """
    buf = memoryview(data)
    hit = _valid_at(buf, 0, len(buf))
    if hit is None or hit[0] != 0 or HEADER_SIZE + hit[1] != len(buf):
        what = "empty" if not data else "truncated, damaged or not a snapshot"
        raise CorruptData(f"{path}: snapshot file is {what}", path=path, offset=-1)
    return decode_payload(bytes(buf[HEADER_SIZE:]), path, 0)


def read_single_parts(head: bytes, payload: bytes, *, path: str) -> dict[str, Any]:
    """:func:`read_single` of a file read as its 18-byte header and its payload (a large
    snapshot is decoded without a copy of the whole file).

    Raises:
        CorruptData: as :func:`read_single`.
    """
    ok = len(head) == HEADER_SIZE
    if ok:
        magic, length, seq = _HEAD.unpack_from(head, 0)
        (crc,) = _CRC.unpack_from(head, _HEAD.size)
        ok = magic == MAGIC and seq == 0 and length == len(payload)
        ok = ok and zlib.crc32(payload, zlib.crc32(head[: _HEAD.size])) == crc
    if not ok:
        what = "empty" if not head else "truncated, damaged or not a snapshot"
        raise CorruptData(f"{path}: snapshot file is {what}", path=path, offset=-1)
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise CorruptData(
            f"{path}: record at offset 0 passed its checksum but is not valid JSON ({exc})",
            path=path,
            offset=0,
        ) from None
    del payload  # the last reference when the caller passed a temporary
    return decode_payload(text, path, 0)
