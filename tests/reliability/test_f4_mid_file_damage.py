"""F4: mid-file damage and the repair path (RELIABILITY.md 3.1).

A bucket journal holds M records (one key each). One bit of record k is flipped (at a seeded
position: magic, length, sequence, checksum or payload), or record k's length prefix is made
absurd (4 GB). Every case must be detected on open as ``CorruptData`` naming the journal and
record k's offset (no ``json`` traceback, no multi-GB allocation, nothing cut), and stay
detected on the next open. Then ``repair`` (alternately the API and ``unidist backend
repair``) moves the bad record to a quarantine file and keeps the other M-1: the bucket
reopens holding every key but k.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import tracemalloc
from pathlib import Path

import pytest

from tests.backends.test_file_journal import journal_of, record_offsets
from tests.reliability._file_common import open_file_backend, watching_cuts, with_backend
from tests.reliability._report import Result, count, seed
from unidist.cli.main import main as cli_main
from unidist.errors import CorruptData

M = 12


def _build(root: Path) -> dict[str, str]:
    be = open_file_backend(root)
    for i in range(M):
        be.state_set("b", f"k{i}", json.dumps("v" * (10 + 7 * i)))
    want = be.state_items("b")
    be.close()
    return want


def test_f4_mid_file_damage_detected_and_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = seed()
    rng = random.Random(s)
    base = tmp_path / "base"
    want = _build(base)
    jbase = journal_of(base, "state", "b")
    offsets = record_offsets(jbase)  # header + M records
    full = jbase.read_bytes()
    result = Result("F4", "file", s, params={"records": M}, path=str(tmp_path))
    cases: list[tuple[int, str]] = [(k, "bitflip") for k in range(1, M)]  # not the last: torn
    cases += [(rng.randrange(1, M), "absurd-length") for _ in range(2)]
    cases += [(rng.randrange(1, M), "bitflip") for _ in range(count(4, 500))]
    detected = salvaged = 0
    peak_alloc = 0
    for i, (k, how) in enumerate(cases):
        root = tmp_path / f"c{i}"
        shutil.copytree(base, root)
        j = journal_of(root, "state", "b")
        data = bytearray(full)
        if how == "bitflip":
            end = offsets[k + 1]
            pos = rng.randrange(offsets[k], end)
            data[pos] ^= 1 << rng.randrange(8)
        else:
            struct.pack_into(">I", data, offsets[k] + 2, 0xFFFFFFF0)
        j.write_bytes(bytes(data))
        result.attempted += 1
        for _ in range(2):  # detected, and still detected on the next open (nothing cut)
            tracemalloc.start()
            try:
                with pytest.raises(CorruptData) as ei:
                    with_backend(root, lambda be: be.state_items("b"))
                peak_alloc = max(peak_alloc, tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            assert ei.value.path == str(j), (k, how)
            assert ei.value.offset == offsets[k], (k, how, str(ei.value))
            assert f"offset {offsets[k]}" in str(ei.value)
            assert j.read_bytes() == bytes(data)
        detected += 1
        # repair: the API on even cases, the CLI on odd ones
        if i % 2 == 0:
            be = open_file_backend(root)
            reports = be.repair()
            be.close()
            assert [(r.quarantined, r.error) for r in reports] == [(1, "")]
            qfile = reports[0].quarantine_file
        else:
            capsys.readouterr()
            code = cli_main(["--url", f"file://{root}", "--json", "backend", "repair"])
            out = json.loads(capsys.readouterr().out)
            assert code == 0, out
            assert [o["quarantined"] for o in out["objects"]] == [1]
            qfile = out["objects"][0]["quarantine_file"]
        items = [json.loads(line) for line in Path(qfile).read_text().splitlines()]
        assert len(items) == 1
        assert items[0]["offset"] == offsets[k]
        assert items[0]["file"] == str(j)
        with watching_cuts() as cuts:
            be = open_file_backend(root)
            got = be.state_items("b")
            be.state_set("b", "after", "1")  # the repaired journal takes writes again
            be.close()
        assert cuts.cuts == []
        assert got == {key: v for key, v in want.items() if key != f"k{k - 1}"}, (k, how)
        salvaged += len(got)
        result.recovered += len(got)
        result.ok += 1
        shutil.rmtree(root)
    result.extra = {
        "cases": len(cases),
        "detection_rate": f"{detected}/{len(cases)}",
        "records_salvaged": f"{salvaged}/{len(cases) * M}",
        "peak_alloc_kib": peak_alloc // 1024,
    }
    result.emit()
    assert detected == len(cases)
    assert peak_alloc < 16 * 1024 * 1024
