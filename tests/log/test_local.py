"""unidist.log on one host: records, levels, exceptions, stdlib bridge, bad input, outputs."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

import unidist.log
from tests.log.conftest import child_env, read_records

KEYS = ["timestamp", "level", "event", "track", "host", "pid", "thread", "script", "file",
        "line", "func"]  # fmt: skip


def _call_site_line() -> int:
    return sys._getframe(1).f_lineno


def test_get_logger_works_without_setup(log_dir: Path) -> None:
    """A logger used with no setup writes a JSON line with every settled key, in order."""
    log = unidist.log.get_logger(track="backup", job="nightly")
    line = _call_site_line() + 1
    log.info("copied", files=12)
    (rec,) = read_records(log_dir, "backup")
    assert list(rec)[: len(KEYS)] == KEYS
    assert rec["event"] == "copied"
    assert rec["level"] == "info"
    assert rec["track"] == "backup"
    assert rec["host"] == socket.gethostname()
    assert rec["pid"] == os.getpid()
    assert rec["thread"] == threading.current_thread().name
    assert rec["script"] == sys.argv[0]
    assert rec["file"] == __file__
    assert rec["line"] == line
    assert rec["func"] == "test_get_logger_works_without_setup"
    assert rec["files"] == 12
    assert rec["job"] == "nightly"
    stamp = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None
    assert stamp.utcoffset() == timezone.utc.utcoffset(None)
    assert abs(stamp.timestamp() - datetime.now(timezone.utc).timestamp()) < 60


def test_default_track_is_main_and_files_are_private(log_dir: Path) -> None:
    """The default track is main; the file is 0600 and a created directory 0700."""
    unidist.log.get_logger().warning("hello")
    path = log_dir / "main.log"
    assert read_records(log_dir, "main")[0]["event"] == "hello"
    assert path.stat().st_mode & 0o777 == 0o600
    assert log_dir.stat().st_mode & 0o777 == 0o700


def test_setup_level_filters(tmp_path: Path) -> None:
    """setup(level="warning") drops info records and keeps warnings and errors."""
    unidist.log.setup(dir=tmp_path, level="warning", console=False)
    log = unidist.log.get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.log(logging.CRITICAL, "c")
    assert [r["event"] for r in read_records(tmp_path, "t")] == ["w", "e", "c"]


def test_bind_format_args_and_reserved_keys(log_dir: Path) -> None:
    """bind() adds context, %-args format the event, a caller's reserved key gets a _ suffix."""
    log = unidist.log.get_logger("t").bind(run=7)
    log.info("took %d ms", 42, host="elsewhere")
    (rec,) = read_records(log_dir, "t")
    assert rec["event"] == "took 42 ms"
    assert rec["run"] == 7
    assert rec["host"] == socket.gethostname()
    assert rec["host_"] == "elsewhere"


def test_exception_is_structured_and_readable(log_dir: Path) -> None:
    """log.exception records the exception as data (type, message, frames, cause) plus text."""
    log = unidist.log.get_logger("t")
    try:
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError:
        log.exception("failed", step=3)
    (rec,) = read_records(log_dir, "t")
    assert rec["level"] == "error"
    exc = rec["exception"]
    assert exc["type"] == "RuntimeError"
    assert exc["message"] == "wrapped"
    assert exc["frames"][-1]["file"] == __file__
    assert exc["cause"]["type"] == "KeyError"
    assert "Traceback (most recent call last)" in rec["traceback"]
    assert "RuntimeError: wrapped" in rec["traceback"]


def test_stdlib_records_land_in_tracks(tmp_path: Path) -> None:
    """stdlib logging records go to main (or stdlib_track, or extra track) with the same keys."""
    unidist.log.setup(dir=tmp_path, console="off", level="info")
    lib = logging.getLogger("some.library")
    line = _call_site_line() + 1
    lib.info("connected to %s", "db1", extra={"attempt": 2})
    lib.warning("to backup", extra={"track": "backup"})
    (rec,) = read_records(tmp_path, "main")
    assert list(rec)[: len(KEYS)] == KEYS
    assert rec["event"] == "connected to db1"
    assert (rec["file"], rec["line"], rec["func"]) == (
        __file__,
        line,
        "test_stdlib_records_land_in_tracks",
    )
    assert rec["logger"] == "some.library"
    assert rec["attempt"] == 2
    assert read_records(tmp_path, "backup")[0]["event"] == "to backup"

    unidist.log.setup(dir=tmp_path, console="off", stdlib_track="libs")
    try:
        1 / 0
    except ZeroDivisionError:
        lib.exception("math")
    (rec,) = read_records(tmp_path, "libs")
    assert rec["exception"]["type"] == "ZeroDivisionError"


def test_bad_values_never_raise(log_dir: Path) -> None:
    """Unserializable, circular and NaN values are written with repr, and the call returns."""

    class Weird:
        def __repr__(self) -> str:
            return "<Weird>"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    loop: dict[str, object] = {}
    loop["self"] = loop
    log = unidist.log.get_logger("t")
    log.info("values", obj=Weird(), s={1}, b=b"\x00", nan=float("nan"), loop=loop, br=Broken())
    log.info("keys", d={(1, 2): "tuple key"})
    first, second = read_records(log_dir, "t")
    assert first["obj"] == "<Weird>"
    assert first["s"] == "{1}"
    assert first["nan"] == "nan"
    assert "self" in first["loop"]
    assert "unrepresentable" in first["br"]
    assert second["d"] == {"(1, 2)": "tuple key"}


def test_unwritable_dir_warns_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A directory that cannot be created gives one warning on stderr, never an exception."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    unidist.log.setup(dir=blocker / "sub", console="off")
    log = unidist.log.get_logger("t")
    for _ in range(5):
        log.info("lost")
    err = capfd.readouterr().err
    assert err.count("unidist.log: warning: cannot write") == 1
    assert str(blocker / "sub" / "t.log") in err


def test_env_configuration(tmp_path: Path) -> None:
    """UNIDIST_LOG_* variables set dir, level, rotation, keep and host in a fresh process."""
    env = child_env(
        UNIDIST_LOG_DIR=str(tmp_path),
        UNIDIST_LOG_LEVEL="warning",
        UNIDIST_LOG_ROTATE="2KB",
        UNIDIST_LOG_KEEP="2",
        UNIDIST_LOG_HOST="web-7",
    )
    code = (
        "import unidist.log\n"
        "log = unidist.log.get_logger('e')\n"
        "for n in range(100):\n"
        "    log.info('skip', n=n); log.warning('keep', n=n)\n"
        "print(unidist.log.config().rotate_bytes)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "2048"
    names = sorted(p.name for p in tmp_path.glob("e.log*"))
    assert names == ["e.log", "e.log.1", "e.log.2"]
    recs = read_records(tmp_path, "e")
    assert {r["event"] for r in recs} == {"keep"}
    assert {r["host"] for r in recs} == {"web-7"}
    assert all(p.stat().st_size < 2048 + 400 for p in tmp_path.glob("e.log*"))


def test_console_json_when_not_a_terminal(tmp_path: Path) -> None:
    """With stderr a pipe the console shows JSON lines; console='pretty' renders readably."""
    code = (
        "import unidist.log\n"
        "unidist.log.get_logger('c').info('hello', k=1)\n"
        "unidist.log.setup(console='pretty', files=False)\n"
        "unidist.log.get_logger('c').info('pretty', k=2)\n"
    )
    env = child_env(UNIDIST_LOG_DIR=str(tmp_path), UNIDIST_LOG_CONSOLE="auto")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    first, second = out.stderr.decode().splitlines()
    assert json.loads(first)["event"] == "hello"
    assert "pretty" in second
    assert "k=2" in second
    assert not second.startswith("{")


def test_import_configures_nothing() -> None:
    """Importing unidist.log adds no handler to the root logger and creates no file."""
    code = (
        "import logging, unidist.log, unidist.log.shipper, unidist.cli.log_cmd\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )
    env = child_env(UNIDIST_LOG_DIR="/nonexistent/unidist-log-test")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["0", str(logging.WARNING)]


def test_syslog_udp_and_unix(tmp_path: Path) -> None:
    """Records reach a UDP and a unix-socket syslog receiver with the track as program name."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    unix_path = tmp_path / "syslog.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix.bind(str(unix_path))
    unix.settimeout(5)
    try:
        port = udp.getsockname()[1]
        unidist.log.setup(dir=tmp_path, syslog=f"udp://127.0.0.1:{port}", console="off")
        unidist.log.get_logger("backup").error("disk full", free=0)
        data = udp.recv(65536).decode()
        unidist.log.setup(dir=tmp_path, syslog=f"unix://{unix_path}", console="off")
        unidist.log.get_logger("nightly").info("done")
        local = unix.recv(65536).decode()
    finally:
        udp.close()
        unix.close()
    assert data.startswith("<11>")  # facility user (1) * 8 + severity err (3)
    head, _, body = data.partition(f"backup[{os.getpid()}]: ")
    assert socket.gethostname() in head
    assert json.loads(body)["free"] == 0
    assert local.startswith("<14>")
    assert json.loads(local.partition(f"nightly[{os.getpid()}]: ")[2])["event"] == "done"


def test_parse_sizes_and_rotation_specs() -> None:
    """rotate accepts bytes, size strings, intervals and both; nonsense raises ValueError."""
    assert unidist.log.parse_size("10MB") == 10 * 1024 * 1024
    assert unidist.log.parse_size(4096) == 4096
    assert unidist.log.parse_rotate("512K") == (512 * 1024, None)
    assert unidist.log.parse_rotate("10MB,daily") == (10 * 1024 * 1024, 86400.0)
    assert unidist.log.parse_rotate("hourly") == (None, 3600.0)
    assert unidist.log.parse_rotate("off") == (None, None)
    for bad in ("ten", "-5MB", "10XB"):
        with pytest.raises(ValueError):
            unidist.log.parse_rotate(bad)
    with pytest.raises(ValueError):
        unidist.log.setup(level="loud")
    with pytest.raises(ValueError):
        unidist.log.setup(keep=0)


def test_syslog_tcp_newline_framed(tmp_path: Path) -> None:
    """Over TCP each record is one newline-terminated syslog line."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    try:
        port = server.getsockname()[1]
        unidist.log.setup(dir=tmp_path, syslog=f"tcp://127.0.0.1:{port}", console="off")
        log = unidist.log.get_logger("tcp")
        log.warning("one", n=1)
        log.warning("two", n=2)
        conn, _ = server.accept()
        conn.settimeout(5)
        data = b""
        while data.count(b"\n") < 2:
            chunk = conn.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        conn.close()
    finally:
        server.close()
    first, second = data.decode().splitlines()[:2]
    assert first.startswith("<12>")  # user.warning
    assert json.loads(second.partition(f"tcp[{os.getpid()}]: ")[2])["n"] == 2
