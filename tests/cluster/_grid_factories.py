"""Service factories for the grid tests (imported by ``unidist serve`` in the servers).

:class:`Probe` answers with its server's pid and detects overlap: a client calls
``enter(name)`` after acquiring and ``leave(name)`` before releasing; every ``work`` call
says whether the caller is the one that entered. A server bound to two clients at once
shows up as an ``enter`` that finds another owner or a ``work`` call from a non-owner.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class ProbeFailure(RuntimeError):
    """Raised on purpose by :meth:`Probe.fail`."""


class Probe:
    """One instance per server; ``mark_dir`` receives ``calling.<pid>`` marks from
    :meth:`sleep` (so a test knows a call is running)."""

    def __init__(self, mark_dir: str, tag: str = "") -> None:
        self.pid = os.getpid()
        self.tag = tag
        self.mark_dir = Path(mark_dir)
        self.owner: str | None = None
        self.overlaps: list[str] = []

    def whoami(self) -> dict[str, Any]:
        """This server's pid, tag, and the ssh alias it was started through (if any)."""
        return {"pid": self.pid, "tag": self.tag, "node": os.environ.get("UNIDIST_TEST_NODE")}

    def enter(self, client: str) -> str | None:
        """``client`` starts using this server; returns the previous owner (None if free)."""
        previous = self.owner
        if previous is not None:
            self.overlaps.append(f"{client} entered while {previous} owned")
        self.owner = client
        return previous

    def work(self, client: str, seconds: float = 0.0) -> dict[str, Any]:
        """Hold the server for ``seconds`` as ``client``."""
        time.sleep(seconds)
        return {"pid": self.pid, "client": client, "owner_ok": self.owner == client}

    def leave(self, client: str) -> list[str]:
        """``client`` stops using this server; returns every overlap seen so far."""
        if self.owner != client:
            self.overlaps.append(f"{client} left while {self.owner} owned")
        self.owner = None
        return self.overlaps

    def fail(self, message: str) -> None:
        """Raise :class:`ProbeFailure` with ``message``."""
        raise ProbeFailure(message)

    def echo(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the arguments as given."""
        return {"args": list(args), "kwargs": kwargs}

    def not_json(self) -> Any:
        """Return a value that is not JSON."""
        return {1, 2}

    def sleep(self, seconds: float) -> int:
        """Mark ``calling.<pid>``, sleep, then return the pid."""
        (self.mark_dir / f"calling.{self.pid}").write_text("")
        time.sleep(seconds)
        return self.pid


class Broken:
    """A factory that fails at start."""

    def __init__(self) -> None:
        raise ValueError("broken on purpose")
