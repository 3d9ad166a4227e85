"""Structured logging that just works: per-track JSON-lines files, rotation, syslog, shipping.

Usage::

    import unidist.log

    log = unidist.log.get_logger(track="backup")     # works with no setup
    log.info("copied", files=12, bytes=3_400_000)    # → <dir>/backup.log, one JSON line

    unidist.log.setup(dir="/srv/log", level="debug", rotate="10MB,daily", keep=14)

Every record is a JSON object with ``timestamp`` (ISO-8601 UTC), ``level``, ``event``,
``track``, ``host``, ``pid``, ``thread``, ``script`` (``argv[0]``), ``file``, ``line``, ``func``
(the call site), then the caller's key/values; exceptions add ``exception`` (structured) and
``traceback`` (readable text). Records of the stdlib ``logging`` module land in the
``stdlib_track`` (default ``main``) with the same fields once :func:`setup` was called.

Settings come from :func:`setup` arguments, else ``UNIDIST_LOG_DIR``, ``UNIDIST_LOG_LEVEL``,
``UNIDIST_LOG_CONSOLE``, ``UNIDIST_LOG_SYSLOG``, ``UNIDIST_LOG_ROTATE``, ``UNIDIST_LOG_KEEP``,
``UNIDIST_LOG_FSYNC``, ``UNIDIST_LOG_STDLIB_TRACK``, ``UNIDIST_LOG_HOST``, else defaults
(directory ``/var/log/unidist`` for root, else ``~/.local/state/unidist/log``).

Importing this package configures nothing. Logging calls never raise: unserializable values
are written with ``repr``, and a full disk or unwritable directory prints one warning on
stderr. Central collection: :func:`ship` (and ``unidist log ship``) sends track files to
Redis streams; see :mod:`unidist.log.shipper`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unidist.log._config import LogConfig, parse_rotate, parse_size
from unidist.log._core import (
    StdlibHandler,
    TrackLogger,
    get_logger,
    install,
    runtime,
    uninstall,
)

if TYPE_CHECKING:
    from unidist.log.shipper import ShipStats

__all__ = [
    "LogConfig",
    "TrackLogger",
    "config",
    "get_logger",
    "parse_rotate",
    "parse_size",
    "reset",
    "setup",
    "ship",
]

_HANDLER: StdlibHandler | None = None
_ROOT_LEVEL: int | None = None
"""The root logger's level before :func:`setup` changed it (restored by :func:`reset`)."""


def setup(
    *,
    dir: str | Path | None = None,
    level: int | str | None = None,
    console: bool | str | None = None,
    syslog: str | None = None,
    rotate: int | str | None = None,
    keep: int | None = None,
    fsync: bool | None = None,
    stdlib_track: str | None = None,
    stdlib: bool = True,
    host: str | None = None,
    files: bool | None = None,
) -> LogConfig:
    """Configure logging for this process (call again to change it).

    Arguments left as None come from ``UNIDIST_LOG_*`` or the defaults.

    Args:
        dir: directory of the track files (created 0700; files are 0600).
        level: lowest level written (``"debug"``, ``"info"``, ``logging.WARNING``...).
        console: ``"auto"`` (default: readable on a terminal, JSON lines otherwise),
            ``"pretty"``, ``"json"``, or ``"off"``/False; output goes to stderr.
        syslog: ``"local"``, ``"unix:///dev/log"``, ``"udp://host:514"`` or ``"tcp://host:514"``;
            the track is the program name.
        rotate: bytes (``10485760`` or ``"10MB"``), an interval (``"daily"``, ``"hourly"``,
            ``"6h"``), or both (``"10MB,daily"``); ``"off"`` for none. Default ``"100MB"``.
        keep: rotated files kept per track (default 7).
        fsync: fdatasync every record before the call returns (default False).
        stdlib_track: the track of stdlib ``logging`` records (default ``main``).
        stdlib: install the bridge on the root logger (and set its level to ``level``).
        host: the ``host`` field (default the host name).
        files: write track files at all (default True).

    Returns:
        The effective configuration.

    Raises:
        ValueError: an invalid argument (unknown level, bad size, ``keep`` < 1...).
        unidist.InvalidName: ``stdlib_track`` or ``host`` breaks the naming rule.
    """
    global _HANDLER, _ROOT_LEVEL
    from unidist.log._config import build_config

    cfg = build_config(
        dir=dir,
        level=level,
        console=console,
        syslog=syslog,
        rotate=rotate,
        keep=keep,
        fsync=fsync,
        stdlib_track=stdlib_track,
        host=host,
        files=files,
    )
    install(cfg)
    root = logging.getLogger()
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
        _HANDLER = None
    if stdlib:
        _HANDLER = StdlibHandler(level=cfg.level)
        root.addHandler(_HANDLER)
        if _ROOT_LEVEL is None:
            _ROOT_LEVEL = root.level
        root.setLevel(cfg.level)
    return cfg


def config() -> LogConfig:
    """The effective configuration (read from the environment if :func:`setup` was not called)."""
    return runtime().config


def reset() -> None:
    """Undo :func:`setup`: close files, remove the stdlib bridge and restore the root logger's
    level, forget the configuration."""
    global _HANDLER, _ROOT_LEVEL
    if _HANDLER is not None:
        logging.getLogger().removeHandler(_HANDLER)
        _HANDLER = None
    if _ROOT_LEVEL is not None:
        logging.getLogger().setLevel(_ROOT_LEVEL)
        _ROOT_LEVEL = None
    uninstall()


def ship(url: str, **options: Any) -> ShipStats:
    """Ship this host's track files to the Redis store at ``url`` (once, or ``follow=True``).

    The options and guarantees are those of :func:`unidist.log.shipper.ship`.

    Raises:
        unidist.InvalidURL: not a Redis URL.
        unidist.BackendUnavailable: the store stayed unreachable for ``retry_for`` seconds.
        unidist.UnidistError: another shipper uses the same state file.
    """
    from unidist.log.shipper import ship as _ship

    return _ship(url, **options)
