"""connect(): URL handling, caching, and clear errors for unusable backends."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

import unidist
from unidist.backends import Backend


def test_connect_caches_one_handle_per_url(backend_url: str) -> None:
    """The same URL gives the same handle, and a primitive given the URL string uses it."""
    be = unidist.connect(backend_url)
    assert unidist.connect(backend_url) is be
    assert unidist.SharedCounter("c", backend=backend_url).backend is be
    unidist.backends.reset()


def test_backend_repr_and_ping(backend: Backend) -> None:
    """A connected backend answers ping() and names its URL in its repr."""
    backend.ping()
    assert backend.url.split("://")[0] in repr(backend)


def test_primitives_reachable_from_the_backend(backend: Backend) -> None:
    """be.lock/counter/state/queue give the same shared objects as the classes."""
    backend.counter("n").incr(5)
    assert unidist.SharedCounter("n", backend=backend).get() == 5
    backend.state("b")["k"] = 1
    assert unidist.SharedState("b", backend=backend)["k"] == 1
    backend.queue("q").put("m")
    assert unidist.MessageQueue("q", backend=backend).get(timeout=5) == "m"
    with backend.lock("l"):
        assert unidist.SharedLock("l", backend=backend).locked()
    assert backend.semaphore("s", limit=2).limit == 2


def test_default_is_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL and no $UNIDIST_URL the default backend is memory://."""
    monkeypatch.delenv("UNIDIST_URL", raising=False)
    be = unidist.connect()
    assert type(be).__name__ == "MemoryBackend"
    assert unidist.SharedCounter("default-x").backend is be


def test_default_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$UNIDIST_URL chooses the default backend."""
    monkeypatch.setenv("UNIDIST_URL", f"file://{tmp_path / 'env'}")
    try:
        assert type(unidist.connect()).__name__ == "FileBackend"
    finally:
        unidist.backends.reset()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nosuch://x", "unknown backend scheme 'nosuch'"),
        ("just-a-path", "has no scheme"),
        ("memory://?bogus=1", "unknown option 'bogus'"),
        ("memory://?interval=-3", "interval"),
        ("file:///tmp/x?fsync=sometimes", "fsync"),
        ("file://relative/dir", "file://"),
        ("redis://127.0.0.1:1/0?nonsense=yes", "unknown option 'nonsense'"),
    ],
)
def test_bad_urls_raise_invalid_url(url: str, fragment: str) -> None:
    """Unknown schemes and options are InvalidURL (a ValueError) naming what was wrong."""
    with pytest.raises(unidist.InvalidURL, match=fragment) as info:
        unidist.connect(url)
    assert isinstance(info.value, ValueError)


def test_unreachable_redis_fails_fast_naming_host_port() -> None:
    """An unreachable Redis is BackendUnavailable naming host:port within 2 s, no hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    t0 = time.monotonic()
    be = unidist.connect(url)
    with pytest.raises(unidist.BackendUnavailable) as info:
        be.ping()
    assert time.monotonic() - t0 < 2.0
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(info.value)
    unidist.backends.reset()


def test_file_backend_creates_private_directory(tmp_path: Path) -> None:
    """A missing data directory is created 0700 even under umask 000."""
    old = os.umask(0)
    try:
        unidist.connect(f"file://{tmp_path / 'new' / 'dir'}")
    finally:
        os.umask(old)
        unidist.backends.reset()
    assert stat.S_IMODE((tmp_path / "new" / "dir").stat().st_mode) == 0o700


def test_file_backend_refuses_unwritable_or_shared_directory(tmp_path: Path) -> None:
    """A world-writable data dir or a file in its place is BackendUnavailable with a hint."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(unidist.BackendUnavailable, match="chmod 700"):
        unidist.connect(f"file://{shared}")
    not_dir = tmp_path / "afile"
    not_dir.write_text("x")
    with pytest.raises(unidist.BackendUnavailable, match="not a directory"):
        unidist.connect(f"file://{not_dir}")
    unidist.backends.reset()
