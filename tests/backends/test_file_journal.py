"""Journal and snapshot internals of the file backend: torn tails, corruption, snapshot damage.

Damage is done to real files between two opens of the store, the way a crash, a bad disk or
an operator would leave them; each test then checks what a user sees on the next open. The
full damage matrices live in tests/reliability (F3 torn tails, F4 mid-file damage and
repair, F5 snapshot damage); these are the focused cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unidist.backends.file import FileBackend
from unidist.backends.file.journal import HEADER_SIZE, frame, read_single, scan
from unidist.backends.file.journal_handle import TornTailWarning
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
def test_bit_flip_in_header_record_is_corrupt_data(tmp_path):
    """Damage to the journal's header record, with records after it, is CorruptData at 0."""
    jpath = make_counter(tmp_path, 3)
    data = bytearray(jpath.read_bytes())
    data[HEADER_SIZE + 3] ^= 0x01
    jpath.write_bytes(bytes(data))
    with pytest.raises(CorruptData) as ei:
        reopen_value(tmp_path)
    assert ei.value.offset == 0


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


def test_lost_write_hole_is_cut_but_garbage_in_the_middle_is_corrupt(tmp_path):
    """A zero-filled aligned sector followed by valid records (pages written back out of
    order, then power lost) is cut like a torn tail; the same stretch holding garbage is
    CorruptData (the scan never confuses the two)."""
    b = open_backend(tmp_path)
    for i in range(12):
        b.state_set("s", f"k{i}", '"' + "v" * 300 + '"')
    b.close()
    jpath = journal_of(tmp_path, "state", "s")
    offsets = record_offsets(jpath)
    full = jpath.read_bytes()
    k = next(i for i, off in enumerate(offsets) if off > 1024)  # a record past two sectors
    hole_start = offsets[k]
    zeroed = bytearray(full)
    lo = (hole_start + 511) // 512 * 512
    zeroed[hole_start : lo + 512] = bytes(lo + 512 - hole_start)  # one whole aligned sector
    jpath.write_bytes(bytes(zeroed))
    b = open_backend(tmp_path)
    with pytest.warns(TornTailWarning, match=f"offset {hole_start}.*zero-filled hole"):
        items = b.state_items("s")
    b.close()
    assert len(items) == k - 1
    assert jpath.read_bytes() == full[:hole_start]
    # garbage instead of zeros in the same place: refused, nothing cut
    garbled = bytearray(full)
    garbled[hole_start : lo + 512] = bytes(
        (7 * i + 1) % 251 + 1 for i in range(lo + 512 - hole_start)
    )
    jpath.write_bytes(bytes(garbled))
    b = open_backend(tmp_path)
    with pytest.raises(CorruptData) as ei:
        b.state_items("s")
    b.close()
    assert ei.value.offset == hole_start
    assert jpath.read_bytes() == bytes(garbled)
