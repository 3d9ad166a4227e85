"""Configuration of :mod:`unidist.log`: defaults, ``UNIDIST_LOG_*`` variables, value parsing.

Precedence: an argument given to :func:`unidist.log.setup` wins over the environment, which
wins over the defaults. A bad environment value never breaks a logging call: it produces one
warning on stderr and the default is used. A bad ``setup()`` argument raises ``ValueError``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import platformdirs

from unidist._names import check_name

ConsoleMode = Literal["auto", "pretty", "json", "off"]

DEFAULT_ROTATE_BYTES: Final = 100 * 1024 * 1024
DEFAULT_KEEP: Final = 7
DEFAULT_TRACK: Final = "main"

ENV_VARS: Final = (
    "UNIDIST_LOG_DIR",
    "UNIDIST_LOG_LEVEL",
    "UNIDIST_LOG_CONSOLE",
    "UNIDIST_LOG_SYSLOG",
    "UNIDIST_LOG_ROTATE",
    "UNIDIST_LOG_KEEP",
    "UNIDIST_LOG_FSYNC",
    "UNIDIST_LOG_STDLIB_TRACK",
    "UNIDIST_LOG_HOST",
)

_UNITS: Final = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
}
_SIZE_RE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_INTERVAL_NAMES: Final = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}
_INTERVAL_RE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*")
_INTERVAL_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_CONSOLE_WORDS: Final[Mapping[str, ConsoleMode]] = {
    "auto": "auto",
    "pretty": "pretty",
    "json": "json",
    "off": "off",
    "1": "auto",
    "true": "auto",
    "yes": "auto",
    "on": "auto",
    "0": "off",
    "false": "off",
    "no": "off",
}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"10MB"``, ``"512K"``, ``"1.5GiB"`` (1024-based).

    Raises:
        ValueError: negative, zero, or not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE_RE.fullmatch(str(value))
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(f"not a size: {value!r} (examples: 1048576, '10MB', '512K')")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size must be > 0, got {value!r}")
    return size


def parse_interval(value: str) -> float | None:
    """Seconds for ``hourly``/``daily``/``weekly`` or ``30m``, ``6h``, ``1d``; None if not one."""
    text = value.strip().lower()
    if text in _INTERVAL_NAMES:
        return _INTERVAL_NAMES[text]
    match = _INTERVAL_RE.fullmatch(text)
    if match is None:
        return None
    seconds = float(match.group(1)) * _INTERVAL_UNITS[match.group(2)]
    return seconds if seconds > 0 else None


def parse_rotate(value: int | str | None) -> tuple[int | None, float | None]:
    """Split a ``rotate`` setting into (max bytes, interval seconds).

    Accepts an int (bytes), a size string (``"10MB"``), an interval (``"daily"``, ``"6h"``),
    both joined by ``,`` or ``+`` (``"10MB,daily"``), or ``None``/``"off"``/``0`` for no
    rotation.

    Raises:
        ValueError: a part that is neither a size nor an interval.
    """
    if value is None or value == 0 or (isinstance(value, str) and value.strip() in {"", "off"}):
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return parse_size(value), None
    max_bytes: int | None = None
    interval: float | None = None
    for part in re.split(r"[,+]", str(value)):
        seconds = parse_interval(part)
        if seconds is not None:
            interval = seconds
        else:
            max_bytes = parse_size(part)
    return max_bytes, interval


def parse_level(value: int | str) -> int:
    """A stdlib level number from ``"info"``, ``"WARNING"``, ``20``...

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    number = logging.getLevelName(text)
    if text == "WARN":
        number = logging.WARNING
    if isinstance(number, int):
        return number
    raise ValueError(f"unknown log level {value!r}")


def parse_bool(value: bool | str) -> bool:
    """True/False from a bool or ``1/0``, ``true/false``, ``yes/no``, ``on/off``.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on", "always"}:
        return True
    if text in {"0", "false", "no", "off", "never"}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def parse_console(value: bool | str | None) -> ConsoleMode:
    """``auto`` (pretty on a terminal, JSON otherwise), ``pretty``, ``json`` or ``off``.

    Raises:
        ValueError: anything else.
    """
    if value is None or value is True:
        return "auto"
    if value is False:
        return "off"
    mode = _CONSOLE_WORDS.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(f"console must be auto, pretty, json or off, got {value!r}")
    return mode


def default_dir() -> Path:
    """``/var/log/unidist`` for root, else ``<user state dir>/unidist/log``."""
    if os.geteuid() == 0:
        return Path("/var/log/unidist")
    return Path(platformdirs.user_state_dir("unidist", appauthor=False)) / "log"


@dataclass(frozen=True)
class LogConfig:
    """The effective settings of :mod:`unidist.log` (see :func:`unidist.log.setup`)."""

    dir: Path = field(default_factory=default_dir)
    level: int = logging.INFO
    console: ConsoleMode = "auto"
    syslog: str | None = None
    rotate_bytes: int | None = DEFAULT_ROTATE_BYTES
    rotate_interval: float | None = None
    keep: int = DEFAULT_KEEP
    fsync: bool = False
    stdlib_track: str = DEFAULT_TRACK
    host: str = field(default_factory=socket.gethostname)
    files: bool = True


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"unidist.log: warning: {message}\n")
    except (OSError, ValueError, AttributeError):
        pass


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Settings named by ``UNIDIST_LOG_*`` variables; bad values are warned about and skipped."""
    out: dict[str, Any] = {}
    parsers: dict[str, tuple[str, Any]] = {
        "UNIDIST_LOG_DIR": ("dir", Path),
        "UNIDIST_LOG_LEVEL": ("level", parse_level),
        "UNIDIST_LOG_CONSOLE": ("console", parse_console),
        "UNIDIST_LOG_SYSLOG": ("syslog", lambda v: v or None),
        "UNIDIST_LOG_ROTATE": ("rotate", parse_rotate),
        "UNIDIST_LOG_KEEP": ("keep", _parse_keep),
        "UNIDIST_LOG_FSYNC": ("fsync", parse_bool),
        "UNIDIST_LOG_STDLIB_TRACK": ("stdlib_track", _parse_track),
        "UNIDIST_LOG_HOST": ("host", _parse_track),
    }
    for var, (key, parse) in parsers.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            out[key] = parse(raw)
        except ValueError as exc:
            _warn(f"ignoring {var}={raw!r}: {exc}")
    return out


def _parse_keep(value: int | str) -> int:
    keep = int(value)
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {value!r}")
    return keep


def _parse_track(value: str) -> str:
    return check_name(value, "track name")


def build_config(env: Mapping[str, str] | None = None, **given: Any) -> LogConfig:
    """Merge ``given`` (``setup()`` arguments that are not None) over the environment.

    Raises:
        ValueError: a given argument is invalid (unknown level, bad size, keep < 1, ...).
    """
    settings = _from_env(os.environ if env is None else env)
    parsers: dict[str, Any] = {
        "dir": Path,
        "level": parse_level,
        "console": parse_console,
        "syslog": lambda v: v or None,
        "rotate": parse_rotate,
        "keep": _parse_keep,
        "fsync": parse_bool,
        "stdlib_track": _parse_track,
        "host": _parse_track,
        "files": parse_bool,
    }
    for key, value in given.items():
        if key not in parsers:
            raise TypeError(f"setup() got an unexpected keyword argument {key!r}")
        if value is not None:
            settings[key] = parsers[key](value)
    config = LogConfig()
    rotate = settings.pop("rotate", None)
    if rotate is not None:
        settings["rotate_bytes"], settings["rotate_interval"] = rotate
    return replace(config, **settings)
