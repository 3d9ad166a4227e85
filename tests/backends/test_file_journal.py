"""Journal and snapshot internals of the file backend: torn tails, corruption, snapshot damage.

Damage is done to real files between two opens of the store, the way a crash, a bad disk or
an operator would leave them; each test then checks what a user sees on the next open.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import tracemalloc
import warnings
from pathlib import Path

import pytest

from unidist.backends.file import FileBackend
from unidist.backends.file.journal import HEADER_SIZE, MAX_RECORD, frame, read_single, scan
from unidist.backends.file.journal_handle import RecoveryWarning, TornTailWarning
from unidist.errors import CorruptData


def open_backend(root: Path, compact: int | None = None) -> FileBackend:
    b = FileBackend.from_url("file://" + str(root))
    assert isinstance(b, FileBackend)
    if compact is not None:
        b._cfg.compact_records = compact
    return b


def journal_of(root: Path, family: str, name: str) -> Path:
    d = root / family / name
    gens = sorted(int(p.name.split(".")[1]) for p in d.glob("journal.*") if ".tmp." not in p.name)
    return d / f"journal.{gens[-1]}"


def record_offsets(path: Path) -> list[int]:
    sc = scan(path.read_bytes(), path=str(path), base=0, next_seq=0)
    return [off for off, _, _ in sc.records]


def make_counter(root: Path, n: int) -> Path:
    b = open_backend(root)
    for _ in range(n):
        b.counter_add("c", 1, "r")
    b.close()
    return journal_of(root, "counters", "c")


def reopen_value(root: Path) -> int:
    b = open_backend(root)
    try:
        return b.counter_get("c")
    finally:
        b.close()


# ---------------------------------------------------------------------- record format
def test_frame_and_scan_roundtrip():
    """Framed records scan back with their offsets, sequence numbers and payloads."""
    data = frame(0, b'{"h":1}') + frame(1, b'{"v":1}') + frame(2, b'{"v":2}')
    sc = scan(data, path="x", base=100, next_seq=0)
    assert [(o, s, p) for o, s, p in sc.records] == [
        (100, 0, {"h": 1}),
        (100 + HEADER_SIZE + 7, 1, {"v": 1}),
        (100 + 2 * (HEADER_SIZE + 7), 2, {"v": 2}),
    ]
    assert sc.end == 100 + len(data)
    assert sc.torn == 0


def test_sequence_gap_is_corrupt():
    """A valid record with the wrong sequence number (duplicated block) is CorruptData."""
    data = frame(0, b"{}") + frame(1, b"{}") + frame(1, b"{}")
    with pytest.raises(CorruptData) as ei:
        scan(data, path="j", base=0, next_seq=0)
    assert ei.value.offset == 2 * (HEADER_SIZE + 2)


def test_crc_valid_non_json_is_corrupt_data_not_json_error():
    """A checksummed payload that is not a JSON object raises CorruptData, not a json error."""
    for payload in (b"\x80\x04\x95pickle", b"[1,2]", b"{bad"):
        with pytest.raises(CorruptData) as ei:
            scan(frame(0, b"{}") + frame(1, payload), path="j", base=0, next_seq=0)
        assert ei.value.offset == HEADER_SIZE + 2
        assert "j" in str(ei.value)


def test_read_single_rejects_damage():
    """A snapshot file must be exactly one valid record."""
    good = frame(0, b'{"a":1}')
    assert read_single(good, path="s") == {"a": 1}
    for bad in (b"", good[:-1], b"\0" * len(good), good + b"x", good[:5] + b"X" + good[6:]):
        with pytest.raises(CorruptData):
            read_single(bad, path="s")


# ---------------------------------------------------------------------- torn tails (F3)
def test_torn_tail_matrix_every_byte_of_last_record(tmp_path):
    """Truncating inside the last record cuts exactly that record, warns, and cuts nothing more."""
    base = tmp_path / "base"
    jpath = make_counter(base, 5)
    offsets = record_offsets(jpath)
    last = offsets[-1]
    full = jpath.read_bytes()
    assert reopen_value(base) == 5
    for cut in range(last + 1, len(full)):
        root = tmp_path / f"cut{cut}"
        shutil.copytree(base, root)
        j = journal_of(root, "counters", "c")
        with open(j, "r+b") as fh:
            fh.truncate(cut)
        with pytest.warns(TornTailWarning) as rec:
            assert reopen_value(root) == 4
        msg = str(rec[0].message)
        assert str(j) in msg
        assert f"offset {last}" in msg
        assert f"{cut - last} bytes" in msg
        assert j.stat().st_size == last
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert reopen_value(root) == 4
            b = open_backend(root)
            assert b.counter_add("c", 1, "r") == 5
            b.close()
        assert reopen_value(root) == 5
        shutil.rmtree(root)
    # Truncating exactly at a record boundary is not damage.
    root = tmp_path / "boundary"
    shutil.copytree(base, root)
    with open(journal_of(root, "counters", "c"), "r+b") as fh:
        fh.truncate(last)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopen_value(root) == 4


@pytest.mark.parametrize(
    "tail",
    [
        b"\0",
        b"\0" * 17,
        b"\0" * 18,
        b"\0" * 4096,
        b"\xa5",
        b"\xa5U\x00\x00",  # partial length prefix
        b"\xa5U\xff\xff\xff\xff" + b"\0" * 30,  # absurd length at the tail
        bytes(random.Random(7).getrandbits(8) for _ in range(300)),
        bytes(random.Random(8).getrandbits(8) for _ in range(5000)),
    ],
    ids=["z1", "z17", "z18", "z4096", "magic1", "partial-len", "huge-len", "garbage300", "g5000"],
)
def test_appended_tail_is_cut(tmp_path, tail):
    """Zero-filled, partial or garbage bytes after the last good record are cut with a warning."""
    jpath = make_counter(tmp_path, 3)
    size = jpath.stat().st_size
    with open(jpath, "ab") as fh:
        fh.write(tail)
    with pytest.warns(TornTailWarning, match=f"offset {size}"):
        assert reopen_value(tmp_path) == 3
    assert jpath.stat().st_size == size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopen_value(tmp_path) == 3


def test_torn_tail_written_by_a_dead_writer_is_cut_by_a_live_reader(tmp_path):
    """A process that already has the object open cuts a torn tail appended meanwhile."""
    b = open_backend(tmp_path)
    b.counter_add("c", 1, "r")
    jpath = journal_of(tmp_path, "counters", "c")
    good = jpath.stat().st_size
    rec = frame(2, b'{"v":99}')
    with open(jpath, "ab") as fh:
        fh.write(rec[:-3])  # a writer killed mid-record
    with pytest.warns(TornTailWarning):
        assert b.counter_get("c") == 1
    assert jpath.stat().st_size == good
    assert b.counter_add("c", 1, "r") == 2
    b.close()
    assert reopen_value(tmp_path) == 2


def test_zero_filled_fresh_journal_is_repaired(tmp_path):
    """A journal that is all zeros (power loss right after creation) is reset with a warning."""
    b = open_backend(tmp_path)
    b.state_set("s", "k", "1")
    b.close()
    jpath = journal_of(tmp_path, "state", "s")
    jpath.write_bytes(b"\0" * 4096)
    b = open_backend(tmp_path)
    with pytest.warns(TornTailWarning):
        assert b.state_items("s") == {}
    b.state_set("s", "k", "2")
    b.close()
    b = open_backend(tmp_path)
    assert b.state_get("s", "k") == "2"
    b.close()


def test_journal_replaced_by_foreign_content_is_corrupt(tmp_path):
    """A journal holding something else entirely (e.g. a pickle) is CorruptData, never executed."""
    make_counter(tmp_path, 2)
    jpath = journal_of(tmp_path, "counters", "c")
    jpath.write_bytes(b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system.")
    with pytest.raises(CorruptData) as ei:
        reopen_value(tmp_path)
    assert ei.value.path == str(jpath)


# ---------------------------------------------------------------------- mid-file damage (F4)
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_bit_flip_in_the_middle_is_corrupt_data(tmp_path, k):
    """Flipping one bit of record k of 10 raises CorruptData naming the file and its offset."""
    jpath = make_counter(tmp_path, 10)
    offsets = record_offsets(jpath)
    data = bytearray(jpath.read_bytes())
    pos = offsets[k] + HEADER_SIZE + 1
    data[pos] ^= 0x04
    jpath.write_bytes(bytes(data))
    with pytest.raises(CorruptData) as ei:
        reopen_value(tmp_path)
    assert ei.value.path == str(jpath)
    assert ei.value.offset == offsets[k]
    assert str(jpath) in str(ei.value)
    assert f"offset {offsets[k]}" in str(ei.value)
    # Still refused on the next open: nothing was silently skipped or cut.
    with pytest.raises(CorruptData):
        reopen_value(tmp_path)
    assert jpath.read_bytes() == bytes(data)


def test_bit_flip_in_header_record_is_corrupt_data(tmp_path):
    """Damage to the journal's header record, with records after it, is CorruptData at 0."""
    jpath = make_counter(tmp_path, 3)
    data = bytearray(jpath.read_bytes())
    data[HEADER_SIZE + 3] ^= 0x01
    jpath.write_bytes(bytes(data))
    with pytest.raises(CorruptData) as ei:
        reopen_value(tmp_path)
    assert ei.value.offset == 0


def test_absurd_length_prefix_does_not_allocate(tmp_path):
    """A 4 GB length prefix in the middle is CorruptData without a large allocation."""
    jpath = make_counter(tmp_path, 10)
    offsets = record_offsets(jpath)
    data = bytearray(jpath.read_bytes())
    struct.pack_into(">I", data, offsets[4] + 2, 0xFFFFFFF0)
    jpath.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptData) as ei:
            reopen_value(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ei.value.offset == offsets[4]
    assert peak < 16 * 1024 * 1024
    assert MAX_RECORD < 0xFFFFFFF0


# ---------------------------------------------------------------------- snapshots (F5)
def rotated(root: Path, n: int = 25, compact: int = 10) -> Path:
    """A counter at value n whose directory holds generations 2 and 3."""
    b = open_backend(root, compact)
    for _ in range(n):
        b.counter_add("c", 1, "r")
    b.close()
    d = root / "counters" / "c"
    assert {p.name for p in d.iterdir()} >= {"journal.2", "snap.2", "journal.3", "snap.3"}
    return d


@pytest.mark.parametrize("damage", ["empty", "truncated", "zeros", "garbage", "missing"])
def test_damaged_snapshot_is_rebuilt_from_previous_generation(tmp_path, damage):
    """A damaged or missing current snapshot is rebuilt from generation G-1 with a warning."""
    d = rotated(tmp_path)
    snap = d / "snap.3"
    size = snap.stat().st_size
    if damage == "empty":
        snap.write_bytes(b"")
    elif damage == "truncated":
        snap.write_bytes(snap.read_bytes()[: size // 2])
    elif damage == "zeros":
        snap.write_bytes(b"\0" * size)
    elif damage == "garbage":
        snap.write_bytes(os.urandom(size))
    else:
        snap.unlink()
    with pytest.warns(RecoveryWarning, match="rebuilt"):
        assert reopen_value(tmp_path) == 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopen_value(tmp_path) == 25


def test_damaged_snapshot_without_previous_generation_is_corrupt(tmp_path):
    """If generation G-1 is gone too, CorruptData names the snapshot file."""
    d = rotated(tmp_path)
    (d / "snap.3").write_bytes(b"\0" * 64)
    (d / "journal.2").unlink()
    with pytest.raises(CorruptData) as ei:
        reopen_value(tmp_path)
    assert ei.value.path == str(d / "snap.3")


def test_snapshot_from_another_object_or_generation_is_not_paired(tmp_path):
    """A snapshot copied from another counter or generation is detected and rebuilt."""
    d = rotated(tmp_path)
    b = open_backend(tmp_path, 10)
    for _ in range(25):
        b.counter_add("other", 2, "r")
    b.close()
    od = tmp_path / "counters" / "other"
    shutil.copy(od / "snap.3", d / "snap.3")
    with pytest.warns(RecoveryWarning):
        assert reopen_value(tmp_path) == 25
    shutil.copy(d / "snap.2", d / "snap.3")
    with pytest.warns(RecoveryWarning):
        assert reopen_value(tmp_path) == 25


def test_stale_temp_files_removed_and_orphan_snapshot_ignored(tmp_path):
    """Leftovers of an interrupted rotation do not disturb the next open."""
    d = rotated(tmp_path)
    (d / "snap.4.tmp.123.abcd").write_bytes(b"partial")
    (d / "journal.4.tmp.123.abcd").write_bytes(b"")
    (d / "snap.4").write_bytes(b"orphan: rotation died before journal.4 existed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopen_value(tmp_path) == 25
    names = {p.name for p in d.iterdir()}
    assert not any(".tmp." in n for n in names)
    assert "snap.4" not in names


def test_seal_without_next_journal_finishes_rotation(tmp_path):
    """A rotator killed after sealing generation G: the next opener finishes the rotation."""
    d = rotated(tmp_path, n=20, compact=10)  # exactly at a rotation boundary
    assert (d / "journal.3").exists()
    (d / "journal.3").unlink()
    (d / "snap.3").unlink()
    assert reopen_value(tmp_path) == 20
    assert (d / "journal.3").exists()
    b = open_backend(tmp_path)
    assert b.counter_add("c", 1, "r") == 21
    b.close()


def test_records_after_a_seal_are_corrupt(tmp_path):
    """A generation's seal must be its last record."""
    d = rotated(tmp_path, n=20, compact=10)
    j2 = d / "journal.2"
    seq = len(record_offsets(j2))
    with open(j2, "ab") as fh:
        fh.write(frame(seq, b'{"v":1000}'))
    (d / "snap.3").unlink()  # force a rebuild that must replay journal.2
    with pytest.raises(CorruptData):
        reopen_value(tmp_path)


def test_missing_journal_with_snapshot_is_corrupt(tmp_path):
    """Snapshots without any journal are reported, not silently reset."""
    d = rotated(tmp_path)
    for j in d.glob("journal.*"):
        j.unlink()
    with pytest.raises(CorruptData):
        reopen_value(tmp_path)


def test_queue_state_survives_rotations_exactly(tmp_path):
    """Queue deliveries, nacks, dead messages and delays replay identically after reopen."""
    b = open_backend(tmp_path, 7)
    for i in range(30):
        b.queue_put("q", f"m{i}", str(i), 0 if i % 4 else 60, i % 2)
    held = []
    for i in range(12):
        d = b.queue_receive("q", 60, 2)
        if i % 3 == 0:
            b.queue_ack("q", d.id, d.receipt)
        elif i % 3 == 1:
            b.queue_nack("q", d.id, d.receipt, 0, 1)  # dead
        else:
            held.append(d)
    stats, dead = b.queue_stats("q"), b.queue_dead("q")
    b.close()
    b2 = open_backend(tmp_path)
    assert b2.queue_stats("q") == stats
    assert b2.queue_dead("q") == dead
    for d in held:
        assert b2.queue_ack("q", d.id, d.receipt) is True
    b2.close()
