"""`unidist log tail -f` across rotations that race its polls (the follower, driven step by step).

A rotation renames ``f.log`` → ``f.log.1`` (after shifting the older ones) and only then
creates the new ``f.log``. A follower that catches up in that window finds no current file;
it must stay anchored on the newest file it read, so that a file created and rotated away
before its next poll is still read, never skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from unidist.log import tail


def _write(path: Path, *ns: int) -> None:
    with path.open("a") as f:
        for n in ns:
            f.write(json.dumps({"event": "rec", "n": n, "track": "f"}) + "\n")


def _rotate(d: Path, *, create: bool = True) -> None:
    """Shift f.log.N → N+1, rename f.log → f.log.1, then (optionally) create a new f.log."""
    ranks = sorted((int(p.name.rsplit(".", 1)[1]) for p in d.glob("f.log.*")), reverse=True)
    for n in ranks:
        os.rename(d / f"f.log.{n}", d / f"f.log.{n + 1}")
    os.rename(d / "f.log", d / "f.log.1")
    if create:
        (d / "f.log").touch()


def test_a_catch_up_mid_rotation_keeps_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[int] = []

    def emit(rec: dict[str, Any], raw: bytes) -> None:
        got.append(rec["n"])

    flt = tail.Filter(tracks={"f"})
    fds: dict[str, tuple[int, int, int, int]] = {}
    pending: dict[str, bytes] = {}
    path = tmp_path / "f.log"

    def poll() -> None:
        tail._poll_track("f", path, fds, {}, pending, flt, emit)

    _write(path, 0, 1)
    poll()
    assert got == [0, 1]

    _rotate(tmp_path)
    _write(path, 2, 3)
    # The next poll sees the new f.log, but by the time it lists the files a rotation has
    # renamed it away and not yet created the next one.
    real = tail.track_files
    calls = {"n": 0}

    def racing(directory: Path, tracks: set[str] | None = None) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            _rotate(tmp_path, create=False)
        return real(directory, tracks)

    monkeypatch.setattr(tail, "track_files", racing)
    poll()
    monkeypatch.setattr(tail, "track_files", real)
    assert got == [0, 1, 2, 3]

    # Before the next poll a file is created, written and rotated away again.
    path.touch()
    _write(path, 4, 5)
    _rotate(tmp_path)
    _write(path, 6, 7)
    poll()
    assert got == list(range(8))
    for fd, *_ in fds.values():
        os.close(fd)
