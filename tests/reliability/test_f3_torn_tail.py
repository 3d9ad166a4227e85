"""F3: the torn-tail matrix (RELIABILITY.md 3.1).

A store holding a counter, a bucket with a long value and a queue is damaged at its journal
tail in every way an interrupted append or a power loss leaves it: truncated at every byte of
the last record, 1-4,096 zero bytes appended, random garbage appended, a partial length
prefix, a record header with an absurd length. Each case opens a fresh copy. The soak run
covers every byte and every zero count; the default run a seeded sample holding the edges.

Pass: opens; cuts only the damaged tail (at most one record lost, the one being written),
warns naming file, offset and bytes; earlier records intact; a second open cuts nothing.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.backends.test_file_journal import journal_of, record_offsets
from tests.reliability._file_common import open_file_backend, watching_cuts
from tests.reliability._report import Result, count, seed
from unidist.backends.file.journal import frame

OBJECTS = (("counters", "c"), ("state", "b"), ("queues", "q"))


def _build(root: Path) -> dict[str, object]:
    be = open_file_backend(root)
    for i in range(6):
        be.counter_add("c", 1, "r")
        be.state_set("b", f"k{i}", '"' + "v" * (40 + 50 * i) + '"')
        be.queue_put("q", f"m{i}", str(i), 0.0, 0)
    want = _read(be)
    be.close()
    return want


def _read(be: object) -> dict[str, object]:
    from unidist.backends.file import FileBackend

    assert isinstance(be, FileBackend)
    return {
        "c": be.counter_get("c"),
        "b": be.state_items("b"),
        "q": be.queue_stats("q")["ready"],
    }


def _cases(rng: random.Random, last_len: int) -> Iterator[tuple[str, int | None, bytes]]:
    """(case name, truncate-at offset into the last record or None, bytes to append)."""
    every = list(range(1, last_len))
    n = count(10, len(every))  # every byte at soak; in CI a sample always holding both ends
    cuts = every if n >= len(every) else sorted({1, 17, 18, last_len - 1, *rng.sample(every, n)})
    for k in cuts:
        yield f"truncate+{k}", k, b""
    zero_sizes = sorted(
        {1, 2, 17, 18, 511, 512, 513, 4095, 4096}
        | {rng.randint(1, 4096) for _ in range(count(3, 4096))}
    )
    for n in zero_sizes:
        yield f"zeros{n}", None, b"\0" * n
    for i in range(count(3, 2000)):
        yield f"garbage{i}", None, rng.randbytes(rng.randint(1, 5000))
    for n in (1, 6, 17) if count(0, 1) == 0 else range(1, 18):
        yield f"partial-header{n}", None, frame(999, b'{"v":1}')[:n]
    yield "absurd-length", None, b"\xa5U\xff\xff\xff\xf0" + b"\0" * 30


def test_f3_torn_tail_matrix(tmp_path: Path) -> None:
    s = seed()
    rng = random.Random(s)
    base = tmp_path / "base"
    want = _build(base)
    result = Result("F3", "file", s, params={"fsync": "always"}, path=str(tmp_path))
    max_lost = 0
    i = 0
    for family, name in OBJECTS:
        jpath = journal_of(base, family, name)
        offsets = record_offsets(jpath)
        full = jpath.read_bytes()
        last = offsets[-1]
        for case, trunc, tail in _cases(rng, len(full) - last):
            i += 1
            root = tmp_path / f"c{i}"
            shutil.copytree(base, root)
            j = journal_of(root, family, name)
            damaged = full[: last + trunc] if trunc is not None else full + tail
            j.write_bytes(damaged)
            cut_at = last if trunc is not None else len(full)
            result.attempted += 1
            with watching_cuts() as cuts:
                be = open_file_backend(root)
                got = _read(be)
                be.close()
            cuts.add_to(result)
            assert cuts.cuts == [(cut_at, len(damaged) - cut_at)], (family, case, cuts.messages)
            assert str(j) in cuts.messages[0]
            assert j.read_bytes() == full[:cut_at]
            lost = 0
            if trunc is not None:  # the last record of this object is gone, nothing else
                lost = 1
                expect = dict(want)
                if family == "counters":
                    expect["c"] = want["c"] - 1  # type: ignore[operator]
                elif family == "state":
                    expect["b"] = {k: v for k, v in want["b"].items() if k != "k5"}  # type: ignore[attr-defined]
                else:
                    expect["q"] = want["q"] - 1  # type: ignore[operator]
                assert got == expect, (family, case)
            else:
                assert got == want, (family, case)
            max_lost = max(max_lost, lost)
            with watching_cuts() as again:
                be = open_file_backend(root)
                assert _read(be) == got
                be.counter_add("c", 1, "r")
                be.close()
            assert again.cuts == [], (family, case)
            result.ok += 1
            shutil.rmtree(root)
    result.extra = {"cases": result.attempted, "max_records_lost_per_case": max_lost}
    result.emit()
    assert max_lost <= 1
    assert result.ok == result.attempted
