"""Shared parts of the log shipping scenarios (S1-S4): reading the store back, counting.

Records are JSON lines carrying ``host`` and a number ``n``; what the store holds is read
back from the Redis streams and compared with what was written.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from unidist.log._files import fingerprint
from unidist.log._store import RedisStore

ROOT = Path(__file__).resolve().parents[2]
PROCS = Path(__file__).resolve().parent / "_log_procs.py"


def fresh_prefix(url: str) -> str:
    """``url`` with a fresh key prefix, so scenarios sharing a server do not mix."""
    return f"{url}?prefix=s{uuid.uuid4().hex[:10]}:"


def stored(url: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (record id, record) the store at ``url`` holds, all tracks."""
    store = RedisStore(url)
    try:
        out: list[tuple[str, dict[str, Any]]] = []
        for track in store.tracks():
            after = "-"
            while True:
                page = store.read(track, after, 5000)
                if not page:
                    break
                out += [(rid.decode(), _parse(raw)) for _, rid, raw in page]
                after = page[-1][0]
        return out
    finally:
        store.close()


def _parse(raw: bytes) -> dict[str, Any]:
    """A stored record, or ``{"corrupt": text}`` if it is not a JSON object with an ``n``."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return {"corrupt": raw.decode(errors="replace")}
    return rec if isinstance(rec, dict) and "n" in rec else {"corrupt": repr(rec)}


def numbers(url: str) -> collections.Counter[tuple[str, int]]:
    """How often each (host, n) is in the store (corrupt records left out)."""
    return collections.Counter(
        (str(r.get("host")), int(r["n"])) for _, r in stored(url) if "corrupt" not in r
    )


def corrupt(url: str) -> list[str]:
    """Stored records that are not whole records (pieces of lines, garbage)."""
    return [r["corrupt"] for _, r in stored(url) if "corrupt" in r]


def wait_for(url: str, want: int, timeout: float) -> float:
    """Wait until the store holds ``want`` records; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(stored(url)) >= want:
            break
        time.sleep(0.05)
    return time.monotonic() - t0


def line(host: str, n: int, pad: int = 40) -> bytes:
    """One log record as a JSON line."""
    return json.dumps({"host": host, "n": n, "event": "rec", "pad": "x" * pad}).encode() + b"\n"


def child(*args: str) -> subprocess.Popen[bytes]:
    """Start ``_log_procs.py`` with ``args`` (stdout piped, stderr to a pipe)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for var in [v for v in env if v.startswith("UNIDIST_LOG_")]:
        del env[var]
    return subprocess.Popen(
        [sys.executable, str(PROCS), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def in_flight_records(directory: Path, state: dict[str, Any], acked: dict[str, int]) -> int:
    """Records between the offset a state file saved and the offset the store acknowledged,
    per file: what a shipper restarted from that state file sends again."""
    paths: dict[str, Path] = {}
    for path in directory.glob("*.log*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fp = fingerprint(fd)
            if fp is not None:
                paths.setdefault(fp, path)
        finally:
            os.close(fd)
    total = 0
    for fp, entry in state.get("files", {}).items():
        gap_from, gap_to = int(entry["offset"]), acked.get(fp, 0)
        if gap_to > gap_from and fp in paths:
            with paths[fp].open("rb") as fh:
                fh.seek(gap_from)
                total += fh.read(gap_to - gap_from).count(b"\n")
    return total
