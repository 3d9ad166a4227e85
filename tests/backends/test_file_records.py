"""Records the file backend encodes directly on its hot path (counter add, bucket set).

``counter_add`` and ``state_set`` write their journal record without going through the
generic JSON encoder. These tests read the journal back and check that every such record is
byte for byte what :func:`unidist.backends.file.journal.dumps` writes for the same operation,
that another process replays it to the same state, and that text which cannot be stored
fails before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unidist.backends.file import FileBackend
from unidist.backends.file.journal import HEADER_SIZE, dumps, scan

# Keys and values with everything JSON escapes or passes through unescaped.
TEXTS = [
    "plain",
    'quote " and backslash \\',
    "controls \x00\x01\x1f\t\n\r\x7f",
    "unicode é ☃ 𝄞 \u2028\u2029",
    "",
    '{"nested": "json \\"text\\"", "n": [1, 2.5, null]}',
]


def _backend(root: Path, fsync: str = "always") -> FileBackend:
    b = FileBackend.from_url(f"file://{root}?fsync={fsync}")
    assert isinstance(b, FileBackend)
    return b


def _payloads(journal: Path) -> list[tuple[bytes, dict[str, object]]]:
    """(raw payload, decoded op) of every record after the header."""
    data = journal.read_bytes()
    sc = scan(data, path=str(journal), base=0, next_seq=0)
    assert sc.torn == 0
    ends = [off for off, _, _ in sc.records[2:]] + [sc.end]
    return [
        (data[off + HEADER_SIZE : end], op)
        for (off, _, op), end in zip(sc.records[1:], ends, strict=True)
    ]


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_counter_records_are_what_dumps_writes(tmp_path: Path, fsync: str) -> None:
    b = _backend(tmp_path / "d", fsync)
    deltas = [1, -5, 2**62, -(2**62), -(2**62), 7]
    values = []
    for d in deltas:
        values.append(b.counter_add("c", d, "r"))
    b.close()
    records = _payloads(tmp_path / "d" / "counters" / "c" / "journal.1")
    assert [op for _, op in records] == [{"v": v} for v in values]
    assert [raw for raw, _ in records] == [dumps({"v": v}) for v in values]
    b2 = _backend(tmp_path / "d", fsync)
    assert b2.counter_get("c") == values[-1]
    b2.close()


@pytest.mark.parametrize("fsync", ["always", "batch"])
def test_bucket_set_records_are_what_dumps_writes(tmp_path: Path, fsync: str) -> None:
    b = _backend(tmp_path / "d", fsync)
    pairs = [(k, v) for k in TEXTS[:4] for v in TEXTS]
    for k, v in pairs:
        b.state_set("s", k, v)
    b.close()
    records = _payloads(tmp_path / "d" / "state" / "s" / "journal.1")
    ops = [{"o": "s", "k": k, "v": v} for k, v in pairs]
    assert [op for _, op in records] == ops
    assert [raw for raw, _ in records] == [dumps(op) for op in ops]
    b2 = _backend(tmp_path / "d", fsync)
    assert b2.state_items("s") == dict(pairs)
    b2.close()


def test_unencodable_text_fails_before_writing(tmp_path: Path) -> None:
    """A lone surrogate cannot be UTF-8: the set raises and the journal is unchanged."""
    b = _backend(tmp_path / "d")
    b.state_set("s", "k", '"ok"')
    journal = tmp_path / "d" / "state" / "s" / "journal.1"
    size = journal.stat().st_size
    with pytest.raises(UnicodeEncodeError):
        b.state_set("s", "k", '"\ud800"')
    with pytest.raises(UnicodeEncodeError):
        b.state_set("s", "\udfff", '"x"')
    assert journal.stat().st_size == size
    assert b.state_items("s") == {"k": '"ok"'}
    assert b.counter_add("c", 1, "r") == 1  # the backend goes on working
    b.close()
