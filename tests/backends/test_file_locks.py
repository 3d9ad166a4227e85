"""The file backend's lock_* methods, driven directly, with real processes, kill -9 and fork.

Every test gets a fresh data directory. Multi-process tests run this very file as a script
(``python test_file_locks.py JOB JSON``): a child prints ``ready`` once connected, waits for a
``go`` line on stdin, prints what the test needs (``held TOKEN``, ``result JSON``) and, for
jobs that hold a lock until killed, blocks on stdin. Soak variants are ``slow``; the default
run covers each scenario in a bounded form.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist.backends  # noqa: E402
from unidist.backends.base import LockGrant  # noqa: E402
from unidist.backends.file import FileBackend  # noqa: E402
from unidist.errors import BackendUnavailable, CorruptData, InvalidName  # noqa: E402

HERE = Path(__file__).resolve()
INFO = {"host": "test", "pid": os.getpid(), "thread": "main"}


# ---------------------------------------------------------------------------- helpers


def acquire(
    be: FileBackend,
    name: str,
    limit: int = 1,
    ttl: float | None = None,
    timeout: float = 30.0,
    info: dict[str, Any] | None = None,
    holder: str | None = None,
) -> tuple[LockGrant, int]:
    """Blocking acquire as the facade does it: register, wait, retry. Returns the grant and
    how many times the caller had to wait (0 = uncontended)."""
    holder = holder or uuid.uuid4().hex
    record = info if info is not None else {"pid": os.getpid()}
    deadline = time.monotonic() + timeout
    grant = be.lock_acquire(name, limit, holder, record, ttl, waiting=True)
    waits = 0
    while grant is None:
        left = deadline - time.monotonic()
        if left <= 0:
            be.lock_cancel_wait(name, holder)
            raise TimeoutError(f"lock {name!r} not acquired within {timeout} s")
        waits += 1
        be.lock_wait(name, min(left, 0.5), holder)
        grant = be.lock_acquire(name, limit, holder, record, ttl, waiting=True)
    return grant, waits


class Child:
    """A child process running a job of this file; line-oriented stdout, stdin as control."""

    def __init__(self, job: str, pass_fds: tuple[int, ...] = (), **kwargs: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), job, json.dumps(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            pass_fds=pass_fds,
        )
        self.pid = self.proc.pid

    def line(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"child {self.pid}: no output within {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            raise EOFError(f"child {self.pid} exited ({self.proc.wait()}) without output")
        return text.rstrip("\n")

    def expect(self, word: str, timeout: float = 30.0) -> str:
        text = self.line(timeout)
        head, _, rest = text.partition(" ")
        assert head == word, f"child {self.pid}: expected {word!r}, got {text!r}"
        return rest

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 60.0) -> Any:
        return json.loads(self.expect("result", timeout))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_all(job: str, n: int, **kwargs: Any) -> list[Child]:
    """Start ``n`` children, wait until every one is ready, then release them together."""
    kids = [Child(job, index=i, **kwargs) for i in range(n)]
    for kid in kids:
        kid.expect("ready", 60)
    for kid in kids:
        kid.go()
    return kids


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    yield "file://" + str(tmp_path / "data")
    unidist.backends.reset()


@pytest.fixture
def be(url: str) -> FileBackend:
    backend = unidist.backends.connect(url)
    assert isinstance(backend, FileBackend)
    return backend


@pytest.fixture
def kids() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for kid in started:
        kid.kill()
        kid.close()


# ---------------------------------------------------------------------------- one process


def test_grant_owners_release_and_tokens(be: FileBackend) -> None:
    g1 = be.lock_acquire("job", 1, "h1", INFO, None)
    assert g1 is not None
    assert (g1.name, g1.holder, g1.expires_at) == ("job", "h1", None)
    assert abs(g1.acquired_at - time.time()) < 5
    assert be.lock_acquire("job", 1, "h2", INFO, None) is None
    owners = be.lock_owners("job")
    expected = {**INFO, "holder": "h1", "token": g1.token, "acquired_at": g1.acquired_at}
    assert owners == [{**expected, "expires_at": None}]
    assert be.locks() == {"job": owners}
    assert be.lock_release("job", "h1") is True
    assert be.lock_release("job", "h1") is False  # released already
    assert be.lock_release("job", "never") is False
    assert be.lock_owners("job") == []
    assert be.locks() == {}
    g2 = be.lock_acquire("job", 1, "h2", INFO, 30.0)
    assert g2 is not None
    assert g2.token > g1.token
    assert g2.expires_at is not None
    assert 29 < g2.expires_at - g2.acquired_at <= 30.001
    renewed = be.lock_renew("job", "h2", 60.0)
    assert isinstance(renewed, float)
    assert renewed > g2.expires_at
    assert be.lock_owners("job")[0]["expires_at"] == renewed
    assert be.lock_renew("job", "h2", None) is None
    assert be.lock_owners("job")[0]["expires_at"] is None
    assert be.lock_renew("job", "nobody", 5.0) is False
    assert be.lock_release("job", "h2") is True
    assert be.lock_renew("job", "h2", 5.0) is False


def test_two_acquisitions_in_one_thread_contend(be: FileBackend, url: str) -> None:
    assert be.lock_acquire("one", 1, "a", INFO, None) is not None
    assert be.lock_acquire("one", 1, "b", INFO, None) is None
    other = FileBackend.from_url(url)  # a second handle: its own descriptors
    try:
        assert other.lock_acquire("one", 1, "c", INFO, None) is None
        assert be.lock_release("one", "a") is True
        assert other.lock_acquire("one", 1, "c", INFO, None) is not None
        assert be.lock_acquire("one", 1, "b", INFO, None) is None
    finally:
        other.close()  # closing a handle frees what it holds
    assert be.lock_acquire("one", 1, "b", INFO, None) is not None


def test_semaphore_slots_in_one_process(be: FileBackend) -> None:
    grants = [be.lock_acquire("sem", 3, f"h{i}", {"i": i}, None) for i in range(4)]
    assert [g is not None for g in grants] == [True, True, True, False]
    tokens = [g.token for g in grants if g is not None]
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3
    assert [o["i"] for o in be.lock_owners("sem")] == [0, 1, 2]
    assert be.lock_release("sem", "h1") is True
    assert be.lock_acquire("sem", 3, "h3", {"i": 3}, None) is not None
    assert sorted(o["i"] for o in be.lock_owners("sem")) == [0, 2, 3]


def test_fifo_waiters_cancel_and_lapse(be: FileBackend) -> None:
    assert be.lock_acquire("q", 1, "holder", INFO, None) is not None
    assert be.lock_acquire("q", 1, "w1", INFO, None, waiting=True) is None
    assert be.lock_acquire("q", 1, "w2", INFO, None, waiting=True) is None
    assert be.lock_release("q", "holder") is True
    # The slot is free, but w1 registered first: neither w2 nor a newcomer may take it.
    assert be.lock_acquire("q", 1, "w2", INFO, None, waiting=True) is None
    assert be.lock_acquire("q", 1, "barger", INFO, None) is None
    assert be.lock_acquire("q", 1, "w1", INFO, None, waiting=True) is not None
    assert be.lock_release("q", "w1") is True
    be.lock_cancel_wait("q", "w2")
    assert be.lock_acquire("q", 1, "barger", INFO, None) is not None
    assert be.lock_release("q", "barger") is True
    # A registration that is not refreshed lapses after WAITER_TTL.
    be.WAITER_TTL = 0.3  # type: ignore[misc]
    assert be.lock_acquire("q", 1, "holder2", INFO, None) is not None
    assert be.lock_acquire("q", 1, "ghost", INFO, None, waiting=True) is None
    assert be.lock_release("q", "holder2") is True
    assert be.lock_acquire("q", 1, "barger", INFO, None) is None
    time.sleep(0.4)
    assert be.lock_acquire("q", 1, "barger", INFO, None) is not None


def test_release_hands_the_slot_to_the_first_waiter(be: FileBackend, url: str) -> None:
    other = FileBackend.from_url(url)
    try:
        assert be.lock_acquire("ho", 1, "h", INFO, None) is not None
        assert other.lock_acquire("ho", 1, "w1", {"who": "w1"}, 5.0, waiting=True) is None
        assert other.lock_acquire("ho", 1, "w2", {"who": "w2"}, None, waiting=True) is None
        assert be.lock_release("ho", "h") is True
        # Handed to w1 (registered first): it is the owner before it even calls again.
        owners = be.lock_owners("ho")
        assert [(o["holder"], o["who"]) for o in owners] == [("w1", "w1")]
        assert be.lock_acquire("ho", 1, "barger", INFO, None) is None
        assert other.lock_acquire("ho", 1, "w2", {"who": "w2"}, None, waiting=True) is None
        g1 = other.lock_acquire("ho", 1, "w1", {"who": "w1"}, 5.0, waiting=True)
        assert g1 is not None
        assert g1.token == owners[0]["token"]
        assert g1.expires_at is not None
        assert 4 < g1.expires_at - time.time() <= 5.0
        # w1 gives it up; w2 is next. w2 cancels before claiming: the slot goes on (free).
        assert other.lock_release("ho", "w1") is True
        assert [o["holder"] for o in be.lock_owners("ho")] == ["w2"]
        other.lock_cancel_wait("ho", "w2")
        assert be.lock_owners("ho") == []
        g3 = be.lock_acquire("ho", 1, "barger", INFO, None)
        assert g3 is not None
        assert g3.token > g1.token
        # A waiter handed the slot that never claims it loses it after the claim window.
        assert other.lock_acquire("ho", 1, "ghost", INFO, None, waiting=True) is None
        assert be.lock_release("ho", "barger") is True
        assert be.lock_acquire("ho", 1, "late", INFO, None) is None
        time.sleep(0.6)
        assert be.lock_acquire("ho", 1, "late", INFO, None) is not None
        assert other.lock_acquire("ho", 1, "ghost", INFO, None, waiting=True) is None
        other.lock_cancel_wait("ho", "ghost")
    finally:
        other.close()


def test_lease_expiry_in_one_process(be: FileBackend) -> None:
    g1 = be.lock_acquire("lease", 1, "old", INFO, 0.2)
    assert g1 is not None
    assert be.lock_acquire("lease", 1, "new", INFO, None) is None
    time.sleep(0.3)
    assert be.lock_owners("lease") == []  # an expired lease is not a live holder
    g2 = be.lock_acquire("lease", 1, "new", INFO, None)  # takes it over (new generation)
    assert g2 is not None
    assert g2.token > g1.token
    assert be.lock_renew("lease", "old", 10.0) is False
    assert be.lock_release("lease", "old") is False
    assert [o["holder"] for o in be.lock_owners("lease")] == ["new"]
    assert be.lock_acquire("lease", 1, "third", INFO, None) is None
    assert be.lock_release("lease", "new") is True


def test_expired_lease_not_taken_still_counts_as_lost(be: FileBackend) -> None:
    assert be.lock_acquire("lost", 1, "h", INFO, 0.1) is not None
    time.sleep(0.2)
    assert be.lock_release("lost", "h") is False
    assert be.lock_acquire("lost", 1, "h2", INFO, None) is not None


def test_break_frees_every_slot(be: FileBackend) -> None:
    assert be.lock_break("never-used") == 0
    for i in range(2):
        assert be.lock_acquire("brk", 2, f"h{i}", INFO, None) is not None
    assert be.lock_break("brk") == 2
    assert be.lock_owners("brk") == []
    assert be.lock_release("brk", "h0") is False
    assert be.lock_renew("brk", "h1", 5.0) is False
    assert be.lock_acquire("brk", 2, "h2", INFO, None) is not None


def test_invalid_input_is_rejected_before_io(be: FileBackend, tmp_path: Path) -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x" * 201, "nul\0"):
        with pytest.raises(InvalidName):
            be.lock_acquire(bad, 1, "h", INFO, None)
        with pytest.raises(InvalidName):
            be.lock_owners(bad)
        with pytest.raises(InvalidName):
            be.lock_wait(bad, 0.01, "h")
    with pytest.raises(ValueError):
        be.lock_acquire("ok", 0, "h", INFO, None)
    with pytest.raises(ValueError):
        be.lock_acquire("ok", 1, "h", INFO, -1.0)
    assert sorted(p.name for p in (tmp_path / "data" / "locks").iterdir()) == []


def test_files_are_private_and_symlinks_are_not_followed(be: FileBackend, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert be.lock_acquire("priv", 2, "h", INFO, None) is not None
    finally:
        os.umask(old)
    locks = tmp_path / "data" / "locks"
    for path in [locks, *locks.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (locks / "evil").mkdir(mode=0o700)
    os.symlink(victim, locks / "evil" / "meta")
    with pytest.raises(BackendUnavailable):
        be.lock_acquire("evil", 1, "h", INFO, None)
    os.symlink(victim, locks / "priv" / "slot-1")
    (locks / "priv" / "slot-1.x").touch()  # not a slot name: ignored
    assert be.lock_release("priv", "h") is True
    assert be.lock_acquire("priv", 2, "h2", INFO, None) is not None  # slot-0 is free
    with pytest.raises(BackendUnavailable):
        be.lock_acquire("priv", 2, "h3", INFO, None)  # needs slot-1: a symlink
    assert victim.read_text() == "keep"


def test_tokens_survive_handles_and_a_lost_volatile_record(url: str, tmp_path: Path) -> None:
    a = FileBackend.from_url(url)
    tokens = []
    for i in range(5):
        g = a.lock_acquire("tok", 1, f"h{i}", INFO, None)
        assert g is not None
        tokens.append(g.token)
        a.lock_release("tok", f"h{i}")
    a.close()
    b = FileBackend.from_url(url)
    g = b.lock_acquire("tok", 1, "after-restart", INFO, None)
    assert g is not None
    assert g.token == tokens[-1] + 1
    b.lock_release("tok", "after-restart")
    # Damage the volatile record (as a reboot or a torn write would make it untrusted): the
    # next token comes from the fsynced reservation, which is above every token handed out.
    meta = tmp_path / "data" / "locks" / "tok" / "meta"
    raw = bytearray(meta.read_bytes())
    raw[1045] ^= 0xFF
    meta.write_bytes(bytes(raw))
    g2 = b.lock_acquire("tok", 1, "after-damage", INFO, None)
    assert g2 is not None
    assert g2.token > g.token
    b.lock_release("tok", "after-damage")
    # Both reservation records gone: refuse, rather than risk handing out an old token.
    raw = bytearray(meta.read_bytes())
    raw[3] ^= 0xFF
    raw[515] ^= 0xFF
    meta.write_bytes(bytes(raw))
    with pytest.raises(CorruptData):
        b.lock_acquire("tok", 1, "corrupt", INFO, None)
    b.close()


def test_lock_wait_sleeps_without_spinning_and_wakes_on_release(be: FileBackend) -> None:
    assert be.lock_acquire("w", 1, "holder", INFO, None) is not None
    assert be.lock_acquire("w", 1, "waiter", INFO, None, waiting=True) is None
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    be.lock_wait("w", 0.3, "waiter")  # nothing changes: sleeps the whole timeout
    waited = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert 0.25 <= waited < 2.0
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    assert cpu < 0.1, f"lock_wait burnt {cpu:.3f} s of CPU in {waited:.3f} s"
    # lock_wait never blocks longer than WAITER_TTL / 4 (the caller must refresh).
    t0 = time.monotonic()
    be.lock_wait("w", 60, "waiter")
    assert time.monotonic() - t0 < be.WAITER_TTL / 4 + 1.0
    # A release from another thread wakes the waiter at once.
    assert be.lock_acquire("w", 1, "waiter", INFO, None, waiting=True) is None
    timer = threading.Timer(0.2, be.lock_release, ("w", "holder"))
    timer.start()
    t0 = time.monotonic()
    be.lock_wait("w", 5, "waiter")
    woke = time.monotonic() - t0
    timer.join()
    assert woke < 0.45, f"woke {woke:.3f} s after a release due at 0.2 s"
    assert be.lock_acquire("w", 1, "waiter", INFO, None, waiting=True) is not None


def _release_in_thread(
    be: FileBackend, name: str, holder: str
) -> tuple[threading.Thread, list[bool]]:
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(be.lock_release(name, holder)), daemon=True)
    t.start()
    return t, done


def test_release_without_waiters_needs_no_meta_flock(
    be: FileBackend, url: str, tmp_path: Path
) -> None:
    lock_dir = tmp_path / "data" / "locks" / "nf"
    assert be.lock_acquire("nf", 1, "h", INFO, None) is not None
    if sys.platform.startswith("linux"):  # one read-write descriptor for flock and record
        modes = []
        for entry in os.listdir("/proc/self/fd"):
            try:
                if not os.readlink(f"/proc/self/fd/{entry}").endswith("/nf/slot-0"):
                    continue
                info = Path(f"/proc/self/fdinfo/{entry}").read_text()
            except OSError:
                continue  # the listing's own descriptor, closed by now
            flags = next(line for line in info.splitlines() if line.startswith("flags:"))
            modes.append(int(flags.split()[1], 8) & os.O_ACCMODE)
        assert modes == [os.O_RDWR]
    fd = os.open(lock_dir / "meta", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process inside the meta flock
        t, done = _release_in_thread(be, "nf", "h")
        t.join(5)
        assert done == [True], "a release with no waiter waited for the meta flock"
    finally:
        os.close(fd)
    assert be.lock_owners("nf") == []  # the record left behind is stale: the flock is free
    g = be.lock_acquire("nf", 1, "h2", INFO, None)
    assert g is not None
    # With a waiter registered, a release hands over under the meta flock.
    other = FileBackend.from_url(url)
    try:
        assert other.lock_acquire("nf", 1, "w", {"who": "w"}, None, waiting=True) is None
        fd = os.open(lock_dir / "meta", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            t, done = _release_in_thread(be, "nf", "h2")
            t.join(0.3)
            assert done == [], "a release with a waiter skipped the meta flock"
        finally:
            os.close(fd)
        t.join(5)
        assert done == [True]
        assert [o["holder"] for o in be.lock_owners("nf")] == ["w"]
        g2 = other.lock_acquire("nf", 1, "w", {"who": "w"}, None, waiting=True)
        assert g2 is not None
        assert g2.token > g.token
        assert other.lock_release("nf", "w") is True
    finally:
        other.close()


@pytest.mark.parametrize("late", [False, True])
def test_waiter_registered_during_a_flockless_release_is_woken(
    be: FileBackend, url: str, monkeypatch: pytest.MonkeyPatch, late: bool
) -> None:
    """The race a release without the meta flock allows: it read "no waiter", then a waiter
    registered (it saw the flock held) before the close. Forced here by making every release
    see no waiter. The waiter must not sleep: its re-check after arming finds the flock free
    (release before the wait), or the close wakes it (release during the wait)."""
    from unidist.backends.file import _flock_meta

    other = FileBackend.from_url(url)
    try:
        assert be.lock_acquire("race", 1, "h", INFO, None) is not None
        assert other.lock_acquire("race", 1, "w", INFO, None, waiting=True) is None
        monkeypatch.setattr(_flock_meta, "idle", lambda fd, max_limit: True)
        if late:
            timer = threading.Timer(0.2, be.lock_release, ("race", "h"))
            timer.start()
        else:
            assert be.lock_release("race", "h") is True
        t0 = time.monotonic()
        other.lock_wait("race", 5, "w")
        woke = time.monotonic() - t0
        if late:
            timer.join()
        assert woke < (0.45 if late else 0.25), f"waiter slept {woke:.3f} s"
        assert be.lock_owners("race") == []  # freed, not handed over
        assert other.lock_acquire("race", 1, "w", INFO, None, waiting=True) is not None
        assert other.lock_release("race", "w") is True
    finally:
        other.close()


def test_pooled_inotify_instance_keeps_only_the_last_waits_watches(tmp_path: Path) -> None:
    """A watch left over from an earlier wait would wake every later wait on the instance
    for events it does not care about (another waiter's wake file, a slot it once watched)."""
    from unidist.backends.file import _flock_wait

    if not _flock_wait.inotify_available():
        pytest.skip("no inotify")
    files = [tmp_path / f"wake-{i}" for i in range(3)]
    for f in files:
        f.write_bytes(b"")
    mask = _flock_wait.FILE_MASK
    _flock_wait.wait_for_change([(str(files[0]), mask), (str(files[1]), mask)], 0.01, lambda: True)
    _flock_wait.wait_for_change([(str(files[2]), mask)], 0.01, lambda: True)
    assert len(_flock_wait._pool[-1].watches) == 1  # the instance given back last
    # An event of a file the last wait no longer watches does not wake the next wait.
    timer = threading.Timer(0.05, lambda: files[0].write_bytes(b""))
    timer.start()
    t0 = time.monotonic()
    _flock_wait.wait_for_change([(str(files[2]), mask)], 0.3, lambda: True)
    timer.join()
    assert time.monotonic() - t0 >= 0.25
    # ... and one of the file it watches does, at once.
    timer = threading.Timer(0.05, lambda: files[2].write_bytes(b""))
    timer.start()
    t0 = time.monotonic()
    _flock_wait.wait_for_change([(str(files[2]), mask)], 5, lambda: True)
    timer.join()
    assert time.monotonic() - t0 < 1.0


def test_other_descriptors_of_the_slot_file_do_not_drop_the_lock(
    be: FileBackend, url: str, tmp_path: Path, kids: list[Child]
) -> None:
    assert be.lock_acquire("fd", 1, "h", INFO, None) is not None
    slot = tmp_path / "data" / "locks" / "fd" / "slot-0"

    def meddle() -> None:
        for _ in range(20):
            with open(slot, "rb") as fh:
                fh.read()
            fd = os.open(slot, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            os.close(fd)

    t = threading.Thread(target=meddle)
    t.start()
    t.join()
    kids.append(Child("try_acquire", url=url, name="fd"))
    assert kids[-1].result() == {"granted": False}
    assert be.lock_release("fd", "h") is True


# ---------------------------------------------------------------------------- many processes


def _overlap(url: str, tmp_path: Path, kids: list[Child], workers: int, rounds: int) -> None:
    probe = tmp_path / "probe"
    probe.write_text("")
    kids += start_all("overlap", workers, url=url, name="mx", probe=str(probe), rounds=rounds)
    results = [kid.result(120) for kid in kids]
    violations = sum(r["violations"] for r in results)
    contended = sum(r["contended"] for r in results)
    tokens = sorted(t for r in results for t in r["tokens"])
    print(f"overlap: {workers}x{rounds} violations={violations} contended={contended}")
    assert violations == 0
    assert contended > 0, "no acquisition ever had to wait: the test proved nothing"
    assert len(tokens) == workers * rounds == len(set(tokens))


@pytest.mark.multiprocess
def test_mutual_exclusion_by_overlap(url: str, tmp_path: Path, kids: list[Child]) -> None:
    _overlap(url, tmp_path, kids, workers=4, rounds=25)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_mutual_exclusion_by_overlap_soak(url: str, tmp_path: Path, kids: list[Child]) -> None:
    _overlap(url, tmp_path, kids, workers=8, rounds=500)


@pytest.mark.multiprocess
def test_semaphore_limit_3_with_10_processes(url: str, tmp_path: Path, kids: list[Child]) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    kids += start_all("semaphore", 10, url=url, name="sem3", inside=str(inside), rounds=3)
    results = [kid.result(120) for kid in kids]
    peak = max(r["peak"] for r in results)
    print(f"semaphore: peak inside={peak}")
    assert all(r["entered"] == 3 for r in results), results
    assert peak <= 3
    assert peak >= 2, "never more than one inside: the slots were not shared"


def _handover(url: str, be: FileBackend, kids: list[Child], runs: int) -> list[float]:
    latencies = []
    for run in range(runs):
        kid = Child("hold", url=url, name="crash", ttl=None)
        kids.append(kid)
        kid.expect("ready")
        kid.go()
        old_token = int(kid.expect("held").split()[0])
        holder = uuid.uuid4().hex
        assert be.lock_acquire("crash", 1, holder, INFO, None, waiting=True) is None
        killed = time.monotonic()
        kid.kill()
        grant, _ = acquire(be, "crash", timeout=10, holder=holder)
        latencies.append(time.monotonic() - killed)
        assert grant.token > old_token, f"run {run}: token {grant.token} <= {old_token}"
        be.lock_release("crash", grant.holder)
    return latencies


@pytest.mark.multiprocess
def test_killed_holder_hands_over_within_1s(url: str, be: FileBackend, kids: list[Child]) -> None:
    latencies = _handover(url, be, kids, runs=3)
    print("handover ms", [round(x * 1000, 1) for x in latencies])
    assert max(latencies) <= 1.0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_holder_hands_over_within_1s_soak(
    url: str, be: FileBackend, kids: list[Child]
) -> None:
    latencies = sorted(_handover(url, be, kids, runs=50))
    print(
        f"L1 handover ms p50={latencies[25] * 1000:.1f} p99={latencies[-1] * 1000:.1f} "
        f"max={latencies[-1] * 1000:.1f}"
    )
    assert latencies[-1] <= 1.0


@pytest.mark.multiprocess
def test_expired_lease_is_taken_over_from_a_live_holder(
    url: str, be: FileBackend, kids: list[Child]
) -> None:
    kid = Child("hold", url=url, name="lease", ttl=0.5, then_sleep=1.0)
    kids.append(kid)
    kid.expect("ready")
    kid.go()
    old_token = int(kid.expect("held").split()[0])
    started = time.monotonic()
    grant, _ = acquire(be, "lease", timeout=10)
    took = time.monotonic() - started
    assert grant.token > old_token
    assert took < 1.0  # the holder still sleeps (and holds its flock) until ~1 s
    res = kid.result()
    assert res == {"renew": False, "release": False}
    assert [o["holder"] for o in be.lock_owners("lease")] == [grant.holder]
    assert be.lock_renew("lease", grant.holder, None) is None
    assert be.lock_release("lease", grant.holder) is True


@pytest.mark.multiprocess
def test_forked_child_neither_holds_nor_keeps_the_parents_lock(
    url: str, be: FileBackend, kids: list[Child]
) -> None:
    kid = Child("hold", url=url, name="fork", ttl=None, fork=True)
    kids.append(kid)
    kid.expect("ready")
    kid.go()
    kid.expect("held")
    forked = json.loads(kid.expect("forked"))
    assert forked["child_release"] is False  # the child cannot release the parent's lock
    assert forked["child_acquire"] is False  # nor take it: the parent holds it
    grandchild = forked["pid"]
    try:
        assert be.lock_acquire("fork", 1, "x", INFO, None) is None
        holder = uuid.uuid4().hex
        assert be.lock_acquire("fork", 1, holder, INFO, None, waiting=True) is None
        killed = time.monotonic()
        kid.kill()  # the parent dies; its forked child sleeps on
        grant, _ = acquire(be, "fork", timeout=10, holder=holder)
        took = time.monotonic() - killed
        os.kill(grandchild, 0)  # still alive
        assert took <= 1.0, f"lock freed {took:.2f} s after the parent died"
        assert be.lock_release("fork", grant.holder) is True
    finally:
        try:
            os.kill(grandchild, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.multiprocess
def test_tokens_strictly_increase_across_processes(url: str, kids: list[Child]) -> None:
    kids += start_all("tokens", 2, url=url, name="tk", rounds=150)
    results = [kid.result(120) for kid in kids]
    for r in results:
        assert r["tokens"] == sorted(r["tokens"])
        assert len(set(r["tokens"])) == len(r["tokens"])
    merged = sorted(results[0]["tokens"] + results[1]["tokens"])
    assert len(set(merged)) == len(merged) == 300, "a token was handed out twice"
    assert sum(r["contended"] for r in results) > 0


def _ratio(results: list[dict[str, Any]]) -> tuple[float, float, str]:
    """(total / ideal, spread, report) of a run; ideal = elapsed / measured mean hold."""
    counts = [r["count"] for r in results]
    total = sum(counts)
    mean_hold = sum(r["held"] for r in results) / max(1, total)
    elapsed = max(r["end"] for r in results) - min(r["begin"] for r in results)
    ideal = elapsed / mean_hold
    spread = max(counts) / max(1, min(counts))
    report = (
        f"counts={counts} total={total} ideal={ideal:.0f} ratio={total / ideal:.2f} "
        f"spread={spread:.2f} mean_hold={mean_hold * 1000:.3f}ms elapsed={elapsed:.2f}s"
    )
    return total / ideal, spread, report


def _fair_run(url: str, kids: list[Child], duration: float) -> tuple[float, str]:
    kids.clear()
    kids += start_all("fair", 4, url=url, name="fair", duration=duration, hold=0.001)
    results = [kid.result(60) for kid in kids]
    for kid in kids:
        kid.close()
    ratio, spread, report = _ratio(results)
    print(f"fairness: {report}")
    assert min(r["count"] for r in results) > 0, f"a worker starved: {report}"
    assert spread <= 1.5, f"unfair: {report}"
    return ratio, report


#: the floor: prompt wake-ups, not the speed target. A sleep-polling lock (portalocker polls
#: every 0.1 s) reaches ~0.05 of the ideal; this implementation ~0.5-0.7 on a saturated 2-core
#: host and more on an idle one. The 0.85 target is a speed target, measured (never asserted)
#: by benchmarks/bench_lock_handover.py next to a zero-cost pipe-ring reference.
FAIR_FLOOR = 0.3


@pytest.mark.multiprocess
def test_fair_and_prompt_under_contention(url: str, kids: list[Child]) -> None:
    """4 processes x 1 ms holds for 2 s: every count within 1.5x of every other, and the total
    above a floor of the ideal that any polling lock fails."""
    ratio, report = _fair_run(url, kids, 2.0)
    assert ratio >= FAIR_FLOOR, f"handovers too slow: {report}"


# ---------------------------------------------------------------------------- child jobs


def _child_backend(args: dict[str, Any]) -> FileBackend:
    be = FileBackend.from_url(args["url"])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)
    return be


def _result(payload: Any) -> None:
    print("result " + json.dumps(payload), flush=True)


def job_try_acquire(args: dict[str, Any]) -> None:
    be = FileBackend.from_url(args["url"])
    grant = be.lock_acquire(args["name"], 1, uuid.uuid4().hex, {"pid": os.getpid()}, None)
    _result({"granted": grant is not None})


def job_hold(args: dict[str, Any]) -> None:
    be = _child_backend(args)
    grant, _ = acquire(be, args["name"], ttl=args["ttl"])
    print(f"held {grant.token} {grant.holder}", flush=True)
    if args.get("then_sleep"):
        time.sleep(args["then_sleep"])
        renewed = be.lock_renew(args["name"], grant.holder, 5.0)
        released = be.lock_release(args["name"], grant.holder)
        _result({"renew": renewed, "release": released})
    if args.get("fork"):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the forked child: must not hold or release the parent's lock
            os.close(r)
            report = {
                "child_release": be.lock_release(args["name"], grant.holder),
                "child_acquire": be.lock_acquire(args["name"], 1, "kid", {}, None) is not None,
            }
            os.write(w, json.dumps(report).encode())
            os.close(w)
            time.sleep(120)  # keeps every descriptor it inherited, except what unidist closed
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            report = json.loads(fh.read())
        report["pid"] = pid
        print("forked " + json.dumps(report), flush=True)
    sys.stdin.read()  # hold until killed (or stdin closes)


def job_overlap(args: dict[str, Any]) -> None:
    be = _child_backend(args)
    me = f"{os.getpid()}\n"
    probe = args["probe"]
    violations = contended = 0
    tokens = []
    for _ in range(args["rounds"]):
        grant, waits = acquire(be, args["name"])
        contended += waits > 0
        tokens.append(grant.token)
        with open(probe, "w") as fh:
            fh.write(me)
        time.sleep(0.001)
        with open(probe) as fh:
            if fh.read() != me:
                violations += 1
        assert be.lock_release(args["name"], grant.holder)
    _result({"violations": violations, "contended": contended, "tokens": tokens})


def job_semaphore(args: dict[str, Any]) -> None:
    be = _child_backend(args)
    inside = Path(args["inside"])
    mark = inside / str(os.getpid())
    peak = entered = 0
    for _ in range(args["rounds"]):
        grant, _ = acquire(be, args["name"], limit=3)
        mark.touch()
        entered += 1
        for _ in range(5):
            peak = max(peak, len(os.listdir(inside)))
            time.sleep(0.005)
        mark.unlink()
        assert be.lock_release(args["name"], grant.holder)
    _result({"entered": entered, "peak": peak})


def job_tokens(args: dict[str, Any]) -> None:
    be = _child_backend(args)
    tokens = []
    contended = 0
    for _ in range(args["rounds"]):
        grant, waits = acquire(be, args["name"])
        contended += waits > 0
        tokens.append(grant.token)
        time.sleep(0.0005)  # long enough that the two processes surely interleave
        assert be.lock_release(args["name"], grant.holder)
    _result({"tokens": tokens, "contended": contended})


def job_fair(args: dict[str, Any]) -> None:
    be = _child_backend(args)
    hold = args["hold"]
    count = 0
    held = 0.0
    begin = time.time()
    deadline = time.monotonic() + args["duration"]
    while time.monotonic() < deadline:
        grant, _ = acquire(be, args["name"])
        t0 = time.perf_counter()
        time.sleep(hold)
        held += time.perf_counter() - t0
        be.lock_release(args["name"], grant.holder)
        count += 1
    _result({"count": count, "held": held, "begin": begin, "end": time.time()})


if __name__ == "__main__":
    globals()["job_" + sys.argv[1]](json.loads(sys.argv[2]))
