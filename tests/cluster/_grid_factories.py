"""Service factories for the grid tests (imported by ``unidist serve`` in the servers).

:class:`Probe` answers with its server's pid and detects overlap: every call marks the
server busy in a file under the directory it was given, and a call that finds the mark
already set reports ``overlap``: two clients on one server at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class ProbeFailure(RuntimeError):
    """Raised on purpose by :meth:`Probe.fail`."""


class Probe:
    """One instance per server; ``mark_dir`` collects the overlap marks."""

    def __init__(self, mark_dir: str, tag: str = "") -> None:
        self.pid = os.getpid()
        self.tag = tag
        self.mark = Path(mark_dir) / f"busy.{self.pid}"
        self.calls = 0

    def whoami(self) -> dict[str, Any]:
        """This server's pid and tag."""
        return {"pid": self.pid, "tag": self.tag}

    def work(self, client: str, seconds: float = 0.01) -> dict[str, Any]:
        """Hold the server for ``seconds`` as ``client``; report any overlap."""
        overlap = None
        try:
            fd = os.open(self.mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            overlap = self.mark.read_text()
        else:
            os.write(fd, client.encode())
            os.close(fd)
        time.sleep(seconds)
        if overlap is None:
            self.mark.unlink()
        self.calls += 1
        return {"pid": self.pid, "client": client, "overlap": overlap, "calls": self.calls}

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
        """Sleep, then return the pid."""
        time.sleep(seconds)
        return self.pid


class Broken:
    """A factory that fails at start."""

    def __init__(self) -> None:
        raise ValueError("broken on purpose")
