"""Client process of the grid tests: ``python _grid_client.py URL SERVICE TTL NAME...``.

Runs one session per NAME, each in its own thread (acquire, ``enter``, 5 ``work`` calls,
``leave``, release) and prints one JSON object per session (see :func:`session`), or
``{"error": ...}`` for a session that raised. With the single name ``--hold`` it acquires
one server, prints ``{"pid": <server pid>}`` and holds it until killed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from unidist.cluster import Grid  # noqa: E402

CALLS = 5


def session(grid: Grid, service_id: str, name: str, seconds: float = 0.02) -> dict[str, Any]:
    """One client session; ``t0``/``t1`` (monotonic, comparable between processes on
    Linux) bracket the time the client held the server."""
    with grid.acquire(service_id, timeout=60) as proxy:
        t0 = time.monotonic()
        previous = proxy.enter(name)
        results = [proxy.work(name, seconds) for _ in range(CALLS)]
        overlaps = proxy.leave(name)
        t1 = time.monotonic()
    return {
        "client": name,
        "pid": proxy.pid,
        "previous": previous,
        "results": results,
        "overlaps": overlaps,
        "t0": t0,
        "t1": t1,
    }


def main(url: str, service_id: str, ttl: float, names: list[str]) -> None:
    out = threading.Lock()
    with Grid(url, ttl=ttl) as grid:
        if names == ["--hold"]:
            proxy = grid.acquire(service_id, timeout=60)
            print(json.dumps({"pid": proxy.pid}), flush=True)
            time.sleep(3600)

        def one(name: str) -> None:
            try:
                line: dict[str, Any] = session(grid, service_id, name)
            except Exception as exc:
                line = {"client": name, "error": f"{type(exc).__name__}: {exc}"}
            with out:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:])
