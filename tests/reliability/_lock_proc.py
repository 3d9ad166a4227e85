"""Real child processes for the lock and membership scenarios (L1-L7, M1-M3).

Child side, run as ``python _lock_proc.py MODE JSON_KWARGS``:

* ``holder`` — connects by URL, optionally joins a :class:`~unidist.cluster.Membership`
  (``member={"id", "ttl", "grace"}``), prints ``ready`` and then obeys one command per stdin
  line, answering one line each (see :func:`_holder`): acquire, renew, release, a fenced
  write with its lock's token, fork a sleeping child, open and close the lock's files, ...
* ``churn`` — acquires and releases a lock as fast as it can, printing every token it got
  (``tok N``) until it is killed.
* ``overlap`` — the L3 mutual-exclusion worker (identity file + a max-holders gauge).
* ``member`` — joins a membership and heartbeats until killed.

Parent side: :class:`Proc` (line protocol with deadlines, kill -9, SIGSTOP/SIGCONT) and
:func:`procs` (kills and reaps every child at exit, whatever happened).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402
from unidist.cluster import Membership  # noqa: E402
from unidist.errors import LockNotOwned  # noqa: E402
from unidist.lock import fenced_set  # noqa: E402

# ---------------------------------------------------------------------------- child side


def _say(*words: object) -> None:
    print(" ".join(str(w) for w in words), flush=True)


def _join(url: str, member: dict[str, Any] | None) -> Membership | None:
    if not member:
        return None
    return Membership(
        url,
        member_id=member["id"],
        groups=[],
        ttl=member.get("ttl", 1.0),
        grace=member.get("grace", 0.0),
    ).join()


def _holder(url: str, name: str, limit: int = 1, ttl: float | None = None, **kw: Any) -> None:
    membership = _join(url, kw.get("member"))
    be = unidist.connect(url)
    lock: unidist.SharedLock | unidist.SharedSemaphore
    if limit == 1:
        lock = unidist.SharedLock(name, backend=be, ttl=ttl)
    else:
        lock = unidist.SharedSemaphore(name, limit, backend=be, ttl=ttl)
    state = unidist.SharedState("fence", backend=be)
    _say("ready", os.getpid())
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "acquire":
            timeout = float(args[0]) if args else None
            if lock.acquire(timeout=timeout):
                _say("acquired", lock.token)
            else:
                _say("timeout")
        elif cmd == "renew":
            try:
                lock.renew()
                _say("renewed")
            except LockNotOwned:
                _say("lost", lock.lost)
        elif cmd == "release":
            try:
                lock.release()
                _say("released")
            except LockNotOwned:
                _say("notowned")
        elif cmd == "write":  # a fenced write with this object's latest token
            assert lock.token is not None
            ok = fenced_set(state, args[0], {"pid": os.getpid()}, lock.token)
            _say("accepted" if ok else "rejected", lock.token)
        elif cmd == "contend":  # a second object with the same name, same thread
            other = unidist.SharedLock(name, backend=be)
            got = other.acquire(blocking=False)
            if got:
                other.release()
            _say("contend", "acquired" if got else "refused")
        elif cmd == "fork":  # a child that sleeps with every inherited descriptor open
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(float(args[0]) if args else 60.0)
                finally:
                    os._exit(0)
            _say("forked", pid)
        elif cmd == "touch":  # a third party opens and closes the lock's files in-process
            root = Path(url.partition("?")[0][len("file://") :]) / "locks" / name
            n = 0
            for entry in sorted(root.iterdir()):
                fd = os.open(entry, os.O_RDONLY)
                os.close(fd)
                with open(entry, "rb") as fh:
                    fh.read(1)
                n += 1
            _say("touched", n)
        elif cmd == "clock":  # this process's wall clock as unidist sees it
            from unidist._clock import wall

            _say("clock", wall())
        elif cmd == "incarnation":
            _say("incarnation", membership.incarnation if membership else "-")
        elif cmd == "exit":
            if membership is not None:
                membership.leave()
            return
        else:
            _say("error", f"unknown command {cmd!r}")


def _churn(url: str, name: str, ttl: float | None = None, gate: bool = False, **kw: Any) -> None:
    lock = unidist.SharedLock(name, backend=url, ttl=ttl)
    _say("ready", os.getpid())
    if gate and sys.stdin.readline().strip() != "go":
        return
    while True:
        lock.acquire()
        _say("tok", lock.token)
        lock.release()


def _overlap(
    url: str,
    name: str,
    index: int,
    path: str,
    rounds: int,
    limit: int = 1,
    hold: float = 0.001,
    **kw: Any,
) -> None:
    """L3: under the lock write this worker's identity, sleep, re-read (a changed identity is
    an overlap); a gauge file counts holders inside (flock-protected, separate from the lock
    under test) and keeps the maximum."""
    import fcntl

    be = unidist.connect(url)
    lock: unidist.SharedLock | unidist.SharedSemaphore
    if limit == 1:
        lock = unidist.SharedLock(name, backend=be)
    else:
        lock = unidist.SharedSemaphore(name, limit, backend=be)
    me = f"{index}:{os.getpid()}".encode()
    ident = os.open(path, os.O_RDWR)
    gauge = os.open(path + ".gauge", os.O_RDWR)

    def bump(delta: int) -> int:
        fcntl.flock(gauge, fcntl.LOCK_EX)
        try:
            inside, top = (int(x) for x in os.pread(gauge, 64, 0).split())
            inside += delta
            top = max(top, inside)
            data = f"{inside} {top}".ljust(40).encode()
            os.pwrite(gauge, data, 0)
            return inside
        finally:
            fcntl.flock(gauge, fcntl.LOCK_UN)

    _say("ready", os.getpid())
    if sys.stdin.readline().strip() != "go":
        return
    violations = contentions = got = 0
    max_inside = 0
    for _ in range(rounds):
        if not lock.acquire(blocking=False):
            contentions += 1
            lock.acquire()
        got += 1
        max_inside = max(max_inside, bump(+1))
        if limit == 1:
            os.pwrite(ident, me.ljust(32), 0)
            time.sleep(hold)
            if os.pread(ident, 32, 0).rstrip() != me:
                violations += 1
        else:
            time.sleep(hold)
        bump(-1)
        lock.release()
    result = {"got": got, "violations": violations, "contentions": contentions}
    result["max_inside"] = max_inside
    _say("result", json.dumps(result))


def _member(url: str, member: dict[str, Any], **kw: Any) -> None:
    m = _join(url, member)
    assert m is not None
    _say("ready", os.getpid(), m.incarnation)
    sys.stdin.readline()  # until the parent closes stdin or kills us
    m.leave()


MODES = {"holder": _holder, "churn": _churn, "overlap": _overlap, "member": _member}


def main(argv: list[str]) -> int:
    mode, raw = argv[1], argv[2]
    MODES[mode](**json.loads(raw))
    return 0


# ---------------------------------------------------------------------------- parent side


class Proc:
    """One child: line-based stdout read with deadlines, stderr kept for failure reports."""

    def __init__(self, mode: str, env: dict[str, str] | None = None, **kwargs: Any) -> None:
        self.mode = mode
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), mode, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self._buf = b""
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _fail(self, what: str) -> AssertionError:
        return AssertionError(
            f"child {self.mode} pid {self.pid} {what} (exit {self.proc.poll()}); "
            f"stderr:\n{self.stderr()}"
        )

    def line(self, timeout: float = 30.0) -> str | None:
        """The next stdout line, or None if none came within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            poller = select.poll()  # not select(): a soak may hold more than 1,024 fds
            poller.register(fd, select.POLLIN)
            if poller.poll(left * 1000):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise self._fail("ended")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\n")
        return raw.decode(errors="replace")

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Read lines until one starts with ``prefix``; return the rest of it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.line(max(0.0, deadline - time.monotonic()))
            if text is None:
                raise self._fail(f"did not print {prefix!r} within {timeout} s")
            if text.startswith(prefix):
                return text[len(prefix) :].strip()

    def drain(self, timeout: float = 10.0) -> list[str]:
        """Every line the child still prints until it ends (call after killing it)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while (text := self.line(max(0.0, deadline - time.monotonic()))) is not None:
                out.append(text)
        except AssertionError:  # ended: its output is complete
            return out
        raise self._fail(f"still printing after {timeout} s")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def ask(self, text: str, timeout: float = 30.0) -> str:
        """Send one command and return the child's one-line answer."""
        self.send(text)
        answer = self.line(timeout)
        if answer is None:
            raise self._fail(f"did not answer {text!r} within {timeout} s")
        return answer

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


@contextlib.contextmanager
def procs() -> Iterator[list[Proc]]:
    """A list to put children in; every one is killed and reaped at exit."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for child in started:
            child.close()


def staged(kids: list[Proc], n: int, make: Callable[[], Proc], ahead: int = 4) -> Iterator[Proc]:
    """Yield ``n`` ready children made by ``make``, keeping up to ``ahead`` of them starting
    in advance (start-up stays off the clock without starting hundreds at once). Every
    child is appended to ``kids`` (see :func:`procs`) and closed once the caller moves on."""
    pending: list[Proc] = []
    made = 0
    for _ in range(n):
        while made < n and len(pending) < ahead:
            pending.append(make())
            kids.append(pending[-1])
            made += 1
        kid = pending.pop(0)
        kid.expect("ready")
        yield kid
        kid.close()


def kill_pid(pid: int) -> None:
    """SIGKILL a grandchild we do not reap (its parent, our child, is gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
