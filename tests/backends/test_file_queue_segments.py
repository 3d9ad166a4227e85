"""The file backend's queue index: bodies stay in kept journal segments, not in memory.

A queue keeps only each message's location (and, for messages put with a generated id, 24
bytes in a per-priority FIFO); journal generations that hold a live message's put record are
kept on disk and deleted once their last message is gone. These tests check what a user would
notice: the order of delivery against a few-line model of the semantics, bodies read back
from kept segments by a fresh process, disk use that falls back once messages are consumed,
duplicate detection of generated ids, snapshots that stay small, and a process many rotations
behind that catches up without damaging anything.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from unidist.backends.base import Backend
from unidist.backends.file import FileBackend
from unidist.backends.file.journal import dumps, frame


def fb(url: str, compact: int | None = None) -> FileBackend:
    b = FileBackend.from_url(url)
    assert isinstance(b, FileBackend)
    if compact is not None:
        b._cfg.compact_records = compact
    return b


def journals(d: Path) -> list[int]:
    return sorted(int(p.name.split(".")[1]) for p in d.glob("journal.*") if p.name[8:].isdigit())


class Model:
    """The queue semantics in a few lines: priority first, then put order; a nacked message
    keeps its place; it dies when nacked after ``ma`` deliveries."""

    def __init__(self, ma: int) -> None:
        self.ma = ma
        self.msgs: dict[str, list[Any]] = {}  # id -> [prio, n, body, attempts, state]
        self.n = 0

    def put(self, mid: str, body: str, prio: int) -> None:
        self.msgs[mid] = [prio, self.n, body, 0, "r"]
        self.n += 1

    def take(self, remove: bool) -> tuple[str, str, int] | None:
        ready = [(-m[0], m[1], mid) for mid, m in self.msgs.items() if m[4] == "r"]
        if not ready:
            return None
        mid = min(ready)[2]
        m = self.msgs[mid]
        m[3] += 1
        m[4] = "f"
        if remove:
            del self.msgs[mid]
        return mid, m[2], m[3]

    def nack(self, mid: str) -> None:
        m = self.msgs[mid]
        m[4] = "x" if m[3] >= self.ma else "r"

    def stats(self) -> dict[str, int]:
        states = [m[4] for m in self.msgs.values()]
        return {
            "ready": states.count("r"),
            "delayed": 0,
            "in_flight": states.count("f"),
            "dead": states.count("x"),
        }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_delivery_order_matches_the_model(tmp_path: Path, seed: int) -> None:
    """Random puts (generated and custom ids, 3 priorities, single and batched), receives and
    gets (single and batched), acks and nacks,
    with rotations every few records and a second handle taking turns: the file backend
    delivers exactly what the model says, with the same bodies and attempt counts."""
    rng = random.Random(seed)
    url = f"file://{tmp_path}/d?fsync=never"
    files = [fb(url, compact=7), fb(url, compact=11)]
    ref = Model(3)
    inflight: list[tuple[str, str]] = []  # (id, receipt)
    try:
        for step in range(1500):
            f = files[step % 2]
            r = rng.random()
            if r < 0.07:
                new = rng.random() < 0.7
                items = []
                for _ in range(rng.randint(1, 9)):
                    mid = uuid.UUID(int=rng.getrandbits(128)).hex if new else f"c{ref.n}"
                    items.append((mid, f'"b{ref.n}"', 0.0, rng.choice([0, 1])))
                    ref.put(mid, items[-1][1], items[-1][3])
                assert f.queue_put_many("q", items, new_ids=new) == [True] * len(items)
            elif r < 0.12:
                get, k = rng.random() < 0.5, rng.randint(1, 6)
                if get:
                    batch = f.queue_get_many("q", 3, k)
                else:
                    batch = f.queue_receive_many("q", 600, 3, k)
                    inflight += [(a.id, a.receipt) for a in batch]
                want = [ref.take(remove=get) for _ in range(k)]
                assert [(a.id, a.body, a.attempts) for a in batch] == [w for w in want if w]
            elif r < 0.45:
                new = rng.random() < 0.7
                mid = uuid.UUID(int=rng.getrandbits(128)).hex if new else f"c{ref.n}"
                body, prio = f'"b{ref.n}"', rng.choice([0, 0, 1, -1])
                assert f.queue_put("q", mid, body, 0, prio, new_id=new) is True
                ref.put(mid, body, prio)
            elif r < 0.8:
                get = r >= 0.65
                a = f.queue_get("q", 3) if get else f.queue_receive("q", 600, 3)
                assert (a and (a.id, a.body, a.attempts)) == ref.take(remove=get)
                if a and not get:
                    inflight.append((a.id, a.receipt))
            elif inflight:
                mid, receipt = inflight.pop(rng.randrange(len(inflight)))
                if r < 0.9:
                    assert f.queue_ack("q", mid, receipt)
                    del ref.msgs[mid]
                else:
                    assert f.queue_nack("q", mid, receipt, 0, 3)
                    ref.nack(mid)
            assert f.queue_stats("q") == ref.stats()
        assert sorted(m.id for m in files[0].queue_dead("q")) == sorted(
            mid for mid, m in ref.msgs.items() if m[4] == "x"
        )
        # A fresh process drains what is left in the same order.
        late = fb(url)
        while True:
            a = late.queue_get("q", 3)
            assert (a and (a.id, a.body, a.attempts)) == ref.take(remove=True)
            if a is None:
                break
        late.close()
    finally:
        for f in files:
            f.close()


def test_segments_are_kept_while_their_messages_need_them(tmp_path: Path) -> None:
    """A journal holding many live messages stays until they are consumed, then goes."""
    url = f"file://{tmp_path}/d?fsync=never"
    d = tmp_path / "d" / "queues" / "q"
    be = fb(url, compact=20)
    first = [uuid.uuid4().hex for _ in range(100)]  # more than a relocation takes
    items = [(mid, f'"first {i}"', 0.0, 0) for i, mid in enumerate(first)]
    assert be.queue_put_many("q", items, new_ids=True) == [True] * 100
    be.queue_put("q", "custom", '"custom body"', 0, -1)
    for i in range(400):  # many rotations while the first messages wait
        be.queue_put("q", uuid.uuid4().hex, f'"filler {i}"', 0, 1, new_id=True)
        assert be.queue_get("q", 5).body == f'"filler {i}"'  # type: ignore[union-attr]
    gens = journals(d)
    assert gens[0] == 1, gens
    assert gens[-1] > 10, gens
    assert len(gens) <= 4, f"only the pinned segment and the last generations stay: {gens}"
    # A new process reads the bodies back from the kept segment.
    other = fb(url)
    got = other.queue_receive("q", 600, 5)
    assert got is not None
    assert (got.id, got.body) == (first[0], '"first 0"')
    assert other.queue_ack("q", got.id, got.receipt)
    rest = other.queue_get_many("q", 5, 200)
    assert [(g.id, g.body) for g in rest] == [
        *((mid, f'"first {i}"') for i, mid in enumerate(first[1:], 1)),
        ("custom", '"custom body"'),
    ]
    other.close()
    for _ in range(60):  # the next rotations delete generation 1
        be.queue_put("q", uuid.uuid4().hex, '"x"', 0, 0, new_id=True)
        be.queue_get("q", 5)
    assert 1 not in journals(d)
    assert len(journals(d)) <= 3
    be.close()


def test_a_few_long_lived_messages_do_not_pin_old_journals(tmp_path: Path) -> None:
    """Messages left behind (ready, delayed, in flight, dead, custom ids) are relocated out
    of their sparse old journal, which is then deleted: disk use follows what is queued."""
    url = f"file://{tmp_path}/d?fsync=never"
    d = tmp_path / "d" / "queues" / "q"
    be = fb(url, compact=20)
    fresh = uuid.uuid4().hex
    be.queue_put("q", fresh, '"fresh body"', 0, 0, new_id=True)
    be.queue_put("q", "later", '"delayed body"', 3600, 0)
    be.queue_put("q", "held", '"in flight body"', 0, 9)
    be.queue_put("q", "dies", '"dead body"', 0, 8)
    held = be.queue_receive("q", 600, 5)
    assert held is not None
    assert held.id == "held"
    dies = be.queue_receive("q", 600, 1)
    assert dies is not None
    assert be.queue_nack("q", "dies", dies.receipt, 0, 1)  # dead after 1 attempt
    for i in range(300):
        be.queue_put("q", uuid.uuid4().hex, f'"filler {i}" {"x" * 200}', 0, 1, new_id=True)
        assert be.queue_get("q", 5) is not None
    assert journals(d)[0] > 1, journals(d)
    assert len(journals(d)) <= 3, journals(d)
    other = fb(url)  # a new process: the bodies now come from the snapshot
    assert other.queue_stats("q") == {"ready": 1, "delayed": 1, "in_flight": 1, "dead": 1}
    assert [(m.id, m.body) for m in other.queue_dead("q")] == [("dies", '"dead body"')]
    assert other.queue_ack("q", "held", held.receipt)
    got = other.queue_get("q", 5)
    assert got is not None
    assert (got.id, got.body) == (fresh, '"fresh body"')
    assert other.queue_requeue_dead("q") == 1
    got = other.queue_get("q", 5)
    assert got is not None
    assert (got.id, got.body) == ("dies", '"dead body"')
    assert other.queue_stats("q")["delayed"] == 1
    other.close()
    be.close()


def test_a_handle_many_rotations_behind_catches_up(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/d?fsync=never"
    be, late = fb(url, compact=10), fb(url, compact=10)
    pinned = uuid.uuid4().hex
    be.queue_put("q", pinned, '"pinned"', 0, -5, new_id=True)
    assert late.queue_stats("q")["ready"] == 1  # late now caches generation 1
    for i in range(300):
        be.queue_put("q", f"m{i}", f'"{i}"', 0, 0)
        if i % 2:
            be.queue_get("q", 5)
    want = [f"m{i}" for i in range(150, 300)]
    got = [late.queue_get("q", 5) for _ in range(151)]
    assert [g.id for g in got[:-1]] == want  # type: ignore[union-attr]
    assert (got[-1].id, got[-1].body) == (pinned, '"pinned"')  # type: ignore[union-attr]
    assert late.queue_get("q", 5) is None
    assert be.queue_get("q", 5) is None
    be.close()
    late.close()


def test_a_custom_id_equal_to_a_queued_generated_id_is_a_duplicate(tmp_path: Path) -> None:
    be = fb(f"file://{tmp_path}/d?fsync=never")
    mid = uuid.uuid4().hex
    assert be.queue_put("q", mid, '"one"', 0, 0, new_id=True)
    assert be.queue_put("q", mid, '"two"', 0, 0) is False
    assert be.queue_stats("q")["ready"] == 1
    got = be.queue_get("q", 5)
    assert got is not None
    assert got.body == '"one"'
    assert be.queue_put("q", mid, '"three"', 0, 0) is True  # gone: the id is free again
    be.close()


def test_snapshots_hold_locations_not_bodies(tmp_path: Path) -> None:
    """30,000 messages of 1 KB: the snapshot stays under 40 bytes per message, and a reopened
    queue keeps no per-message objects for them."""
    url = f"file://{tmp_path}/d?fsync=never"
    be = fb(url, compact=5000)
    body = '"' + "x" * 1000 + '"'
    n = 30_000
    for _ in range(n):
        be.queue_put("q", uuid.uuid4().hex, body, 0, 0, new_id=True)
    be.close()
    d = tmp_path / "d" / "queues" / "q"
    snaps = sorted(d.glob("snap.*"), key=lambda p: int(p.name[5:]))
    assert snaps
    assert snaps[-1].stat().st_size < 40 * n
    again = fb(url)
    assert again.queue_stats("q")["ready"] == n
    h = again._handle("queue", "q", create=False)
    assert h is not None
    assert h.state is not None
    assert len(h.state.msgs) == 0  # type: ignore[attr-defined]
    assert again.queue_get("q", 5).body == body  # type: ignore[union-attr]
    again.close()


def test_first_snapshot_format_still_opens(tmp_path: Path) -> None:
    """A queue written by the first format (bodies inline in the snapshot) opens and drains."""
    d = tmp_path / "d" / "queues" / "q"
    d.mkdir(parents=True, mode=0o700)
    head = {"v": 1, "kind": "queue", "name": "q", "gen": 2}
    rows = [
        ["a", '"A"', 0, 1.0, 1, 0, "r", 0.0, ""],
        ["b", '"B"', 5, 2.0, 2, 0, "r", 0.0, ""],
        ["c", '"C"', 0, 3.0, 3, 5, "x", 0.0, ""],
    ]
    (d / "snap.2").write_bytes(frame(0, dumps({**head, "state": {"seq": 4, "msgs": rows}})))
    (d / "journal.2").write_bytes(frame(0, dumps(head)))
    (d / "journal.1").write_bytes(frame(0, dumps({**head, "gen": 1})))
    be: Backend = fb(f"file://{tmp_path}/d?fsync=never")
    be.queue_put("q", "d", '"D"', 0, 0)
    assert [m.id for m in be.queue_dead("q")] == ["c"]
    got = [be.queue_get("q", 5) for _ in range(3)]
    assert [(g.id, g.body) for g in got] == [("b", '"B"'), ("a", '"A"'), ("d", '"D"')]  # type: ignore[union-attr]
    be.close()
