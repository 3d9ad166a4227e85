"""B4: fuzzing of everything unidist parses (RELIABILITY.md 3.7).

Hypothesis generates and mutates (bit flips, byte replacements, insertions, truncations,
duplicated ranges) valid journals, snapshots and cluster files, plus free-form bytes, and
free-form JSON-ish text for the CLI's JSON arguments. Pass: only the documented errors --
``CorruptData`` from journals/snapshots (raw scans and whole-store opens), ``ClusterFileError``
naming the file and a line from cluster files; the CLI exits with a documented code and never
prints a traceback -- and nothing hangs (each example runs under a deadline).

Counts: ``count(ci, soak)`` examples per target; the soak run totals over 100,000.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability._file_common import open_file_backend, watching_cuts
from tests.reliability._report import Result, count, seed
from unidist.backends.file.journal import dumps, frame, read_single, scan
from unidist.cli.main import main as cli_main
from unidist.cluster import parse as cluster_parse
from unidist.errors import ClusterFileError, CorruptData

SLOW_CALL = 5.0  # seconds: one example taking longer counts as a hang


def _journal(n: int) -> bytes:
    out = [frame(0, dumps({"v": 1, "kind": "state", "name": "b", "gen": 1}))]
    for i in range(1, n + 1):
        out.append(frame(i, dumps({"o": "s", "k": f"k{i % 3}", "v": json.dumps(i)})))
    return b"".join(out)


VALID_JOURNAL = _journal(8)
VALID_SNAPSHOT = frame(
    0,
    dumps({"v": 1, "kind": "state", "name": "b", "gen": 2, "state": {"items": {"a": "1"}}}),
)
VALID_CLUSTER = b"""# a cluster
web1 web2
[group web]
web1
web2
[group db]
db1
[lump all-web]
@web
web3
"""


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "insert", "truncate", "dup", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup":
            end = draw(st.integers(pos, len(data)))
            data[end:end] = data[pos:end]
        else:
            end = draw(st.integers(pos, len(data)))
            data[pos:end] = bytes(end - pos)
    return bytes(data)


def _inputs(base: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(base), st.binary(max_size=300))


def _names(exc: CorruptData | ClusterFileError, path: str, extra_ok: bool) -> None:
    """The documented error names the file (and an offset or line: ``extra_ok``)."""
    assert exc.path == path, (exc.path, path)
    assert extra_ok, str(exc)


class Tally:
    def __init__(self, scenario: str) -> None:
        self.result = Result("B4", "file", seed(), params={"target": scenario})
        self.outcomes: dict[str, int] = {}
        self.slowest = 0.0

    def run(self, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        outcome = fn()
        took = time.perf_counter() - t0
        self.slowest = max(self.slowest, took)
        assert took < SLOW_CALL, f"took {took:.1f}s"
        self.result.attempted += 1
        self.result.ok += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def emit(self) -> None:
        self.result.extra = {"outcomes": self.outcomes, "slowest_ms": round(self.slowest * 1000)}
        self.result.emit()


SETTINGS: dict[str, Any] = {
    "deadline": None,
    "derandomize": False,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def test_b4_fuzz_journal_and_snapshot_decoding() -> None:
    tally = Tally("journal+snapshot records")

    @settings(max_examples=count(200, 40_000), **SETTINGS)
    @given(st.one_of(_inputs(VALID_JOURNAL), _inputs(VALID_SNAPSHOT)))
    def check(data: bytes) -> None:
        def one() -> str:
            try:
                sc = scan(data, path="j", base=0, next_seq=0)
            except CorruptData as exc:
                _names(exc, "j", exc.offset >= 0)
                out = "scan:CorruptData"
            else:
                assert 0 <= sc.end <= len(data)
                assert sc.end + sc.torn == len(data)
                out = "scan:ok"
            try:
                read_single(data, path="s")
            except CorruptData as exc:
                _names(exc, "s", True)
                return out + " snap:CorruptData"
            return out + " snap:ok"

        tally.run(one)

    check()
    tally.emit()


def test_b4_fuzz_whole_store_open() -> None:
    """A fuzzed journal.1 (and a fuzzed snap.2 beside a good generation 1) in a real store."""
    tally = Tally("store open")
    base = Path(tempfile.mkdtemp(prefix="b4-", dir=None))
    try:

        @settings(max_examples=count(40, 20_000), **SETTINGS)
        @given(_inputs(VALID_JOURNAL), st.booleans())
        def check(data: bytes, as_snapshot: bool) -> None:
            root = base / "s"
            shutil.rmtree(root, ignore_errors=True)
            d = root / "state" / "b"
            d.mkdir(parents=True, mode=0o700)
            root.chmod(0o700)
            (root / "state").chmod(0o700)
            if as_snapshot:
                (d / "journal.1").write_bytes(VALID_JOURNAL + frame(9, dumps({"seal": 2})))
                (d / "snap.2").write_bytes(data)
                (d / "journal.2").write_bytes(
                    frame(0, dumps({"v": 1, "kind": "state", "name": "b", "gen": 2}))
                )
            else:
                (d / "journal.1").write_bytes(data)

            def one() -> str:
                with watching_cuts():
                    try:
                        be = open_file_backend(root)
                        try:
                            be.state_items("b")
                        finally:
                            be.close()
                    except CorruptData as exc:
                        _names(exc, exc.path, exc.path.startswith(str(d)))
                        return "CorruptData"
                return "opened"

            tally.run(one)

        check()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    tally.emit()


def test_b4_fuzz_cluster_files() -> None:
    tally = Tally("cluster files")

    @settings(max_examples=count(200, 30_000), **SETTINGS)
    @given(st.one_of(_inputs(VALID_CLUSTER), st.text(max_size=200).map(str.encode)))
    def check(data: bytes) -> None:
        def one() -> str:
            try:
                cluster_parse(data, path="clusterfile", hostname="web1")
            except ClusterFileError as exc:
                _names(exc, "clusterfile", "clusterfile" in str(exc) and exc.line >= 0)
                return "ClusterFileError"
            return "parsed"

        tally.run(one)

    check()
    tally.emit()


json_text = st.recursive(
    st.one_of(
        st.none().map(lambda _: "null"),
        st.booleans().map(json.dumps),
        st.integers().map(str),
        st.floats().map(repr),
        st.text(max_size=20).map(json.dumps),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.text(max_size=5), inner), max_size=4).map(
            lambda kv: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=20,
)
DOCUMENTED_EXITS = {0, 1, 2}


def test_b4_fuzz_cli_json_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    tally = Tally("CLI JSON arguments")
    url = "memory://b4cli"

    @settings(max_examples=count(80, 10_000), **SETTINGS)
    @given(
        st.one_of(
            json_text,
            mutated(b'{"a": [1, 2.5, "x", null, true]}').map(
                lambda b: b.decode("utf-8", "replace")
            ),
            st.text(max_size=60),
            st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
        ),
        st.sampled_from(["state", "queue"]),
    )
    def check(text: str, where: str) -> None:
        def one() -> str:
            args = ["--url", url]
            args += ["state", "set", "b", "k", "--", text] if where == "state" else []
            args += ["queue", "put", "q", "--", text] if where == "queue" else []
            code = cli_main(args)
            out = capsys.readouterr()
            assert code in DOCUMENTED_EXITS, (code, out)
            assert "Traceback" not in out.err + out.out
            return f"exit {code}"

        tally.run(one)

    check()
    tally.emit()
