"""The logger, the record builder and the process-wide runtime of :mod:`unidist.log`.

A record is built once per call, encoded once as a JSON line, and handed to each output: the
track file (:mod:`unidist.log._writer`), the console and syslog (:mod:`unidist.log._outputs`).
Nothing is configured on import: the runtime is created from the environment at the first
record, or by :func:`setup`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any, Final

import structlog
from structlog.contextvars import merge_contextvars

from unidist._names import check_name
from unidist.cluster._current import current as current_member
from unidist.errors import InvalidName
from unidist.log._config import DEFAULT_TRACK, LogConfig, build_config
from unidist.log._outputs import Console, SyslogSender
from unidist.log._writer import TrackWriter

DEBUG: Final = logging.DEBUG
INFO: Final = logging.INFO
WARNING: Final = logging.WARNING
ERROR: Final = logging.ERROR
CRITICAL: Final = logging.CRITICAL
_NAMES: Final = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error",
                 CRITICAL: "critical"}  # fmt: skip
RESERVED: Final = ("timestamp", "level", "event", "track", "host", "pid", "thread", "script",
                   "file", "line", "func")  # fmt: skip
"""Keys every record has, in this order; a caller's key/value of the same name gets a ``_``
suffix (``host=`` → ``host_``)."""
_RESERVED_SET: Final = frozenset((*RESERVED, "exception", "traceback"))
_STDLIB_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "track",
}

_LEVEL = 0
"""Lowest enabled level; 0 until the runtime exists, so the first call creates it."""
_PID = os.getpid()
_RT: _Runtime | None = None
_RT_LOCK = threading.RLock()
_ISO_CACHE: tuple[int, str] = (-1, "")
_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Print one ``unidist.log: warning:`` line on stderr; never raises."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(f"unidist.log: warning: {message}\n")
        sys.stderr.flush()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warn(message)


def _iso(t: float) -> str:
    """``2024-05-01T12:00:00.123456Z`` (UTC, microseconds)."""
    global _ISO_CACHE
    sec = int(t)
    cached = _ISO_CACHE
    if cached[0] != sec:
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        _ISO_CACHE = cached
    return f"{cached[1]}.{int((t - sec) * 1_000_000):06d}Z"


def _default(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the record
        return f"<unrepresentable {type(value).__name__}>"


_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default
)
_C_MAKE_ENCODER: Final[Any] = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_STR: Final[Any] = getattr(json.encoder, "encode_basestring", None)


def _ENCODE(value: Any) -> str:  # noqa: N802 - used like a constant function
    """``_ENCODER.encode`` without its Python-level wrappers when the C encoder exists."""
    if _C_MAKE_ENCODER is None or _ENCODE_STR is None:
        return _ENCODER.encode(value)
    if isinstance(value, str):
        return str(_ENCODE_STR(value))
    chunks = _C_MAKE_ENCODER({}, _default, _ENCODE_STR, None, ":", ",", False, False, False)(
        value, 0
    )
    return "".join(chunks)


def _sanitize(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: non-str keys become str, NaN and circular values become repr."""
    if isinstance(value, Mapping) and depth < 20:
        return {str(k): _sanitize(v, depth + 1) for k, v in value.items()}
    try:
        _ENCODE(value)
        return value
    except (TypeError, ValueError, RecursionError):
        return _default(value)


def encode(rec: Mapping[str, Any]) -> bytes:
    """One record as one UTF-8 JSON line; values JSON cannot hold are rendered with ``repr``."""
    try:
        text = _ENCODE(rec)
    except (TypeError, ValueError, RecursionError):
        text = _ENCODE(_sanitize(rec))
    return (text + "\n").encode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------- exceptions
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_tuple(exc_info: object) -> ExcInfo | None:
    if isinstance(exc_info, BaseException):
        return type(exc_info), exc_info, exc_info.__traceback__
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        return exc_info
    if exc_info:
        current = sys.exc_info()
        if current[1] is not None:
            return current
    return None


def exception_dict(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """``{"type", "module", "message", "frames": [{"file", "line", "func"}], "cause"?}``."""
    try:
        message = str(exc)
    except Exception:
        message = _default(exc)
    out: dict[str, Any] = {
        "type": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": message,
        "frames": [
            {"file": f.filename, "line": f.lineno, "func": f.name}
            for f in traceback.extract_tb(exc.__traceback__)
        ],
    }
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and depth < 8:
        out["cause"] = exception_dict(cause, depth + 1)
    return out


def _add_exception(rec: dict[str, Any], exc_info: object) -> None:
    info = _exc_tuple(exc_info)
    if info is None:
        return
    rec["exception"] = exception_dict(info[1])
    rec["traceback"] = "".join(traceback.format_exception(*info))


def _merge(rec: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        name = key if isinstance(key, str) else str(key)
        rec[name + "_" if name in _RESERVED_SET else name] = value


# ---------------------------------------------------------------------------- runtime
class _Runtime:
    """The outputs of one configuration: track writers, console, syslog."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.level = config.level
        self.host = config.host
        self.script = str(getattr(sys, "argv", [""])[0] if getattr(sys, "argv", None) else "")
        self.writers: dict[str, TrackWriter] = {}
        self.lock = threading.Lock()
        self.console = Console(config.console) if config.console != "off" else None
        self.syslog: SyslogSender | None = None
        if config.syslog:
            try:
                self.syslog = SyslogSender(config.syslog, config.host, warn)
            except ValueError as exc:
                warn(str(exc))

    def writer(self, track: str) -> TrackWriter:
        w = self.writers.get(track)
        if w is None:
            with self.lock:
                w = self.writers.get(track)
                if w is None:
                    cfg = self.config
                    w = TrackWriter(
                        cfg.dir / f"{track}.log",
                        cfg.rotate_bytes,
                        cfg.rotate_interval,
                        cfg.keep,
                        cfg.fsync,
                        warn,
                    )
                    self.writers[track] = w
        return w

    def emit(
        self, track: str, levelno: int, rec: dict[str, Any], when: float | None = None
    ) -> None:
        """Write ``rec`` to its outputs; ``when`` (the record's time) picks the time-rotated
        file, so a file never holds records of two periods."""
        line = encode(rec)
        if self.config.files:
            self.writer(track).write(line, when)
        if self.console is not None:
            self.console.write(rec, line)
        if self.syslog is not None:
            self.syslog.send(track, levelno, line)

    def close(self) -> None:
        for w in list(self.writers.values()):
            w.close()
        if self.syslog is not None:
            self.syslog.close()

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        for w in self.writers.values():
            w.after_fork()
        if self.syslog is not None:
            self.syslog.after_fork()


def runtime() -> _Runtime:
    """The current runtime, created from ``UNIDIST_LOG_*`` on first use."""
    global _RT, _LEVEL
    rt = _RT
    if rt is not None:
        return rt
    with _RT_LOCK:
        if _RT is None:
            _RT = _Runtime(build_config())
            _LEVEL = _RT.level
        return _RT


def install(config: LogConfig) -> None:
    """Replace the runtime by one for ``config`` (closing the previous outputs)."""
    global _RT, _LEVEL
    with _RT_LOCK:
        old, _RT = _RT, _Runtime(config)
        _LEVEL = config.level
        if old is not None:
            old.close()


def uninstall() -> None:
    """Close the outputs and forget the configuration (the next record re-reads the env)."""
    global _RT, _LEVEL
    with _RT_LOCK:
        old, _RT = _RT, None
        _LEVEL = 0
        if old is not None:
            old.close()


def _after_fork_in_child() -> None:
    global _PID, _RT_LOCK
    _PID = os.getpid()
    _RT_LOCK = threading.RLock()
    if _RT is not None:
        _RT.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------- the logger
class _Track:
    """What a :class:`TrackLogger` wraps: just the track name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<track {self.name}>"


class TrackLogger(structlog.BoundLoggerBase):
    """A structlog bound logger writing to one track (see :func:`unidist.log.get_logger`).

    ``bind()``/``unbind()``/``new()`` work as in structlog; values bound with
    ``structlog.contextvars.bind_contextvars`` are merged in. Level methods take an event,
    optional ``%`` arguments, ``exc_info=`` and key/values; they never raise.
    """

    _logger: _Track

    @property
    def track(self) -> str:
        """The track name (the file is ``<dir>/<track>.log``)."""
        return self._logger.name

    def debug(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at debug level."""
        if _LEVEL <= DEBUG:
            self._log(DEBUG, event, args, kw)

    def info(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at info level."""
        if _LEVEL <= INFO:
            self._log(INFO, event, args, kw)

    def warning(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at warning level."""
        if _LEVEL <= WARNING:
            self._log(WARNING, event, args, kw)

    warn = warning

    def error(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at error level."""
        if _LEVEL <= ERROR:
            self._log(ERROR, event, args, kw)

    def critical(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at critical level."""
        if _LEVEL <= CRITICAL:
            self._log(CRITICAL, event, args, kw)

    fatal = critical

    def exception(self, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at error level with the exception being handled (``exc_info=True``)."""
        kw.setdefault("exc_info", True)
        if _LEVEL <= ERROR:
            self._log(ERROR, event, args, kw)

    def log(self, level: int | str, event: object = None, *args: Any, **kw: Any) -> None:
        """Log at ``level`` (a stdlib level number or name)."""
        levelno = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
        if not isinstance(levelno, int):
            levelno = INFO
        if levelno >= _LEVEL:
            self._log(levelno, event, args, kw)

    def is_enabled_for(self, level: int) -> bool:
        """True if a record at ``level`` would be written."""
        return level >= runtime().level

    def _log(self, levelno: int, event: object, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        try:
            rt = _RT or runtime()
            if levelno < rt.level:
                return
            frame = sys._getframe(2)
            exc_info = kw.pop("exc_info", None)
            if args:
                try:
                    event = str(event) % args
                except (TypeError, ValueError):
                    event = f"{event} {args!r}"
            try:
                _, processed = self._process_event(
                    _NAMES.get(levelno, "info"), None if event is None else str(event), kw
                )
            except structlog.DropEvent:
                return
            ctx = processed if type(processed) is dict else dict(processed)
            now = time.time()
            rec = build_record(rt, self._logger.name, levelno, ctx, frame, now)
            if exc_info:
                _add_exception(rec, exc_info)
            rt.emit(self._logger.name, levelno, rec, now)
        except Exception as exc:  # logging must never break the caller
            _warn_once(f"log:{type(exc).__name__}", f"a record could not be logged: {exc!r}")


def build_record(
    rt: _Runtime,
    track: str,
    levelno: int,
    ctx: dict[str, Any],
    frame: FrameType,
    now: float | None = None,
) -> dict[str, Any]:
    """The record of one call, keys in DESIGN order, then the caller's key/values (``ctx`` is
    consumed: its ``event`` is popped)."""
    code = frame.f_code
    rec: dict[str, Any] = {
        "timestamp": _iso(time.time() if now is None else now),
        "level": _NAMES.get(levelno) or logging.getLevelName(levelno).lower(),
        "event": ctx.pop("event", None),
        "track": track,
        "host": rt.host,
        "pid": _PID,
        "thread": threading.current_thread().name,
        "script": rt.script,
        "file": code.co_filename,
        "line": frame.f_lineno,
        "func": code.co_name,
    }
    _add_member(rec)
    if ctx:
        _merge(rec, ctx)
    return rec


def _add_member(rec: dict[str, Any]) -> None:
    """``member`` and ``groups`` while a cluster membership is current."""
    member = current_member()
    if member is not None:
        rec["member"] = member.member_id
        rec["groups"] = list(member.groups)


def get_logger(track: str = DEFAULT_TRACK, **initial_values: Any) -> TrackLogger:
    """A logger writing to ``track`` (file ``<dir>/<track>.log``); works without setup.

    Args:
        track: letters, digits and ``._-:@`` (default ``main``).
        **initial_values: key/values bound to every record of this logger.

    Raises:
        InvalidName: ``track`` breaks the naming rule (checked here, not at each record).
    """
    return TrackLogger(_Track(check_name(track, "track name")), [merge_contextvars],
                       initial_values)  # fmt: skip


# ---------------------------------------------------------------------------- stdlib bridge
class StdlibHandler(logging.Handler):
    """Route stdlib ``logging`` records into tracks with the same fields.

    The track is ``setup(stdlib_track=...)`` (default ``main``), or ``extra={"track": ...}``.
    The logger's name is kept under ``logger``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write one stdlib record; never raises."""
        try:
            rt = runtime()
            track = rt.config.stdlib_track
            wanted = record.__dict__.get("track")
            if isinstance(wanted, str) and wanted != track:
                with contextlib.suppress(InvalidName):
                    track = check_name(wanted, "track name")
            rec: dict[str, Any] = {
                "timestamp": _iso(record.created),
                "level": record.levelname.lower(),
                "event": record.getMessage(),
                "track": track,
                "host": rt.host,
                "pid": record.process,
                "thread": record.threadName,
                "script": rt.script,
                "file": record.pathname,
                "line": record.lineno,
                "func": record.funcName,
                "logger": record.name,
            }
            _add_member(rec)
            extra = {k: v for k, v in record.__dict__.items() if k not in _STDLIB_ATTRS}
            if extra:
                _merge(rec, extra)
            if record.exc_info:
                _add_exception(rec, record.exc_info)
            rt.emit(track, record.levelno, rec, record.created)
        except Exception as exc:
            _warn_once(f"stdlib:{type(exc).__name__}", f"a logging record was lost: {exc!r}")
