"""S1: the log shipper through every kind of rotation (the Vector harness cases).

A writer appends JSON records to ``<dir>/app.log`` through an ``O_APPEND`` descriptor, as a
logging process does, while a shipper in follow mode ships them to Redis; the file is
rotated underneath in each way logrotate (or a person) does it:

* ``rename_create``: ``app.log`` → ``app.log.1``, a new ``app.log`` (logrotate ``create``);
* ``copytruncate``: copy to ``app.log.1``, then truncate ``app.log`` in place; records
  written between the copy and the truncation are logrotate's loss window;
* ``truncate_only``: truncate in place and write more than before (the offset must reset);
* ``delete_while_shipping``: delete the file while the shipper is part way through it;
* ``rotations_while_down``: several renames while no shipper runs;
* ``inode_reuse``: delete, recreate the same name (often the same inode), write more.

Pass: lost = 0 and no record stored twice in every case but copytruncate, where lost records
must all come from the copy-truncate window and are counted; corrupt = 0 (no piece of a line
is ever stored as a record, even when a truncation races a read); records re-sent (sent but
already in the store) stay within one batch.
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_s1_rotation.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from backends.redis.server import RedisServer
from tests.reliability._log_common import corrupt, fresh_prefix, line, numbers, wait_for
from tests.reliability._report import Result, count, seed
from unidist.log._store import RedisStore, stream_key
from unidist.log.shipper import Shipper

HOST = "h1"
BATCH = 50


class Writer:
    """Appends numbered records to ``app.log`` like a logging process (one O_APPEND fd)."""

    def __init__(self, directory: Path, rng: random.Random) -> None:
        self.path = directory / "app.log"
        self.rng = rng
        self.next = 0
        self.written: list[int] = []
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, how_many: int, paced: bool = True) -> list[int]:
        done = []
        for _ in range(how_many):
            os.write(self.fd, line(HOST, self.next))
            done.append(self.next)
            self.next += 1
            if paced and self.rng.random() < 0.05:
                time.sleep(0.001)  # let the shipper interleave
        self.written += done
        return done

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Shipping:
    """A follow-mode shipper in a thread; stop and start it like a service."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url, self.dir = url, directory
        self.resent = self.sent = 0
        self.shipper: Shipper | None = None
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        prefix = url.split("prefix=")[1]
        self.redis = redis.Redis.from_url(url.split("?")[0])
        self.stream = stream_key(prefix, "app")

    def start(self) -> None:
        store = RedisStore(self.url)
        self.shipper = Shipper(store, self.dir, self.dir / ".state.json", HOST, batch=BATCH)
        shipper = self.shipper

        def run() -> None:
            try:
                shipper.run(follow=True, interval=0.01)
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def stop(self) -> None:
        if self.shipper is None or self.thread is None:
            return
        self.shipper.stop.set()
        self.thread.join(30)
        self.shipper.close()
        self.shipper.store.close()
        self.sent += self.shipper.stats.records
        self.resent += self.shipper.stats.records - self.shipper.stats.stored
        self.shipper = self.thread = None
        assert not self.errors, self.errors

    def stored_count(self) -> int:
        return int(self.redis.xlen(self.stream))


def rename_create(w: Writer, s: Shipping) -> set[int]:
    w.write(300)
    os.rename(w.path, w.path.with_name("app.log.1"))
    w.reopen()
    w.write(300)
    return set()


def copytruncate(w: Writer, s: Shipping) -> set[int]:
    w.write(300)
    shutil.copyfile(w.path, w.path.with_name("app.log.1"))
    window = w.write(50, paced=False)  # after the copy, before the truncation
    os.truncate(w.path, 0)
    w.write(300)
    return set(window)


def truncate_only(w: Writer, s: Shipping) -> set[int]:
    w.write(300)
    wait_for(s.url, 300, 10)
    os.truncate(w.path, 0)
    w.write(900, paced=False)  # quickly past the old offset
    return set()


def delete_while_shipping(w: Writer, s: Shipping) -> set[int]:
    s.stop()
    w.write(1500, paced=False)
    w.close()
    s.start()
    deadline = time.monotonic() + 10
    while s.stored_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    os.unlink(w.path)  # part way through: the shipper holds it open
    s.deleted_at = s.stored_count()  # type: ignore[attr-defined]
    w.reopen()
    w.write(200)
    return set()


def rotations_while_down(w: Writer, s: Shipping) -> set[int]:
    w.write(100)
    wait_for(s.url, 100, 10)
    s.stop()
    for _ in range(4):
        w.write(100, paced=False)
        rotated = sorted(w.path.parent.glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))
        for old in rotated:
            os.rename(old, old.with_suffix(f".{int(old.suffix[1:]) + 1}"))
        os.rename(w.path, w.path.with_name("app.log.1"))
        w.reopen()
    w.write(100, paced=False)
    s.start()
    return set()


def inode_reuse(w: Writer, s: Shipping) -> set[int]:
    w.write(200)
    wait_for(s.url, 200, 10)
    s.stop()
    old_inode = os.stat(w.path).st_ino
    w.close()
    os.unlink(w.path)
    w.reopen()
    s.reused = os.stat(w.path).st_ino == old_inode  # type: ignore[attr-defined]
    w.write(300, paced=False)  # more than before: the old offset lies inside the new file
    s.start()
    return set()


CASES: dict[str, Callable[[Writer, Shipping], set[int]]] = {
    f.__name__: f
    for f in (
        rename_create,
        copytruncate,
        truncate_only,
        delete_while_shipping,
        rotations_while_down,
        inode_reuse,
    )
}


@pytest.mark.parametrize("case", list(CASES))
def test_s1_rotation_matrix(case: str, redis_server: RedisServer, tmp_path: Path) -> None:
    """Every record written is stored once, whatever the rotation (copytruncate: the loss
    is limited to its window and counted)."""
    s = seed()
    url = fresh_prefix(redis_server.url)
    rounds = count(1, 20)
    result = Result("S1", "redis", s, params={"case": case, "batch": BATCH, "rounds": rounds})
    window_total = 0
    for r in range(rounds):
        directory = tmp_path / f"r{r}"
        directory.mkdir()
        round_url = fresh_prefix(redis_server.url) if r else url
        writer = Writer(directory, random.Random(s + r))
        shipping = Shipping(round_url, directory)
        shipping.start()
        try:
            window = CASES[case](writer, shipping)
            writer.close()
            wait_for(round_url, len(set(writer.written)) - len(window), 20)
        finally:
            writer.close()
            shipping.stop()
        shipping.start()  # a restart ships anything left and re-sends nothing
        shipping.stop()
        seen = numbers(round_url)
        delivered = {n for (_, n) in seen}
        lost = set(writer.written) - delivered
        result.attempted += len(writer.written)
        result.ok += len(delivered & set(writer.written))
        result.lost += len(lost)
        result.duplicated += sum(c - 1 for c in seen.values())
        result.unexpected += len(delivered - set(writer.written))
        bad = corrupt(round_url)
        result.corrupt += len(bad)
        assert not bad, f"pieces of lines stored as records: {bad[:3]}"
        result.extra["resent"] = result.extra.get("resent", 0) + shipping.resent
        window_total += len(window)
        if hasattr(shipping, "deleted_at"):
            result.extra["stored_at_delete"] = shipping.deleted_at
        if hasattr(shipping, "reused"):
            result.extra["inode_reused"] = shipping.reused
        assert lost <= window, f"lost outside the copytruncate window: {sorted(lost - window)}"
        assert shipping.resent <= BATCH
    if case == "copytruncate":
        result.extra["copytruncate_window"] = window_total
        result.extra["window_lost"] = result.lost
    result.emit()
    assert result.duplicated == 0
    assert result.unexpected == 0
    if case != "copytruncate":
        assert result.lost == 0
    if case == "delete_while_shipping":
        assert 0 < result.extra["stored_at_delete"] < 1500, "not deleted while shipping"
