"""Names: one rule for every primitive on every backend, checked before any I/O."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import unidist
from unidist.backends import Backend

BAD_NAMES = [
    "",
    "/",
    "../x",
    "a/b",
    "..",
    ".",
    ".hidden",
    "a\x00b",
    "x" * 201,
    "sp ace",
    "é",
    "a\n",
]
GOOD_NAMES = ["a", "backup", "db-slots", "job_1.2", "host:a@b", "x" * 200, "-leading-dash", "_"]


def _factories(be: Backend) -> dict[str, object]:
    return {
        "lock": lambda n: unidist.SharedLock(n, backend=be),
        "semaphore": lambda n: unidist.SharedSemaphore(n, limit=2, backend=be),
        "counter": lambda n: unidist.SharedCounter(n, backend=be),
        "state": lambda n: unidist.SharedState(n, backend=be),
        "queue": lambda n: unidist.MessageQueue(n, backend=be),
    }


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_by_every_primitive(backend: Backend, name: str) -> None:
    """Every primitive raises InvalidName (a ValueError) for a bad name, on every backend."""
    for kind, make in _factories(backend).items():
        with pytest.raises(unidist.InvalidName) as info:
            make(name)  # type: ignore[operator]
        assert isinstance(info.value, ValueError), kind


@pytest.mark.parametrize("name", GOOD_NAMES, ids=lambda n: n[:20])
def test_good_names_work_for_every_primitive(backend: Backend, name: str) -> None:
    """Names of letters, digits and ._-:@ up to 200 characters are accepted and usable."""
    c = unidist.SharedCounter(name, backend=backend)
    assert c.incr() == 1
    s = unidist.SharedState(name, backend=backend)
    s["k"] = name
    assert s["k"] == name


def test_non_str_name_is_invalid(backend: Backend) -> None:
    """A name that is not a str is InvalidName, not a crash deeper down."""
    with pytest.raises(unidist.InvalidName, match="must be a str"):
        unidist.SharedCounter(42, backend=backend)  # type: ignore[arg-type]


def test_traversal_name_creates_nothing_outside_the_data_dir(tmp_path: Path) -> None:
    """`SharedLock('../etc/x', backend='file://DIR')` raises before touching the filesystem."""
    data = tmp_path / "u"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(unidist.InvalidName):
        unidist.SharedLock("../etc/x", backend=f"file://{data}")
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path / "etc").exists()
    unidist.backends.reset()


def test_backend_methods_recheck_names(backend: Backend) -> None:
    """Calling a backend method directly with a bad name also fails with InvalidName."""
    with pytest.raises(unidist.InvalidName):
        backend.counter_add("../../x", 1, "req")
    with pytest.raises(unidist.InvalidName):
        backend.state_set("a/b", "k", "1")
    with pytest.raises(unidist.InvalidName):
        backend.queue_put("..", "id1", "1", 0, 0)
