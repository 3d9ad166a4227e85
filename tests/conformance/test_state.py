"""SharedState buckets: MutableMapping behaviour, compare-and-set, transform, persistence."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from _queue_workers import race_toggle_once, race_transform_once, run_workers

import unidist
from unidist.backends import Backend

# ---------------------------------------------------------------------- the mapping


def test_set_get_contains_delete(backend: Backend) -> None:
    """Item access stores, reads, tests and deletes keys; missing keys raise KeyError."""
    s = unidist.SharedState("b", backend=backend)
    assert len(s) == 0
    assert "k" not in s
    s["k"] = {"a": [1, 2]}
    s["n"] = None
    assert s["k"] == {"a": [1, 2]}
    assert s["n"] is None
    assert "k" in s
    assert "n" in s  # a stored null is present
    assert len(s) == 2
    assert s.get("k") == {"a": [1, 2]}
    assert s.get("missing") is None
    assert s.get("missing", 7) == 7
    s["k"] = "replaced"
    assert s["k"] == "replaced"
    assert len(s) == 2
    del s["k"]
    assert "k" not in s
    with pytest.raises(KeyError):
        s["k"]
    with pytest.raises(KeyError):
        del s["k"]
    assert s.snapshot() == {"n": None}


def test_iter_keys_values_items_and_update(backend: Backend) -> None:
    """iter/keys/values/items list the bucket; update accepts mappings, pairs and keywords."""
    s = unidist.SharedState("b", backend=backend)
    s.update({"a": 1, "b": [2]})
    s.update([("c", {"x": 3})], d="four")
    s.update(s.snapshot() | {"a": 10})  # any mapping, including a copy of itself
    s.update()  # nothing to do
    expected = {"a": 10, "b": [2], "c": {"x": 3}, "d": "four"}
    assert sorted(s) == sorted(expected)
    assert set(s.keys()) == set(expected)
    assert sorted(map(repr, s.values())) == sorted(map(repr, expected.values()))
    assert dict(s.items()) == expected
    assert dict(s) == expected
    assert len(s) == 4


def test_setdefault_pop_popitem_clear(backend: Backend) -> None:
    """setdefault, pop (with and without default), popitem and clear behave as on a dict."""
    s = unidist.SharedState("b", backend=backend)
    assert s.setdefault("a", [1]) == [1]
    assert s.setdefault("a", [2]) == [1]
    assert s.setdefault("none") is None
    assert s["none"] is None
    assert s.pop("a") == [1]
    assert "a" not in s
    assert s.pop("a", "dflt") == "dflt"
    with pytest.raises(KeyError):
        s.pop("a")
    s.update({"x": 1, "y": 2})
    seen = {}
    while len(s):
        k, v = s.popitem()
        seen[k] = v
    assert seen == {"none": None, "x": 1, "y": 2}
    with pytest.raises(KeyError):
        s.popitem()
    s.update({"x": 1, "y": 2})
    s.clear()
    assert len(s) == 0
    assert s.snapshot() == {}
    s.clear()  # clearing an empty bucket is fine


def test_equality_with_dicts(backend: Backend) -> None:
    """A bucket equals a dict (either side) exactly when their items are equal."""
    s = unidist.SharedState("b", backend=backend)
    assert s == {}
    s.update({"a": 1, "b": [1, {"c": None}]})
    assert s == {"a": 1, "b": [1, {"c": None}]}
    assert {"a": 1, "b": [1, {"c": None}]} == s
    assert s != {"a": 1}
    assert s != {"a": 1, "b": [1, {"c": 0}]}
    assert s == unidist.SharedState("b", backend=backend)
    assert s != unidist.SharedState("other", backend=backend)
    assert s != [("a", 1)]
    with pytest.raises(TypeError):
        hash(s)


def test_reads_return_copies(backend: Backend) -> None:
    """Mutating a value read from the bucket does not change what is stored."""
    s = unidist.SharedState("b", backend=backend)
    s["k"] = {"list": [1]}
    got = s["k"]
    assert isinstance(got, dict)
    got["list"].append(2)
    got["new"] = True
    assert s["k"] == {"list": [1]}


def test_same_name_is_same_bucket_other_names_are_separate(backend: Backend) -> None:
    """Two handles of one bucket share data; another bucket name is independent."""
    a1 = unidist.SharedState("alpha", backend=backend)
    a2 = backend.state("alpha")
    b = unidist.SharedState("beta", backend=backend)
    a1["k"] = 1
    assert a2["k"] == 1
    assert "k" not in b
    b["k"] = 2
    assert a1["k"] == 1


def test_keys_may_be_empty_or_any_unicode(backend: Backend) -> None:
    """The empty string and any unicode text (slashes, NUL, emoji, newlines) are valid keys."""
    s = unidist.SharedState("b", backend=backend)
    keys = ["", "ключ", "漢字🎉", "a/b/../c", "nul\x00byte", "line\nbreak", " ", "k" * 1000]
    for i, k in enumerate(keys):
        s[k] = i
    assert s == {k: i for i, k in enumerate(keys)}
    for i, k in enumerate(keys):
        assert k in s
        assert s[k] == i
    del s[""]
    assert "" not in s
    assert len(s) == len(keys) - 1


@pytest.mark.parametrize("key", [1, 1.5, None, b"bytes", ("t",), True])
def test_non_str_keys_are_type_errors(backend: Backend, key: object) -> None:
    """A key that is not a str raises TypeError for every access and stores nothing."""
    s = unidist.SharedState("b", backend=backend)
    with pytest.raises(TypeError):
        s[key] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        s[key]  # type: ignore[index]
    with pytest.raises(TypeError):
        del s[key]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.update({key: 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        s.compare_and_set(key, None, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.transform(key, lambda v: 1)  # type: ignore[arg-type]
    assert key not in s
    assert len(s) == 0


def test_unencodable_key_is_a_serialization_error(backend: Backend) -> None:
    """A key holding a lone surrogate cannot be stored: SerializationError, nothing stored."""
    s = unidist.SharedState("b", backend=backend)
    with pytest.raises(unidist.SerializationError):
        s["bad \ud800"] = 1
    assert len(s) == 0


def test_iteration_is_a_consistent_copy(backend: Backend) -> None:
    """Iterating while the bucket changes yields the keys as they were when iteration began."""
    s = unidist.SharedState("b", backend=backend)
    s.update({f"k{i}": i for i in range(20)})
    seen = []
    for k in s:
        seen.append(k)
        del s[k]
        s[f"new-{k}"] = 0
    assert sorted(seen) == sorted(f"k{i}" for i in range(20))
    items = s.items()
    s.clear()
    assert len(items) == 20
    assert all(k.startswith("new-") for k, _ in items)
    assert len(s) == 0


def test_buckets_lists_non_empty_buckets(backend: Backend) -> None:
    """backend.buckets() names every bucket holding a key, sorted, and forgets emptied ones."""
    assert backend.buckets() == []
    backend.state("zeta")["k"] = 1
    backend.state("alpha")["k"] = None
    backend.state("mid.dle:x@y")["k"] = {}
    unidist.SharedState("empty", backend=backend).get("nothing")
    assert backend.buckets() == ["alpha", "mid.dle:x@y", "zeta"]
    del backend.state("zeta")["k"]
    backend.state("alpha").clear()
    assert backend.buckets() == ["mid.dle:x@y"]


# ---------------------------------------------------------------------- atomic updates


def test_compare_and_set(backend: Backend) -> None:
    """CAS stores only on a match; None matches absent and null; a mismatch changes nothing."""
    s = unidist.SharedState("b", backend=backend)
    assert s.compare_and_set("k", None, 1) is True  # absent matches None
    assert s["k"] == 1
    assert s.compare_and_set("k", None, 2) is False  # present, not null
    assert s.compare_and_set("k", 0, 2) is False
    assert s.compare_and_set("k", 1.0, 2) is False  # 1 and 1.0 differ
    assert s.compare_and_set("k", True, 2) is False  # 1 and True differ
    assert s["k"] == 1
    assert s.compare_and_set("k", 1, {"v": [1]}) is True
    assert s.compare_and_set("k", {"v": [1]}, None) is True  # store null
    assert "k" in s
    assert s["k"] is None
    assert s.compare_and_set("k", None, "from-null") is True  # stored null matches None
    assert s["k"] == "from-null"
    assert s.compare_and_set("other", "x", 1) is False  # absent does not match "x"
    assert "other" not in s
    assert s.snapshot() == {"k": "from-null"}
    with pytest.raises(unidist.SerializationError):
        s.compare_and_set("k", "from-null", {1, 2})
    assert s["k"] == "from-null"


def test_transform_reads_default_stores_result(backend: Backend) -> None:
    """transform applies fn to the value (or default) and stores and returns the result."""
    s = unidist.SharedState("b", backend=backend)
    assert s.transform("n", lambda v: v + 1, default=0) == 1
    assert s.transform("n", lambda v: v + 1, default=100) == 2
    assert s.transform("lst", lambda v: [*v, "x"], default=[]) == ["x"]
    assert s.transform("none", lambda v: {"was": v}) == {"was": None}
    assert s.snapshot() == {"n": 2, "lst": ["x"], "none": {"was": None}}


def test_transform_stores_nothing_when_fn_fails(backend: Backend) -> None:
    """If fn raises, or returns a non-JSON value, the stored value is unchanged."""
    s = unidist.SharedState("b", backend=backend)
    s["k"] = 5

    def boom(v: object) -> object:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        s.transform("k", boom)
    with pytest.raises(unidist.SerializationError):
        s.transform("k", lambda v: {v})
    with pytest.raises(unidist.SerializationError):
        s.transform("absent", lambda v: object())
    assert s.snapshot() == {"k": 5}


def test_transform_loses_no_update_across_threads(backend: Backend) -> None:
    """8 threads x 1,000 transform increments of one key give exactly 8,000 (none lost)."""
    s = unidist.SharedState("b", backend=backend)
    threads_n, per = 8, 1000
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(per):
                s.transform("n", lambda v: v + 1, default=0)
                s.transform(f"t{i}", lambda v: v + 1, default=0)  # uncontended
        except BaseException as exc:
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    print(f"{threads_n}x{per} transforms in {time.monotonic() - t0:.2f}s")
    assert s["n"] == threads_n * per
    assert all(s[f"t{i}"] == per for i in range(threads_n))


@pytest.mark.scope("host")
def test_transform_loses_no_update_across_processes(backend_url: str, tmp_path: Path) -> None:
    """4 processes x 250 transform increments of one key give exactly 1,000."""
    procs, per = 4, 250
    argv = ["transform", backend_url, "b", "n", str(per), str(tmp_path / "barrier"), str(procs)]
    t0 = time.monotonic()
    outs = run_workers([argv] * procs)
    assert [int(o) for o in outs] == [per] * procs
    print(f"{procs}x{per} cross-process transforms in {time.monotonic() - t0:.2f}s")
    assert unidist.SharedState("b", backend=backend_url)["n"] == procs * per
    unidist.backends.reset()


def test_transform_default_never_overwrites_a_concurrent_null(backend: Backend) -> None:
    """transform with a non-None default: fn gets the default only if the key is absent at
    the moment of the write (an "absent only" compare-and-set), never when a concurrent
    writer stored null in between; and fn given a stored null never writes over an absent
    key. Two transforming threads race a thread that toggles the key null/absent."""
    s = unidist.SharedState("b", backend=backend)
    cycles, stop = 800, threading.Event()
    errors: list[BaseException] = []
    violations = [0]

    def transformer() -> None:
        try:
            while not stop.is_set():
                race_transform_once(s, "k")
        except BaseException as exc:
            errors.append(exc)

    def toggler() -> None:
        try:
            for _ in range(cycles):
                violations[0] += race_toggle_once(s, "k")
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads finely, also on memory://
    try:
        threads = [threading.Thread(target=transformer) for _ in range(2)]
        threads.append(threading.Thread(target=toggler))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old)
        stop.set()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert violations[0] == 0


@pytest.mark.scope("host")
def test_transform_default_race_across_processes(backend_url: str, tmp_path: Path) -> None:
    """The same race between processes: 2 transforming processes, 1 toggling process."""
    bdir = str(tmp_path / "barrier")
    common = [backend_url, "b", "k"]
    outs = run_workers(
        [
            ["race-transform", *common, "400", bdir, "3"],
            ["race-transform", *common, "400", bdir, "3"],
            ["race-toggle", *common, "250", bdir, "3"],
        ]
    )
    assert int(outs[2]) == 0, f"{outs[2].strip()} violations"
    unidist.backends.reset()


# ---------------------------------------------------------------------- persistence


@pytest.mark.scope("host")
def test_bucket_survives_reconnect_and_is_seen_by_a_new_process(backend_url: str) -> None:
    """Values written, then the backend closed, are read back by a new process and a reconnect."""
    data = {"": "empty key", "ключ": [1, 2.5, None], "cfg": {"deep": {"x": True}}}
    unidist.SharedState("persist", backend=backend_url).update(data)
    unidist.backends.reset()
    (out,) = run_workers([["dump-state", backend_url, "persist"]])
    assert json.loads(out) == data
    assert unidist.SharedState("persist", backend=backend_url) == data
    unidist.backends.reset()


def test_memory_snapshot_brings_a_bucket_back(tmp_path: Path) -> None:
    """memory://?snapshot=: close the backend, connect again, and the bucket is back."""
    url = f"memory://snap{uuid.uuid4().hex[:8]}?snapshot={tmp_path / 'snap.json'}&interval=60"
    data = {"": 0, "ключ": {"a": [1, None]}, "null": None}
    try:
        unidist.SharedState("persist", backend=url).update(data)
        unidist.backends.reset()  # closes the backend, which writes the snapshot
        again = unidist.SharedState("persist", backend=url)
        assert again == data
        assert unidist.connect(url).buckets() == ["persist"]
    finally:
        unidist.backends.reset()
