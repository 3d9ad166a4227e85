"""Helpers shared by the file-backend reliability scenarios (F1-F7, B, X)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.reliability._report import Result
from unidist.backends.file import FileBackend

T = TypeVar("T")
_CUT = re.compile(r"cut a torn tail of (\d+) bytes at offset (\d+)")


def file_url(root: Path, fsync: str = "always", **opts: object) -> str:
    query = "&".join([f"fsync={fsync}", *(f"{k}={v}" for k, v in opts.items())])
    return f"file://{root}?{query}"


def open_file_backend(root: Path, fsync: str = "always", compact: int | None = None) -> FileBackend:
    be = FileBackend.from_url(file_url(root, fsync))
    assert isinstance(be, FileBackend)
    if compact is not None:
        be._cfg.compact_records = compact
    return be


@dataclass
class Cuts:
    """Torn tails cut during a block: (offset, bytes) each, and every warning text."""

    cuts: list[tuple[int, int]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def add_to(self, result: Result) -> None:
        result.torn_tails_cut += len(self.cuts)
        result.bytes_cut += sum(n for _, n in self.cuts)


@contextmanager
def watching_cuts() -> Iterator[Cuts]:
    """Record the torn-tail/recovery warnings raised inside the block (none escape)."""
    out = Cuts()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield out
        finally:
            for w in caught:
                text = str(w.message)
                out.messages.append(text)
                m = _CUT.search(text)
                if m:
                    out.cuts.append((int(m.group(2)), int(m.group(1))))


def with_backend(root: Path, fn: Callable[[FileBackend], T], fsync: str = "always") -> T:
    be = open_file_backend(root, fsync)
    try:
        return fn(be)
    finally:
        be.close()
