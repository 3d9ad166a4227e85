"""B3: invalid names on every backend (RELIABILITY.md 3.7).

``''``, ``/``, ``../x``, a NUL, 201 characters, a leading dot, a slash inside, whitespace and
non-ASCII look-alikes are used as the name of every primitive (counter, bucket, queue, lock,
semaphore) and as raw backend-call arguments. Pass: ``InvalidName`` (a ``ValueError``) every
time, raised before any I/O: the stored bytes (data directory tree, every key's DUMP) are
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import unidist
from tests.reliability._file_storage import fingerprint
from tests.reliability._report import Result, seed
from unidist.backends import Backend

BAD_NAMES = ["", "/", "../x", "a\0b", "x" * 201, ".hidden", "a/b", "a b", "caf\u00e9", "\u2024x"]


def test_b3_invalid_names_refused_before_io(
    backend: Backend, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    s = seed()
    unidist.SharedState("b3", backend=backend)["k"] = 1  # something stored to compare
    before = fingerprint(backend, backend_kind, request)
    makers: list[tuple[str, Callable[[str], Any]]] = [
        ("SharedCounter", lambda n: unidist.SharedCounter(n, backend=backend).add(1)),
        ("SharedState", lambda n: unidist.SharedState(n, backend=backend).__setitem__("k", 1)),
        ("MessageQueue", lambda n: unidist.MessageQueue(n, backend=backend).put(1)),
        ("SharedLock", lambda n: unidist.SharedLock(n, backend=backend).acquire(timeout=0)),
        ("SharedSemaphore", lambda n: unidist.SharedSemaphore(n, 2, backend=backend)),
        ("counter_add", lambda n: backend.counter_add(n, 1, "r")),
        ("state_set", lambda n: backend.state_set(n, "k", "1")),
        ("queue_put", lambda n: backend.queue_put(n, "m", "1", 0.0, 0)),
        ("queue_receive/consumer", lambda n: backend.queue_receive("b3q", 1.0, 5, consumer=n)),
        ("member_heartbeat", lambda n: backend.member_heartbeat(n, "m", {}, 5.0)),
    ]
    result = Result("B3", backend_kind, s, params={"names": len(BAD_NAMES)})
    wrong: list[str] = []
    for what, make in makers:
        for name in BAD_NAMES:
            result.attempted += 1
            try:
                make(name)
            except unidist.InvalidName as exc:
                if isinstance(exc, ValueError) and str(exc):
                    result.ok += 1
                    continue
                wrong.append(f"{what}({name!r}): bad InvalidName")
            except Exception as exc:
                wrong.append(f"{what}({name!r}): {type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{what}({name!r}): accepted")
    after = fingerprint(backend, backend_kind, request)
    result.unexpected = len(wrong)
    result.violations = len(wrong) + (before != after)
    result.extra = {"storage_unchanged": before == after}
    result.emit()
    assert wrong == []
    assert after == before
