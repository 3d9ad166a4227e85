"""Workers for the lock, semaphore and counter conformance tests, and the helpers that run them.

A worker is a function ``fn(start, **kwargs) -> dict`` that connects to its backend *by URL*,
sets itself up, calls ``start()`` (the start barrier) and returns a JSON-able result. The same
function runs as a thread (backends shared only inside one process: ``memory://``) or as a
child process (backends shared across processes: ``file://``, ``redis://``), so one test
covers every backend with the workers each backend can share.

Child protocol, run as ``python _workers.py COMMAND JSON_KWARGS``: the child prints
``ready`` once set up and waits for a ``go`` line on stdin; it ends by printing
``result JSON``. Workers that hold something until they are killed print a line of their own
(``held ...``, ``done ...``) and then block on stdin. Nothing here sleeps to wait for another
party: the parent uses the ready/go handshake, and ``time.sleep`` only stands for work done
while holding a lock.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402
from unidist.backends import Backend  # noqa: E402

Start = Callable[[], object]
Result = dict[str, Any]

# ---------------------------------------------------------------------------- expectations
# Per-backend expectations shared by the lock, semaphore and counter tests: data, so that one
# test body runs on every backend.

# A holder that gets killed carries this lease on every cross-process backend.
HOLDER_TTL = 2.0
# Seconds from the holder's kill -9 until another process must hold its lock or slot: on
# file:// the kernel drops a dead process's flock at once (well before its lease ends); on
# Redis only the key's expiry frees it.
HANDOVER_BOUND = {"file": 1.0, "redis": HOLDER_TTL + 1.0}
# How each backend is reopened so that what it persists survives a restart: memory keeps
# counters (and fencing-token high-water marks, never locks) only in its ?snapshot= file.
DURABLE_URL: dict[str, Callable[[str, Path], str]] = {
    "memory": lambda url, tmp: f"{url}?snapshot={tmp / 'snapshot.json'}&interval=60",
    "file": lambda url, tmp: url,
    "redis": lambda url, tmp: url,
}

# ---------------------------------------------------------------------------- workers


def locked_file_increments(
    start: Start, index: int, url: str, name: str, path: str, iterations: int
) -> Result:
    """lock → read a plain file → write value+1 → unlock, ``iterations`` times.

    Returns ``fences``: [value read, fencing token, worker index] per acquisition, and
    ``contended``: how many acquisitions found the lock taken first.
    """
    lock = unidist.SharedLock(name, backend=url)
    fd = os.open(path, os.O_RDWR)
    fences: list[list[int]] = []
    contended = 0
    try:
        start()
        for _ in range(iterations):
            if not lock.acquire(blocking=False):
                contended += 1
                lock.acquire()
            try:
                value = int(os.pread(fd, 32, 0))
                os.sched_yield()  # let any other holder run between read and write
                # Fixed width, written in place: a reader never sees a half-empty file, so a
                # broken lock shows up as lost updates, not as a crash.
                os.pwrite(fd, b"%020d" % (value + 1), 0)
                token = lock.token
            finally:
                lock.release()
            fences.append([value, token if token is not None else -1, index])
    finally:
        os.close(fd)
    return {"fences": fences, "contended": contended}


def counter_increments(start: Start, index: int, url: str, name: str, iterations: int) -> Result:
    """``incr()`` a counter ``iterations`` times without any lock; return every value seen."""
    counter = unidist.SharedCounter(name, backend=url)
    start()
    return {"values": [counter.incr() for _ in range(iterations)]}


def _claim_slot(slots_dir: str, limit: int) -> int | None:
    """Create the first free ``slot-K`` marker (O_EXCL) among ``limit``; None if all exist."""
    for k in range(limit):
        try:
            fd = os.open(os.path.join(slots_dir, f"slot-{k}"), os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return k
    return None


def semaphore_slots(
    start: Start,
    index: int,
    url: str,
    name: str,
    limit: int,
    slots_dir: str,
    rounds: int,
    hold: float,
) -> Result:
    """Enter the semaphore ``rounds`` times; inside, claim one of ``limit`` O_EXCL markers.

    Every holder owns at most one marker, created after acquiring and removed before
    releasing, so finding all ``limit`` markers taken means more than ``limit`` holders
    were inside at once (a violation).
    """
    sem = unidist.SharedSemaphore(name, limit=limit, backend=url)
    entered = violations = 0
    slots: list[int] = []
    start()
    for _ in range(rounds):
        with sem:
            entered += 1
            slot = _claim_slot(slots_dir, limit)
            time.sleep(hold)  # the work done inside
            if slot is None:
                violations += 1
            else:
                slots.append(slot)
                os.unlink(os.path.join(slots_dir, f"slot-{slot}"))
    return {"entered": entered, "violations": violations, "slots": slots}


def fair_contender(
    start: Start, index: int, url: str, name: str, duration: float, hold: float
) -> Result:
    """Take the lock, hold it ``hold`` seconds, release; repeat for ``duration`` seconds.

    Returns the acquisition ``count``, the summed measured hold time ``held`` (from acquire
    returning to release being called) and wall-clock ``begin``/``end`` of the run.
    """
    lock = unidist.SharedLock(name, backend=url)
    count = 0
    held = 0.0
    start()
    begin = time.time()
    deadline = time.monotonic() + duration
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not lock.acquire(timeout=left):
            break
        t0 = time.perf_counter()
        time.sleep(hold)
        t1 = time.perf_counter()
        lock.release()
        count += 1
        held += t1 - t0
    return {"count": count, "held": held, "begin": begin, "end": time.time()}


# ---------------------------------------------------------------------------- child-only jobs
# These run only as child processes: they are killed, or they fork.


def hold_until_killed(
    start: Start, index: int, url: str, name: str, ttl: float | None, limit: int = 1
) -> Result:
    """Take the lock (a semaphore slot when ``limit`` > 1), print ``held TOKEN``, block."""
    lock: unidist.SharedLock | unidist.SharedSemaphore
    if limit == 1:
        lock = unidist.SharedLock(name, backend=url, ttl=ttl)
    else:
        lock = unidist.SharedSemaphore(name, limit=limit, backend=url, ttl=ttl)
    if not lock.acquire(timeout=30):
        return {"error": "could not acquire"}
    print(f"held {lock.token}", flush=True)
    sys.stdin.read()  # until kill -9 (or stdin closes)
    return {}


def incr_until_killed(start: Start, index: int, url: str, name: str, amount: int) -> Result:
    """``incr(amount)``, print ``done VALUE`` once it returned, then block until killed."""
    value = unidist.SharedCounter(name, backend=url).incr(amount)
    print(f"done {value}", flush=True)
    sys.stdin.read()
    return {}


def read_counter(start: Start, index: int, url: str, name: str) -> Result:
    """Read a counter from a fresh process."""
    return {"value": unidist.SharedCounter(name, backend=url).get()}


def fork_and_release(start: Start, index: int, url: str, name: str) -> Result:
    """Hold the lock, fork; the child tries to release it and to take it, then exits.

    Child exit codes: 0 = release raised LockNotOwned and a fresh acquire failed (correct);
    10 = release succeeded; 11 = release raised something else; 12 = the child's object
    still claims to hold the lock; 13 = the child could acquire the parent's lock.
    """
    lock = unidist.SharedLock(name, backend=url)
    lock.acquire()
    token = lock.token
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            lock.release()
            code = 10
        except unidist.LockNotOwned:
            pass
        except BaseException:
            code = 11
        if code == 0 and lock.held():
            code = 12
        if code == 0:
            try:
                if unidist.SharedLock(name, backend=url).acquire(blocking=False):
                    code = 13
            except BaseException:
                code = 11
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    owner = lock.owner() or {}
    result = {
        "child_exit": os.waitstatus_to_exitcode(status),
        "token": token,
        "locked": lock.locked(),
        "owner_pid": owner.get("pid"),
        "owner_token": owner.get("token"),
        "pid": os.getpid(),
    }
    lock.release()  # the parent's release still works
    return result


def fork_then_hold(start: Start, index: int, url: str, name: str, ttl: float | None) -> Result:
    """Hold the lock, fork a child that sleeps, print ``held TOKEN CHILD_PID``, block."""
    lock = unidist.SharedLock(name, backend=url, ttl=ttl)
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let the parent's pipes close when the parent dies
            os.dup2(devnull, fd)
        time.sleep(60)  # a long-lived child; the test kills it
        os._exit(0)
    print(f"held {lock.token} {pid}", flush=True)
    sys.stdin.read()
    return {}


COMMANDS: dict[str, Callable[..., Result]] = {
    f.__name__: f
    for f in (
        locked_file_increments,
        counter_increments,
        semaphore_slots,
        fair_contender,
        hold_until_killed,
        incr_until_killed,
        read_counter,
        fork_and_release,
        fork_then_hold,
    )
}


def _process_start() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)


def main(argv: list[str]) -> int:
    command, raw = argv[1], argv[2]
    result = COMMANDS[command](start=_process_start, **json.loads(raw))
    print("result " + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------- parent side


class Child:
    """One worker child process: line-based stdout with deadlines, stderr kept for reports."""

    def __init__(self, command: str, **kwargs: Any) -> None:
        self.command = command
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), command, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _fail(self, what: str) -> AssertionError:
        return AssertionError(
            f"child {self.command} pid {self.pid} {what} (exit {self.proc.poll()}); "
            f"stderr:\n{self.stderr()}"
        )

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Read stdout lines until one starts with ``prefix``; return the rest of it."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, _, self._buf = self._buf.partition(b"\n")
                text = line.decode(errors="replace")
                if text.startswith(prefix):
                    return text[len(prefix) :].strip()
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"did not print {prefix!r} within {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._fail(f"ended without printing {prefix!r}")
                self._buf += chunk

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 60.0) -> Result:
        """The worker's result; fails with its stderr if it did not end cleanly in time."""
        data = json.loads(self.expect("result ", timeout))
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise self._fail("did not exit after its result") from None
        if code != 0:
            raise self._fail("failed")
        assert isinstance(data, dict)
        return data

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()


@contextmanager
def children(command: str, n: int = 1, **kwargs: Any) -> Iterator[list[Child]]:
    """Start ``n`` children running ``command``; kill and reap any leftovers at exit."""
    started: list[Child] = []
    try:
        for i in range(n):
            started.append(Child(command, index=i, **kwargs))
        yield started
    finally:
        for child in started:
            child.close()


def run_in_processes(
    command: str, n: int, timeout: float, on_go: Start | None = None, **kwargs: Any
) -> list[Result]:
    """Run ``n`` child workers from a common start (ready/go); return their results.

    ``on_go`` is called once every worker has been told to go (e.g. to release a lock the
    caller held so that all workers queue up on it before any of them gets it).
    """
    with children(command, n, **kwargs) as kids:
        for kid in kids:
            kid.expect("ready")
        for kid in kids:
            kid.go()
        if on_go is not None:
            on_go()
        deadline = time.monotonic() + timeout
        return [kid.result(max(1.0, deadline - time.monotonic())) for kid in kids]


def run_in_threads(
    command: str, n: int, timeout: float, on_go: Start | None = None, **kwargs: Any
) -> list[Result]:
    """Run ``n`` worker threads from a common start (a Barrier); join them all.

    ``on_go`` as for :func:`run_in_processes`."""
    fn = COMMANDS[command]
    barrier = threading.Barrier(n + 1)
    results: list[Result | None] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            results[i] = fn(start=lambda: barrier.wait(timeout), index=i, **kwargs)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=target, args=(i,), name=f"{command}-{i}", daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        pass  # a worker failed during set-up; its error is raised below
    if on_go is not None:
        on_go()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"worker threads still running after {timeout} s: {alive}"
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def run_workers(
    backend: Backend,
    command: str,
    n: int,
    timeout: float = 60.0,
    on_go: Start | None = None,
    **kwargs: Any,
) -> list[Result]:
    """``n`` workers sharing ``backend``: threads if it is shared only inside one process
    (scope ``process``), else child processes that connect by URL (``kwargs['url']``)."""
    if backend.scope == "process":
        return run_in_threads(command, n, timeout, on_go, **kwargs)
    return run_in_processes(command, n, timeout, on_go, **kwargs)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
