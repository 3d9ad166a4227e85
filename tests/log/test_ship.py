"""Central collection: shipping to Redis streams through rotations and outages, collecting.

The crash soaks of the shipper (kill -9 mid-batch with rotation underneath, many hosts with
store deduplication) are the reliability scenarios S2 and S4 in ``tests/reliability/``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import unidist.log
from backends.redis.server import RedisServer
from tests.log.conftest import run_proc
from unidist.errors import BackendUnavailable, UnidistError
from unidist.log.collect import Collector, collect
from unidist.log.shipper import RedisStore, Shipper, ship


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:
    """A fresh key prefix on the session redis-server."""
    return f"{redis_server.url}?prefix=l{uuid.uuid4().hex[:10]}:"


def stored(url: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every (record id, record) in the store at ``url``, all tracks."""
    store = RedisStore(url)
    try:
        out = []
        for track in store.tracks():
            after = "-"
            while True:
                page = store.read(track, after, 5000)
                if not page:
                    break
                out += [(rid, json.loads(raw)) for _, rid, raw in page]
                after = page[-1][0]
        return out
    finally:
        store.close()


def _write(log_dir: Path, track: str, start: int, count: int, host: str = "h1") -> None:
    unidist.log.setup(dir=log_dir, console="off", rotate="off", stdlib=False, host=host)
    log = unidist.log.get_logger(track)
    for n in range(start, start + count):
        log.info("rec", n=n)


def _numbers(url: str) -> collections.Counter[int]:
    return collections.Counter(rec["n"] for _, rec in stored(url))


def test_copytruncate_and_rename(tmp_path: Path, store_url: str) -> None:
    """copytruncate (copy keeps the fingerprint) and rename rotation lose and repeat nothing."""
    _write(tmp_path, "app", 0, 300)
    ship(store_url, dir=tmp_path)
    _write(tmp_path, "app", 300, 200)  # not shipped yet when logrotate copies
    shutil.copyfile(tmp_path / "app.log", tmp_path / "app.log.1")
    os.truncate(tmp_path / "app.log", 0)
    _write(tmp_path, "app", 500, 100)
    ship(store_url, dir=tmp_path)
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(tmp_path / "app.log", tmp_path / "app.log.1")
    _write(tmp_path, "app", 600, 100)
    ship(store_url, dir=tmp_path)
    assert _numbers(store_url) == collections.Counter(range(700))


def test_rotations_while_down_truncate_and_inode_reuse(tmp_path: Path, store_url: str) -> None:
    """Rotations while the shipper is down, truncation, and delete+recreate are all shipped."""
    unidist.log.setup(dir=tmp_path, console="off", rotate=3000, keep=50, stdlib=False)
    log = unidist.log.get_logger("svc")
    for n in range(100):
        log.info("rec", n=n)
    ship(store_url, dir=tmp_path)
    for n in range(100, 400):  # several rotations with no shipper running
        log.info("rec", n=n)
    ship(store_url, dir=tmp_path)
    assert _numbers(store_url) == collections.Counter(range(400))
    for path in tmp_path.glob("svc.log*"):
        path.unlink()  # everything shipped; delete, then the same name comes back
    _write(tmp_path, "svc", 400, 50)
    ship(store_url, dir=tmp_path)
    os.truncate(tmp_path / "svc.log", 0)
    _write(tmp_path, "svc", 450, 50)
    ship(store_url, dir=tmp_path)
    assert _numbers(store_url) == collections.Counter(range(500))


def test_deleted_while_open_is_read_to_the_end(tmp_path: Path, store_url: str) -> None:
    """A file deleted after the shipper opened it is still shipped to its end."""
    _write(tmp_path, "d", 0, 100)
    store = RedisStore(store_url)
    shipper = Shipper(store, tmp_path, tmp_path / "state.json", "h1")
    try:
        assert shipper.run_once() == 100
        _write(tmp_path, "d", 100, 50)
        (tmp_path / "d.log").unlink()
        assert shipper.run_once() == 50
        assert shipper.run_once() == 0
    finally:
        shipper.close()
        store.close()
    assert _numbers(store_url) == collections.Counter(range(150))
    assert json.loads((tmp_path / "state.json").read_text())["files"] == {}


def test_lost_state_file_adds_no_duplicates(tmp_path: Path, store_url: str) -> None:
    """Shipping again from scratch (state file lost) stores nothing twice."""
    _write(tmp_path, "x", 0, 500)
    first = unidist.log.ship(store_url, dir=tmp_path, batch=64)
    for state in tmp_path.glob(".ship-state-*.json"):
        state.unlink()
    again = ship(store_url, dir=tmp_path, batch=64)
    assert (first.stored, again.records, again.stored) == (500, 500, 0)
    assert _numbers(store_url) == collections.Counter(range(500))


def test_store_down_then_back(tmp_path: Path) -> None:
    """With Redis down a one-shot ship raises BackendUnavailable and saves nothing; a following
    shipper waits it out and delivers everything once the server is back."""
    with RedisServer() as server:
        url = f"{server.url}?prefix=down:"
        _write(tmp_path, "s", 0, 200)
        server.kill()
        with pytest.raises(BackendUnavailable) as info:
            ship(url, dir=tmp_path, retry_for=0.5)
        assert "127.0.0.1" in str(info.value)
        assert not list(tmp_path.glob(".ship-state-*.json"))
        stop = threading.Event()
        result: list[Any] = []
        worker = threading.Thread(
            target=lambda: result.append(
                ship(url, dir=tmp_path, follow=True, interval=0.05, stop=stop)
            )
        )
        worker.start()
        time.sleep(1.0)
        _write(tmp_path, "s", 200, 100)
        server.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(_numbers(url).values()) < 300:
            time.sleep(0.1)
        stop.set()
        worker.join(30)
        assert _numbers(url) == collections.Counter(range(300))
        assert result[0].stored == 300


def test_one_shipper_per_state_file(tmp_path: Path, store_url: str) -> None:
    """A second shipper on the same state file is refused while the first runs."""
    _write(tmp_path, "x", 0, 10)
    stop = threading.Event()
    worker = threading.Thread(
        target=ship, args=(store_url,), kwargs={"dir": tmp_path, "follow": True, "stop": stop}
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob(".ship-state-*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(UnidistError, match="another shipper"):
            ship(store_url, dir=tmp_path)
    finally:
        stop.set()
        worker.join(10)


@pytest.mark.multiprocess
def test_collect_survives_kills_exactly_once(tmp_path: Path, store_url: str) -> None:
    """A collector kill -9'ed mid-run and restarted files each record exactly once per day."""
    for i, host in enumerate(("a", "b")):
        _write(tmp_path / host, "t", i * 3000, 3000, host=host)
        ship(store_url, dir=tmp_path / host, host=host)
    to = tmp_path / "archive"
    rng = random.Random(7)
    state = to / ".collect-state.json"
    for _ in range(3):
        before = state.stat().st_mtime_ns if state.exists() else 0
        proc = run_proc("collect", store_url, str(to), "40")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not state.exists() or state.stat().st_mtime_ns == before
        ):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))  # mid-run: between or inside batches
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stats = collect(store_url, to)
    counts: collections.Counter[int] = collections.Counter()
    for path in to.glob("*/t/*.log"):
        host = path.parent.parent.name
        for line in path.read_bytes().splitlines():
            rec = json.loads(line)
            assert rec["host"] == host
            assert path.stem == rec["timestamp"][:10]
            counts[rec["n"]] += 1
    assert counts == collections.Counter(range(6000))
    assert stats.records < 6000  # the killed runs did part of the work
    assert (to / "a").stat().st_mode & 0o777 == 0o700


def test_stream_is_capped(tmp_path: Path, store_url: str) -> None:
    """maxlen caps each track's stream (approximately), keeping the newest records."""
    _write(tmp_path, "capped", 0, 3000)
    stats = ship(store_url, dir=tmp_path, maxlen=500, batch=100)
    assert stats.stored == 3000
    numbers = sorted(_numbers(store_url))
    assert 500 <= len(numbers) < 1000
    assert numbers[-1] == 2999
    assert numbers == list(range(numbers[0], 3000))


def test_truncation_between_scan_and_read_ships_no_piece_of_a_line(
    tmp_path: Path, store_url: str
) -> None:
    """A file truncated and written again between the shipper's scan and its read is not
    read at the old offset (which would ship the middle of a new line as a record)."""
    _write(tmp_path, "tr", 0, 300)
    ship(store_url, dir=tmp_path)
    (state,) = tmp_path.glob(".ship-state-*.json")  # everything shipped so far
    store = RedisStore(store_url)
    shipper = Shipper(store, tmp_path, state, "h1")
    try:
        sources = shipper._scan()  # fingerprint and offset of the 300-record file
        os.truncate(tmp_path / "tr.log", 0)
        _write(tmp_path, "tr", 300, 700)  # longer than before: the old offset is inside
        for src in sources:
            shipper._ship_source(src)
        shipper.run_once()
    finally:
        shipper.close()
        store.close()
    raw = [rec for _, rec in stored_raw(store_url)]
    assert all(r.startswith(b"{") for r in raw), [r for r in raw if not r.startswith(b"{")][:3]
    assert _numbers(store_url) == collections.Counter(range(1000))


def stored_raw(url: str) -> list[tuple[bytes, bytes]]:
    """Every (record id, raw line) in the store at ``url``, all tracks."""
    store = RedisStore(url)
    try:
        out = []
        for track in store.tracks():
            out += [(rid, raw) for _, rid, raw in store.read(track, "-", 100000)]
        return out
    finally:
        store.close()


def test_overlapping_resends_store_each_line_once(store_url: str) -> None:
    """The store skips the lines of a chunk that start below what it already holds for that
    (host, file), also when the re-sent chunk starts before and ends after it (a batch
    re-sent with another batch size) or the held offset falls inside a line."""
    lines = [b'{"n":%d}\n' % n for n in range(100)]
    starts = [sum(len(line) for line in lines[:n]) for n in range(101)]
    store = RedisStore(store_url)
    try:
        assert store.append("o", "h1", "fp", 0, b"".join(lines[:40])) == 40
        assert store.append("o", "h1", "fp", starts[20], b"".join(lines[20:70])) == 30
        assert store.append("o", "h1", "fp", 0, b"".join(lines[:70])) == 0
        assert store.append("o", "h1", "fp", 0, b"".join(lines)) == 30
        other = b"".join(lines[:10])
        assert store.append("o", "h2", "fp", 0, other) == 10  # another host: its own ids
        # An offset inside a line (never saved by a shipper): that line counts as held.
        store.redis.set(f"{store.prefix}{{log:m}}:o:h1:fp", starts[3] + 2)
        assert store.append("m", "h1", "fp", 0, b"".join(lines[:10])) == 6
        held = store.read("o", "-", 1000)
        mid = store.read("m", "-", 1000)
        # Records of 1 KB: a chunk spans several stream entries, and the stored offset falls
        # inside one of them.
        big = [b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 1000) for n in range(100)]
        at = [sum(len(line) for line in big[:n]) for n in range(101)]
        assert store.append("k", "h1", "fp", 0, b"".join(big[:37])) == 37
        assert store.append("k", "h1", "fp", 0, b"".join(big)) == 63
        packed = store.redis.xlen(f"{store.prefix}{{log:k}}:s")
        kept = store.read("k", "-", 1000)
    finally:
        store.close()
    assert 4 < packed < 20
    assert [(rid, raw + b"\n") for _, rid, raw in kept] == [
        (b"h1/fp/%d" % at[n], big[n]) for n in range(100)
    ]
    ids = [rid for _, rid, _ in held]
    assert ids[:100] == [b"h1/fp/%d" % s for s in starts[:100]]
    assert [raw for _, _, raw in held[:100]] == [line[:-1] for line in lines]
    assert ids[100:] == [b"h2/fp/%d" % s for s in starts[:10]]
    assert [rid for _, rid, _ in mid] == [b"h1/fp/%d" % s for s in starts[4:10]]


def test_batches_cut_at_batch_size_and_long_lines_whole(tmp_path: Path, store_url: str) -> None:
    """Batches hold ``batch`` records (fewer at the end of the file), a record longer than
    the batch byte cap is shipped whole, and a final line without its newline waits."""
    _write(tmp_path, "b", 0, 2500)
    with open(tmp_path / "b.log", "ab") as fh:
        big = json.dumps({"n": 2500, "blob": "x" * (5 << 20)}).encode()
        fh.write(big + b"\n")
    _write(tmp_path, "b", 2501, 499)
    with open(tmp_path / "b.log", "ab") as fh:
        fh.write(b'{"n": 3000, "partial":')
    stats = ship(store_url, dir=tmp_path, batch=1000)
    assert (stats.records, stats.stored) == (3000, 3000)
    # 1000, 1000, then 500 before the big record, which is cut off as soon as the next
    # read reaches the byte cap, the big record alone, the rest.
    assert stats.batches == 5
    raws = [raw for _, raw in stored_raw(store_url)]
    assert [json.loads(raw)["n"] for raw in raws] == list(range(3000))
    assert big in raws


def test_packed_entries_read_as_records(tmp_path: Path, store_url: str) -> None:
    """Records share stream entries (about 16 KiB each), yet every reader sees one record per
    line with its own id (the byte offset in the file), in order, across pages of any size;
    entries of one record each (older shippers) read the same way."""
    _write(tmp_path, "p", 0, 2000)
    raw_lines = (tmp_path / "p.log").read_bytes().splitlines(keepends=True)
    offsets = [sum(len(line) for line in raw_lines[:n]) for n in range(len(raw_lines))]
    stats = ship(store_url, dir=tmp_path, host="h1")
    assert stats.stored == 2000
    store = RedisStore(store_url)
    try:
        entries = store.redis.xlen(f"{store.prefix}{{log:p}}:s")
        assert 5 < entries < 200  # packed: far fewer entries than records
        fp = next(iter(json.loads(next(tmp_path.glob(".ship-state-*.json")).read_text())["files"]))
        forward, after = [], "-"
        while page := store.read("p", after, 3):
            forward += page
            after = page[-1][0]
        backward, before = [], "+"
        while page := store.read_reverse("p", before, 2):
            backward += page
            before = page[-1][0]
        # one record per entry, as older shippers stored them
        store.redis.xadd(f"{store.prefix}{{log:p}}:s", {"id": "old/fp/0", "r": '{"n": -1}'})
        last = store.read_reverse("p", "+", 1)
    finally:
        store.close()
    assert [rid for _, rid, _ in forward] == [f"h1/{fp}/{o}".encode() for o in offsets]
    assert [raw + b"\n" for _, _, raw in forward] == raw_lines
    assert backward == forward[::-1]
    assert [(rid, raw) for _, rid, raw in last] == [(b"old/fp/0", b'{"n": -1}')]


def test_collect_batches_are_records_not_entries(tmp_path: Path, store_url: str) -> None:
    """``collect(batch=N)`` copies about N records per state-file round (not N packed
    entries of dozens of records each), and files every record once."""
    _write(tmp_path / "h", "c", 0, 3000, host="h")
    ship(store_url, dir=tmp_path / "h", host="h")
    to = tmp_path / "archive"
    to.mkdir()
    store = RedisStore(store_url)
    try:
        collector = Collector(store, to, None, 500)
        rounds = []
        while copied := collector.run_once():
            rounds.append(copied)
    finally:
        store.close()
    assert sum(rounds) == 3000
    assert len(rounds) >= 3, rounds
    assert max(rounds) <= 1000, rounds
    (day,) = to.glob("h/c/*.log")
    assert [json.loads(line)["n"] for line in day.read_bytes().splitlines()] == list(range(3000))


def test_read_chunk_cuts_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a file batch by batch yields each complete line once, in order, at most
    ``max_lines`` per batch and at most the byte cap unless one line is longer, whatever
    the first read's size; a last line without its newline is not read."""
    from unidist.log import shipper

    rng = random.Random(11)
    for cap in (shipper._CHUNK, 700):
        monkeypatch.setattr(shipper, "_CHUNK", cap)
        for trial in range(100):
            lines = [b"x" * rng.randint(0, 900) + b"\n" for _ in range(rng.randint(0, 300))]
            path = tmp_path / f"{cap}-{trial}.log"
            path.write_bytes(b"".join(lines) + b"y" * rng.randint(0, 50))
            max_lines, hint = rng.randint(1, 50), rng.randint(0, 100_000)
            fd = os.open(path, os.O_RDONLY)
            try:
                offset, got = 0, []
                while True:
                    chunk, count = shipper.read_chunk(fd, offset, max_lines, hint)
                    if not chunk:
                        break
                    assert chunk.endswith(b"\n")
                    assert count == chunk.count(b"\n") <= max_lines
                    assert len(chunk) <= cap or count == 1
                    got.append(chunk)
                    offset += len(chunk)
            finally:
                os.close(fd)
            assert b"".join(got) == b"".join(lines), (cap, trial)
