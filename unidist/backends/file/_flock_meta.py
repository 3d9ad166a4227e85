"""The ``meta`` file of one file-backend lock: fencing-token reservations, epoch, waiters.

Every read and write happens under the exclusive flock that the caller holds on this very file
(see :mod:`.locks`), except :func:`read_epoch` and :func:`idle`, lock-free reads (a torn or
stale read only causes an early wake-up, or the caller's slower, flocked path).

Byte layout (little endian)::

    [0, 512)     reservation record A   \\ each: magic "UDLKRES1", u64 seq, u64 reserved,
    [512, 1024)  reservation record B   /        u32 crc32 of the preceding 24 bytes
    [1024, 1032) u64 epoch: changes whenever a slot may have been freed while a waiter is
                 registered (a wake-up hint)
    [1032, 1040) u32 length, u32 crc32 of the volatile record that follows
    [1040, ...)  volatile record: u8 n, n bytes boot id, u64 last token handed out,
                 u64 next waiter sequence, u32 last limit asked for, u32 waiter count, then
                 per waiter: u64 sequence, f64 monotonic expiry, f64 ttl (-1: none), u16 n,
                 u32 m, n bytes UTF-8 holder, m bytes UTF-8 info JSON

Token rule. ``reserved`` (the larger of the valid A/B records) is an upper bound, fsynced, of
every token ever handed out. The volatile record holds the exact last token; it is written on
every grant but fsynced only with a new reservation, so it is trusted only while its boot id
equals the running kernel's (the page cache cannot lose a completed write before a reboot, and a
killed process cannot tear a write that lies within one page). Otherwise — after a reboot, or if
its checksum fails — the last token is taken to be ``reserved``. A grant whose token would pass
``reserved`` first writes a new reservation ``token + TOKEN_BLOCK - 1`` into the older of A/B and
fsyncs it (unless ``fsync=never``); a torn reservation write leaves the other record valid. So
tokens never repeat or decrease, across processes, crashes and reboots, at the cost of one fsync
per ``TOKEN_BLOCK`` grants and a jump of at most ``TOKEN_BLOCK`` after a reboot. Without a boot
id (no ``/proc``) every token is its own reservation (one fsync per grant).

Waiter expiries are ``time.monotonic()`` seconds: CLOCK_MONOTONIC is one clock for every
process of a host (of one time namespace), and a wall-clock jump cannot expire anything early.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from typing import Any, Final

from unidist.errors import CorruptData

__all__ = [
    "BOOT_ID",
    "EPOCH_OFFSET",
    "TOKEN_BLOCK",
    "MetaFile",
    "MetaState",
    "idle",
    "initial_bytes",
    "parse",
    "read_all",
    "read_epoch",
]

TOKEN_BLOCK: Final = 1024

_RES_OFFSETS: Final = (0, 512)
_RES = struct.Struct("<8sQQI")
_RES_MAGIC: Final = b"UDLKRES1"
EPOCH_OFFSET: Final = 1024
_EPOCH = struct.Struct("<Q")
_VOL_OFFSET: Final = 1032
_VOL_HDR = struct.Struct("<II")
_VOL_BODY: Final = _VOL_OFFSET + _VOL_HDR.size
#: the first read of the whole file: a meta file without waiters is about 1,100 bytes.
_READ_CHUNK: Final = 4096
#: what :func:`idle` reads: the volatile header and a record without waiters (boot id <= 255).
_IDLE_READ: Final = _VOL_HDR.size + 1 + 255 + 24


def _read_boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except (OSError, ValueError):
        return None


#: this kernel boot's id (None where unknown: then every token is fsynced on its own).
BOOT_ID: Final = _read_boot_id()


def _res_record(seq: int, reserved: int) -> bytes:
    head = struct.pack("<8sQQ", _RES_MAGIC, seq, reserved)
    return head + struct.pack("<I", zlib.crc32(head))


def _parse_res(raw: bytes, offset: int) -> tuple[int, int] | None:
    chunk = raw[offset : offset + _RES.size]
    if len(chunk) < _RES.size:
        return None
    magic, seq, reserved, crc = _RES.unpack(chunk)
    if magic != _RES_MAGIC or zlib.crc32(chunk[:-4]) != crc:
        return None
    return seq, reserved


def initial_bytes() -> bytes:
    """Content of a new meta file: reservation A = 0 (no token handed out), empty rest."""
    out = bytearray(_VOL_BODY)
    out[0 : _RES.size] = _res_record(1, 0)
    return bytes(out)


def read_epoch(fd: int) -> int:
    """The epoch hint, read without the meta flock (a torn read only causes an early wake)."""
    raw = os.pread(fd, _EPOCH.size, EPOCH_OFFSET)
    return _EPOCH.unpack(raw)[0] if len(raw) == _EPOCH.size else -1


def read_all(fd: int) -> bytes:
    """The whole meta file."""
    raw = os.pread(fd, _READ_CHUNK, 0)
    if len(raw) < _READ_CHUNK:
        return raw
    size = os.fstat(fd).st_size
    return raw + os.pread(fd, max(0, size - len(raw)), len(raw))


_BOOT_BYTES: Final = (BOOT_ID or "").encode("ascii", "replace")[:255]
_VOL_FIXED = struct.Struct("<QQII")
_WAITER = struct.Struct("<QddHI")


def idle(fd: int, max_limit: int) -> bool:
    """True if the volatile record, read without the flock, is this boot's, intact, lists no
    waiter and a last limit of at most ``max_limit``.

    A lock-free read: the record may be changing meanwhile. False (take the flocked path)
    whenever it cannot be trusted: torn (checksum), another boot's, or with waiters. A waiter
    that registers right after a True answer is the caller's to handle (see ``lock_release``).
    """
    if BOOT_ID is None:
        return False
    raw = os.pread(fd, _IDLE_READ, _VOL_OFFSET)
    if len(raw) < _VOL_HDR.size:
        return False
    length, crc = _VOL_HDR.unpack_from(raw)
    body = raw[_VOL_HDR.size : _VOL_HDR.size + length]
    if length == 0 or len(body) != length or zlib.crc32(body) != crc:
        return False
    off = 1 + body[0]
    if body[1:off] != _BOOT_BYTES or len(body) < off + _VOL_FIXED.size:
        return False
    _last, _wseq, limit, count = _VOL_FIXED.unpack_from(body, off)
    return bool(count == 0 and limit <= max_limit)


class MetaFile:
    """One process's handle on a meta file: the descriptor plus a parse cache.

    Use only under the meta flock (and the caller's in-process mutex). The cache holds the
    file's bytes as this handle last saw or wrote them; :meth:`load` re-parses only when the
    file differs (another process wrote). Any error must be followed by :meth:`invalidate`.
    """

    __slots__ = ("_raw", "_state", "fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._raw: bytearray | None = None
        self._state: MetaState | None = None

    def invalidate(self) -> None:
        self._raw = None
        self._state = None

    def load(self) -> MetaState:
        """The current state (parsed, or the cached one if the file did not change).

        Raises:
            CorruptData: see :func:`parse`.
            OSError: the file cannot be read.
        """
        raw = read_all(self.fd)
        if self._state is not None and self._raw is not None and raw == self._raw:
            return self._state
        self.invalidate()
        state = parse(raw, self.path)
        state.file = self
        self._raw = bytearray(raw)
        self._state = state
        return state

    def write(self, data: bytes, offset: int) -> None:
        """``pwrite`` and keep the cached bytes equal to the file's."""
        os.pwrite(self.fd, data, offset)
        raw = self._raw
        if raw is not None:
            end = offset + len(data)
            if len(raw) < end:
                raw.extend(bytes(end - len(raw)))
            raw[offset:end] = data

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def bump_epoch(self) -> None:
        """Change the epoch hint: a slot may have been freed. Needs no read (any new value
        will do; ``monotonic_ns`` differs between two serialized calls)."""
        epoch = time.monotonic_ns()
        if self._state is not None:
            epoch = max(epoch, self._state.epoch + 1)
            self._state.epoch = epoch
        self.write(_EPOCH.pack(epoch), EPOCH_OFFSET)


class MetaState:
    """The parsed meta file. Mutate, then call the ``write_*`` methods under the flock."""

    __slots__ = (
        "epoch",
        "file",
        "last_token",
        "limit",
        "path",
        "res_seq",
        "res_slot",
        "reserved",
        "waiter_seq",
        "waiters",
    )

    def __init__(self, path: str, res_seq: int, reserved: int, res_slot: int, epoch: int) -> None:
        self.path = path
        self.res_seq = res_seq
        self.reserved = reserved
        #: offset index (0 or 1) of the newest valid reservation record.
        self.res_slot = res_slot
        self.epoch = epoch
        self.last_token = reserved
        self.waiter_seq = 0
        #: registrations ``[holder, seq, monotonic expiry, ttl (-1: none), info JSON]`` in
        #: sequence order (some may have lapsed; callers prune). ttl and info let a release hand
        #: the slot straight to the first waiter.
        self.waiters: list[list[Any]] = []
        #: the slot count the last acquirer asked for (tells wake-ups how many may run).
        self.limit = 1
        self.file: MetaFile | None = None

    def _file(self) -> MetaFile:
        assert self.file is not None, "state not loaded through MetaFile.load"
        return self.file

    def next_token(self, durable: bool) -> int:
        """Advance and return the next token, reserving (and fsyncing) a block if needed.

        The caller must write the volatile record (:meth:`write_volatile`) before handing the
        token out; a reservation, if one was needed, is on disk when this returns.

        Raises:
            OSError: the reservation could not be written or synced.
        """
        token = self.last_token + 1
        if token > self.reserved:
            block = TOKEN_BLOCK if BOOT_ID is not None else 1
            seq = self.res_seq + 1
            slot = 1 - self.res_slot
            reserved = token + block - 1
            self._file().write(_res_record(seq, reserved), _RES_OFFSETS[slot])
            if durable:
                self._file().sync()
            self.res_seq, self.reserved, self.res_slot = seq, reserved, slot
        self.last_token = token
        return token

    def volatile_bytes(self) -> bytes:
        parts = [
            bytes((len(_BOOT_BYTES),)),
            _BOOT_BYTES,
            _VOL_FIXED.pack(self.last_token, self.waiter_seq, self.limit, len(self.waiters)),
        ]
        for holder, seq, exp, ttl, info in self.waiters:
            name = str(holder).encode("utf-8", "surrogatepass")
            record = str(info).encode("utf-8", "surrogatepass")
            parts.append(_WAITER.pack(int(seq), float(exp), float(ttl), len(name), len(record)))
            parts.append(name)
            parts.append(record)
        body = b"".join(parts)
        return _VOL_HDR.pack(len(body), zlib.crc32(body)) + body

    def write_volatile(self) -> None:
        """Write the volatile record (last token, waiters)."""
        self._file().write(self.volatile_bytes(), _VOL_OFFSET)

    def bump_epoch(self) -> None:
        """Change the wake-up epoch (a slot may have been freed)."""
        self._file().bump_epoch()


_RES_END: Final = _RES_OFFSETS[1] + _RES.size
_res_cache: tuple[bytes, tuple[int, int, int]] | None = None


def _set_res_cache(key: bytes, value: tuple[int, int, int]) -> None:
    global _res_cache
    _res_cache = (key, value)


def _parse_reservations(raw: bytes, path: str) -> tuple[int, int, int]:
    """``(seq, reserved, slot)`` of the newest valid reservation record.

    Raises:
        CorruptData: neither record is valid.
    """
    found = [(r, i) for i, off in enumerate(_RES_OFFSETS) if (r := _parse_res(raw, off))]
    if not found:
        raise CorruptData(
            f"lock meta file {path}: both fencing-token reservation records are damaged; "
            "move the file away (tokens of this lock restart) or restore it",
            path=path,
            offset=0,
        )
    (res_seq, reserved), res_slot = max(found, key=lambda item: item[0][0])
    return res_seq, reserved, res_slot


def parse(raw: bytes, path: str) -> MetaState:
    """Parse a meta file's bytes.

    Raises:
        CorruptData: neither reservation record is valid (tokens could repeat otherwise).
    """
    key = raw[:_RES_END]
    cached = _res_cache
    if cached is not None and cached[0] == key:
        res_seq, reserved, res_slot = cached[1]
    else:
        res_seq, reserved, res_slot = _parse_reservations(raw, path)
        _set_res_cache(key, (res_seq, reserved, res_slot))
    epoch = _EPOCH.unpack_from(raw, EPOCH_OFFSET)[0] if len(raw) >= _VOL_OFFSET else 0
    state = MetaState(path, res_seq, reserved, res_slot, epoch)
    if BOOT_ID is None or len(raw) < _VOL_BODY:
        return state
    length, crc = _VOL_HDR.unpack_from(raw, _VOL_OFFSET)
    body = raw[_VOL_BODY : _VOL_BODY + length]
    if length == 0 or len(body) != length or zlib.crc32(body) != crc:
        return state
    try:
        off = 1 + body[0]
        if body[1:off] != _BOOT_BYTES:
            return state  # another boot: only the durable reservation counts
        last, wseq, limit, count = _VOL_FIXED.unpack_from(body, off)
        off += _VOL_FIXED.size
        waiters: list[list[Any]] = []
        for _ in range(count):
            seq, exp, ttl, size, info_size = _WAITER.unpack_from(body, off)
            off += _WAITER.size
            name = body[off : off + size].decode("utf-8", "surrogatepass")
            off += size
            info = body[off : off + info_size].decode("utf-8", "surrogatepass")
            off += info_size
            waiters.append([name, seq, exp, ttl, info])
    except (IndexError, struct.error, UnicodeDecodeError):
        return state
    state.last_token = last
    state.waiter_seq = wseq
    state.limit = max(1, limit)
    state.waiters = waiters
    return state
