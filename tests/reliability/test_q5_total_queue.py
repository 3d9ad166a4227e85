"""Q5: producers and consumers in separate processes, ``kill -9``ed at random, then a full
drain and a total-queue table (Jepsen's ``total-queue`` accounting).

Two producer processes put ``count(150, 5000)`` messages each with client ids and report each
put once it has returned ("acknowledged"); two consumer processes take messages and append
each id to a record file before acking ("processed"). The parent ``kill -9``s
``count(3, 20)`` workers at seeded random instants and restarts them: with ``receive`` it
alternates consumers (killed mid-message: between recording and ``ack``) and producers; with
``get`` it kills producers only, since a consumer killed between ``get`` and its record
loses that message by design (``get`` is at-most-once). A restarted producer continues
after the put whose outcome it never reported (that one is "indeterminate"). After the
producers finish and the queue is empty the consumers stop and the queue is drained.

Table: attempted (puts started), ok (acknowledged and consumed), lost (acknowledged, never
consumed nor left in the queue), duplicated (extra consumptions), unexpected (consumed but
never put), recovered (indeterminate puts that were consumed).
Pass: lost = 0, unexpected = 0; duplicated = 0 with ``get`` (receive may duplicate what was
in flight at a kill: at-least-once).
Reproduce:
``UNIDIST_SEED=<seed> .venv/bin/python -m pytest -s tests/reliability/test_q5_total_queue.py``.
"""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import unidist
from tests.reliability._report import Result, count, seed

PROCS = Path(__file__).resolve().parent / "_queue_procs.py"
PRODUCERS = 2
CONSUMERS = 2
VT = 1.0
WORK_MS = 5


class Producer:
    """A producer process and what it reported; restartable after a kill."""

    def __init__(self, url: str, queue: str, index: int, total: int, directory: Path) -> None:
        self.url, self.queue, self.prefix, self.total = url, queue, f"p{index}", total
        self.errors = directory / f"producer-{index}.err"
        self.acked: list[str] = []
        self.indeterminate: list[str] = []
        self.next = 0
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.acked_at_start = 0
        self.start()

    def start(self) -> None:
        self.acked_at_start = len(self.acked)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(PROCS),
                "produce",
                self.url,
                self.queue,
                self.prefix,
                str(self.next),
                str(self.total),
            ],
            stdout=subprocess.PIPE,
            stderr=self.errors.open("a"),
            text=True,
        )
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("P "):
                self.acked.append(line[2:].strip())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_and_restart(self) -> bool:
        """Kill it as soon as it has reported a put since its (re)start, so mid-put most of
        the time, and start it again; False if it reported none within 5 s."""
        assert self.proc is not None
        assert self.reader is not None
        deadline = time.monotonic() + 5
        while len(self.acked) == self.acked_at_start and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            time.sleep(0.0005)
        mid = len(self.acked) > self.acked_at_start and self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join(10)
        last = int(self.acked[-1].rsplit("-", 1)[1]) if self.acked else -1
        if last + 1 < self.total:
            # the put after the last reported one may or may not have happened
            self.indeterminate.append(f"{self.prefix}-{last + 1}")
        self.next = last + 2
        if self.next < self.total:
            self.start()
        else:
            self.proc = self.reader = None  # it had (nearly) finished
        return mid

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        self.proc.wait(timeout=timeout)
        if self.reader is not None:
            self.reader.join(10)
        assert self.proc.returncode == 0, self.errors.read_text()


class Consumers:
    """The consumer processes; each (re)start writes its own record file."""

    def __init__(self, url: str, queue: str, mode: str, directory: Path) -> None:
        self.url, self.queue, self.mode, self.dir = url, queue, mode, directory
        self.procs: list[subprocess.Popen[str]] = []
        self.records: list[Path] = []
        self.current: list[Path] = []
        for _ in range(CONSUMERS):
            self.procs.append(self._start())
            self.current.append(self.records[-1])

    def _start(self) -> subprocess.Popen[str]:
        record = self.dir / f"record-{len(self.records)}.txt"
        self.records.append(record)
        return subprocess.Popen(
            [
                sys.executable,
                str(PROCS),
                "consume",
                self.url,
                self.queue,
                self.mode,
                str(record),
                str(VT),
                str(WORK_MS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=record.with_suffix(".err").open("w"),
            text=True,
        )

    def kill_and_restart(self, i: int) -> bool:
        """Kill consumer ``i`` just after it recorded a message (so mid-message, before its
        ack) and start a new one; False if it recorded nothing within 5 s (killed anyway)."""
        record = self.current[i]
        size = record.stat().st_size if record.exists() else 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if record.exists() and record.stat().st_size != size:
                break
            time.sleep(0.0005)
        mid = time.monotonic() < deadline
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.procs[i] = self._start()
        self.current[i] = self.records[-1]
        return mid

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        for proc in self.procs:  # a consumer that died by itself failed
            assert proc.returncode == -signal.SIGKILL, self.errors()

    def errors(self) -> str:
        return "".join(r.with_suffix(".err").read_text() for r in self.records)

    def consumed(self) -> collections.Counter[str]:
        seen: collections.Counter[str] = collections.Counter()
        for record in self.records:
            if record.exists():
                for line in record.read_text().splitlines():
                    seen[line.split()[0]] += 1
        return seen


@pytest.mark.multiprocess
@pytest.mark.scope("host")
@pytest.mark.parametrize("mode", ["receive", "get"])
def test_q5_kill9_producers_consumers_then_full_drain(
    backend_url: str, backend_kind: str, mode: str, tmp_path: Path
) -> None:
    """kill -9 of consumers mid-message and of producers mid-put: after a full drain nothing
    acknowledged is lost, nothing unexpected appears, and only receive duplicates."""
    rng = random.Random(s := seed())
    per = count(150, 5000)
    kills = count(3, 20)
    queue = f"q5-{mode}"
    producers: list[Producer] = []
    consumers: Consumers | None = None
    t0 = time.monotonic()
    try:
        consumers = Consumers(backend_url, queue, mode, tmp_path)
        producers = [Producer(backend_url, queue, i, per, tmp_path) for i in range(PRODUCERS)]
        victims = collections.Counter[str]()
        for k in range(kills):
            time.sleep(rng.uniform(0.1, 0.4))
            live = [p for p in producers if p.running()]
            if mode == "receive" and (k % 2 == 0 or not live):
                mid = consumers.kill_and_restart(rng.randrange(CONSUMERS))
                victims["consumer"] += 1
                victims["consumer_mid_message"] += mid
            elif live:
                mid = rng.choice(live).kill_and_restart()
                victims["producer"] += 1
                victims["producer_mid_put"] += mid
        for p in producers:
            p.wait(timeout=120)
        t_produced = time.monotonic() - t0
        q = unidist.MessageQueue(queue, backend=backend_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = q.stats()
            if st["ready"] == st["delayed"] == st["in_flight"] == 0:
                break
            time.sleep(0.05)
        consumers.stop()
        drained: list[str] = []
        while True:
            try:
                m = q.receive(block=False)
            except unidist.Empty:
                break
            assert isinstance(m.body, dict)
            drained.append(str(m.body["id"]))
            m.ack()
        dead = [str(d.body["id"]) for d in q.dead() if isinstance(d.body, dict)]
        final = q.stats()
    finally:
        for p in producers:
            if p.running() and p.proc is not None:
                p.proc.kill()
                p.proc.wait()
        if consumers is not None:
            for proc in consumers.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        unidist.backends.reset()
    acked = {i for p in producers for i in p.acked}
    indeterminate = {i for p in producers for i in p.indeterminate} - acked
    consumed = consumers.consumed()
    consumed.update(drained + dead)
    attempted = acked | indeterminate
    result = Result(
        "Q5",
        backend_kind,
        s,
        params={"mode": mode, "producers": PRODUCERS, "consumers": CONSUMERS, "kills": kills},
        attempted=len(attempted),
        ok=len(acked & set(consumed)),
        lost=len(acked - set(consumed)),
        duplicated=sum(c - 1 for c in consumed.values()),
        unexpected=len(set(consumed) - attempted),
        recovered=len(indeterminate & set(consumed)),
    )
    result.extra["killed"] = dict(victims)
    result.extra["left_in_queue"] = len(drained) + len(dead)
    result.extra["produced_s"] = round(t_produced, 1)
    result.extra["run_s"] = round(time.monotonic() - t0, 1)
    result.emit()
    assert result.lost == 0, sorted(acked - set(consumed))[:20]
    assert result.unexpected == 0
    if mode == "get":
        assert result.duplicated == 0
    else:  # a consumer killed between recording and ack: its message came back
        assert result.duplicated >= min(1, victims["consumer_mid_message"])
    assert final == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
    assert len(acked) >= per  # work happened between the kills
    # get mode kills only producers, and they may all have finished before the last kill
    assert 1 <= victims["consumer"] + victims["producer"] <= kills
