"""Running a command line for ``lock run``, ``sem run``, ``run`` and ``queue work``.

No shell is involved: CMD is executed directly. SIGINT, SIGTERM and SIGHUP received by
``unidist`` are forwarded to CMD (unidist keeps waiting for CMD, then cleans up: releases its
lock, records the run). A Ctrl-C typed at a terminal already reaches CMD, which shares
unidist's process group; it is not sent a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import IO, Final

import click

FORWARDED: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_NOT_FOUND: Final = 127
EXIT_NOT_EXECUTABLE: Final = 126
_CHUNK: Final = 65536


def exit_status(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell would report it (128+N for death by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def _terminal_sent(signum: int) -> bool:
    """True if ``signum`` is a SIGINT that the controlling terminal sent to our whole
    foreground process group (CMD included), so forwarding it would deliver it twice."""
    if signum != signal.SIGINT:
        return False
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


class SignalForwarder:
    """Context manager: while active, SIGINT/SIGTERM/SIGHUP are recorded in :attr:`received`
    and forwarded to :attr:`proc` (when set and still running) instead of stopping unidist.

    Only the main thread can install signal handlers; elsewhere it records nothing.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        proc = self.proc
        if proc is None or proc.returncode is not None or _terminal_sent(signum):
            return
        try:
            proc.send_signal(signum)
        except (ProcessLookupError, OSError):
            pass

    @property
    def stop_signal(self) -> int | None:
        """The first signal received, or None."""
        return self.received[0] if self.received else None


@dataclass(frozen=True)
class ChildResult:
    """How CMD ended.

    Attributes:
        pid: CMD's process id (None if it could not be started).
        exit_code: shell-style status (0-255; 128+N for signal N; 127/126 when not started).
        stdout_tail, stderr_tail: the last bytes of its output (only when captured with tee).
        error: why CMD could not be started, or None.
    """

    pid: int | None
    exit_code: int
    stdout_tail: bytes = b""
    stderr_tail: bytes = b""
    error: str | None = None


def _binary(stream: IO[str]) -> IO[bytes] | None:
    return getattr(stream, "buffer", None)


def _pump(src: IO[bytes], dst: IO[str], tail: bytearray, limit: int) -> None:
    """Copy ``src`` to ``dst`` as it arrives, keeping the last ``limit`` bytes in ``tail``.

    If our own output goes away, keep draining ``src`` so that CMD never blocks on a pipe.
    """
    out = _binary(dst)
    fd = src.fileno()
    writable = True
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError:
            break
        if not chunk:
            break
        tail += chunk
        if len(tail) > limit:
            del tail[: len(tail) - limit]
        if not writable:
            continue
        try:
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                dst.write(chunk.decode("utf-8", "replace"))
                dst.flush()
        except (OSError, ValueError):
            writable = False
    src.close()


def _feed(dst: IO[bytes], data: bytes) -> None:
    try:
        dst.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            dst.close()
        except OSError:
            pass


def run_child(
    argv: Sequence[str],
    forwarder: SignalForwarder,
    *,
    env: Mapping[str, str] | None = None,
    stdin_data: bytes | None = None,
    tee_tail: int | None = None,
    on_start: Callable[[int], object] | None = None,
) -> ChildResult:
    """Run ``argv`` (no shell) to completion and return how it ended.

    Args:
        argv: the command line; ``argv[0]`` is looked up on ``$PATH``.
        forwarder: an active :class:`SignalForwarder`; signals are forwarded to CMD.
        env: extra environment variables for CMD.
        stdin_data: bytes written to CMD's stdin (then closed); None: CMD inherits stdin.
        tee_tail: capture stdout/stderr, pass them through to ours, and keep this many
            trailing bytes of each; None: CMD inherits our stdout/stderr.
        on_start: called with CMD's pid once it runs (before its output is read).
    """
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    tee = tee_tail is not None
    try:
        proc = subprocess.Popen(  # noqa: S603 - the user's own command line, no shell
            list(argv),
            env=full_env,
            stdin=subprocess.PIPE if stdin_data is not None else None,
            stdout=subprocess.PIPE if tee else None,
            stderr=subprocess.PIPE if tee else None,
        )
    except FileNotFoundError:
        msg = f"{argv[0]}: command not found"
        click.echo(f"unidist: error: {msg}", err=True)
        return ChildResult(None, EXIT_NOT_FOUND, error=msg)
    except (PermissionError, OSError) as exc:
        msg = f"cannot run {argv[0]}: {exc.strerror or exc}"
        click.echo(f"unidist: error: {msg}", err=True)
        return ChildResult(None, EXIT_NOT_EXECUTABLE, error=msg)
    forwarder.proc = proc
    threads: list[threading.Thread] = []
    tails = (bytearray(), bytearray())
    if stdin_data is not None and proc.stdin is not None:
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, stdin_data), daemon=True))
    if tee and proc.stdout is not None and proc.stderr is not None:
        limit = tee_tail or 0
        threads.append(
            threading.Thread(
                target=_pump, args=(proc.stdout, sys.stdout, tails[0], limit), daemon=True
            )
        )
        threads.append(
            threading.Thread(
                target=_pump, args=(proc.stderr, sys.stderr, tails[1], limit), daemon=True
            )
        )
    for t in threads:
        t.start()
    if on_start is not None:
        on_start(proc.pid)
    # A signal that arrived before CMD existed is delivered now.
    for signum in list(forwarder.received):
        if not _terminal_sent(signum):
            try:
                proc.send_signal(signum)
            except OSError:
                pass
    returncode = proc.wait()
    for t in threads:
        t.join()
    forwarder.proc = None
    return ChildResult(proc.pid, exit_status(returncode), bytes(tails[0]), bytes(tails[1]))


__all__ = ["ChildResult", "SignalForwarder", "exit_status", "run_child"]
