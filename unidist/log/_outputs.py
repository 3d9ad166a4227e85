"""Secondary outputs of a record: the console (stderr) and syslog.

Neither ever raises into the caller: a failing output warns once on stderr and keeps trying
(a syslog TCP connection is reopened on the next record).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import structlog

from unidist.log._config import ConsoleMode

_HIDDEN_ON_CONSOLE: Final = frozenset(
    {"timestamp", "level", "event", "track", "host", "pid", "thread", "script", "file", "line",
     "func", "exception", "traceback"}
)  # fmt: skip

_SEVERITY: Final = ((50, 2), (40, 3), (30, 4), (20, 6), (0, 7))
"""stdlib level floor → syslog severity (crit, err, warning, info, debug)."""
_FACILITY_USER: Final = 1
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")  # fmt: skip
_LOCAL_SOCKETS: Final = ("/dev/log", "/var/run/syslog", "/var/run/log")


class Console:
    """Write records to ``sys.stderr`` (looked up at each call, so redirection works).

    ``auto`` renders readably when stderr is a terminal and as JSON lines otherwise.
    """

    def __init__(self, mode: ConsoleMode) -> None:
        if mode == "auto":
            try:
                mode = "pretty" if sys.stderr.isatty() else "json"
            except (AttributeError, ValueError):
                mode = "json"
        self.mode = mode
        self._renderer: Callable[..., Any] | None = None
        if mode == "pretty":
            colors = False
            with contextlib.suppress(AttributeError, ValueError):
                colors = sys.stderr.isatty() and "NO_COLOR" not in os.environ
            self._renderer = structlog.dev.ConsoleRenderer(colors=colors)

    def write(self, rec: dict[str, Any], line: bytes) -> None:
        """Print one record; output errors are ignored (stderr may be closed)."""
        stream = sys.stderr
        if stream is None:
            return
        try:
            if self._renderer is None:
                stream.write(line.decode("utf-8", "replace"))
            else:
                stream.write(self._renderer(None, rec["level"], _console_dict(rec)) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass


def _console_dict(rec: dict[str, Any]) -> dict[str, Any]:
    stamp = str(rec.get("timestamp", ""))
    out: dict[str, Any] = {
        "timestamp": stamp[11:23] if len(stamp) > 23 else stamp,
        "level": rec.get("level"),
        "event": rec.get("event"),
        "logger": rec.get("track"),
    }
    for key, value in rec.items():
        if key not in _HIDDEN_ON_CONSOLE:
            out[key] = value
    out["at"] = f"{os.path.basename(str(rec.get('file')))}:{rec.get('line')}"
    if rec.get("traceback"):
        out["exception"] = str(rec["traceback"]).rstrip("\n")
    return out


def _severity(levelno: int) -> int:
    for floor, severity in _SEVERITY:
        if levelno >= floor:
            return severity
    return 7


class SyslogSender:
    """Send records to syslog with the track as the program name (``<PRI>… track[pid]: {json}``).

    Args:
        spec: ``local`` (the first of /dev/log, /var/run/syslog that exists),
            ``unix:///path/to/socket`` (datagram), ``udp://host[:514]`` or
            ``tcp://host[:514]`` (newline-framed, RFC 6587).
        host: the host name sent to remote (UDP/TCP) receivers.
        warn: called with a one-line message when sending starts failing.

    Raises:
        ValueError: an unknown scheme.
    """

    def __init__(self, spec: str, host: str, warn: Callable[[str], None]) -> None:
        self.spec = spec
        self.host = host
        self._warn = warn
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False
        self.address: str | tuple[str, int]
        if spec == "local":
            found = next((p for p in _LOCAL_SOCKETS if os.path.exists(p)), _LOCAL_SOCKETS[0])
            self.kind, self.address = "unix", found
            return
        parts = urlsplit(spec)
        if parts.scheme == "unix":
            self.kind, self.address = "unix", parts.path
        elif parts.scheme in {"udp", "tcp"}:
            self.kind = parts.scheme
            self.address = (parts.hostname or "localhost", parts.port or 514)
        else:
            raise ValueError(
                f"syslog must be 'local', unix:///path, udp://host:port or tcp://host:port, "
                f"got {spec!r}"
            )

    def after_fork(self) -> None:
        """In a forked child: own socket and lock."""
        self._lock = threading.Lock()
        self._sock = None

    def send(self, track: str, levelno: int, line: bytes) -> None:
        """Send one record; never raises."""
        pri = _FACILITY_USER * 8 + _severity(levelno)
        now = time.localtime()
        stamp = f"{_MONTHS[now.tm_mon - 1]} {now.tm_mday:2d} {time.strftime('%H:%M:%S', now)}"
        who = "" if self.kind == "unix" else f"{self.host} "
        head = f"<{pri}>{stamp} {who}{track}[{os.getpid()}]: ".encode()
        payload = head + line.rstrip(b"\n")
        with self._lock:
            try:
                sock = self._sock or self._connect()
                if self.kind == "tcp":
                    sock.sendall(payload + b"\n")
                else:
                    sock.send(payload)
            except OSError as exc:
                self.close_locked()
                if not self._failing:
                    self._failing = True
                    self._warn(f"cannot send to syslog {self.spec}: {exc}")
                return
            self._failing = False

    def close(self) -> None:
        """Close the socket."""
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def _connect(self) -> socket.socket:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        elif self.kind == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(2.0)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock
