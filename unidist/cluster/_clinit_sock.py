"""The clinit daemon's UNIX socket: default paths, the private directory, JSON-lines requests.

Security rules (``docs/clinit.md``, RELIABILITY.md X5):

* the socket lives in a directory of mode 0700 owned by the daemon's user; the daemon creates
  it, tightens an existing one it owns, and refuses one owned by anybody else;
* the socket itself is created 0600 (under umask 0177, then ``chmod``), so another UID can
  neither reach nor open it;
* the daemon also checks the peer's credentials (``SO_PEERCRED``) and answers only its own
  UID and root;
* one daemon per socket: a lock file beside the socket, held for the daemon's life, makes a
  second daemon refuse to start.

The protocol is one JSON object per line in each direction, never pickle.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any, Final

from unidist.errors import UnidistError

__all__ = [
    "MAX_LINE",
    "SOCKET_NAME",
    "DaemonNotRunning",
    "acquire_daemon_lock",
    "bind_socket",
    "default_dir",
    "peer_uid",
    "read_line",
    "request",
    "secure_dir",
]

SOCKET_NAME: Final = "clinit.sock"
MAX_LINE: Final = 64 * 1024
"""The longest request or answer line accepted, in bytes."""
MAX_SOCKET_PATH: Final = 107
"""The longest UNIX socket path Linux accepts (``sun_path`` is 108 bytes with the NUL)."""


class DaemonNotRunning(UnidistError):
    """No clinit daemon answers on the socket."""


def default_dir() -> Path:
    """The directory of the socket and status file: ``/run/unidist`` for root (whatever
    ``$XDG_RUNTIME_DIR`` says, so that a root login shell finds the system daemon), else
    ``$XDG_RUNTIME_DIR/unidist``, else ``/run/user/UID/unidist`` when that runtime
    directory exists, else ``~/.local/state/unidist/run`` (never a shared place like /tmp)."""
    if os.geteuid() == 0:
        return Path("/run/unidist")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "unidist"
    user_run = Path(f"/run/user/{os.geteuid()}")
    if user_run.is_dir():
        return user_run / "unidist"
    return Path.home() / ".local" / "state" / "unidist" / "run"


def secure_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700, or check an existing one.

    Raises:
        UnidistError: ``path`` is not a directory, or is owned by another user.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise UnidistError(f"cannot create the directory {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise UnidistError(f"{path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnidistError(
            f"{path} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()}); "
            "refusing to put the socket there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def acquire_daemon_lock(sock_path: Path) -> int:
    """Take the daemon lock beside ``sock_path`` (``<socket>.lock``) and return its fd.

    Raises:
        UnidistError: another daemon holds it (the message names its pid and the socket).
    """
    lock_path = sock_path.with_name(sock_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            os.close(fd)
            raise
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise UnidistError(
            f"another clinit daemon (pid {holder}) is already running on {sock_path}; "
            "stop it first or give this one another --socket"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def bind_socket(sock_path: Path) -> socket.socket:
    """Listen on ``sock_path`` (mode 0600), replacing a stale socket file.

    Call with the daemon lock held (:func:`acquire_daemon_lock`), so any existing socket file
    is a dead daemon's.
    """
    size = len(os.fsencode(sock_path))
    if size > MAX_SOCKET_PATH:
        raise UnidistError(
            f"the socket path {sock_path} is {size} bytes long; UNIX sockets allow "
            f"{MAX_SOCKET_PATH}: choose a shorter --socket"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        srv.bind(os.fspath(sock_path))
    finally:
        os.umask(old)
    os.chmod(sock_path, 0o600)
    srv.listen(16)
    return srv


def peer_uid(conn: socket.socket) -> int:
    """The UID of the process at the other end of UNIX socket ``conn`` (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def read_line(conn: socket.socket) -> bytes:
    """One ``\\n``-terminated line from ``conn`` (without the newline).

    Raises:
        ValueError: the line is longer than :data:`MAX_LINE` or the peer closed early.
    """
    buf = bytearray()
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError("connection closed before a full line arrived")
        buf += chunk
        cut = buf.find(b"\n")
        if cut >= 0:
            return bytes(buf[:cut])
        if len(buf) > MAX_LINE:
            raise ValueError(f"line longer than {MAX_LINE} bytes")


def request(sock_path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer.

    Raises:
        DaemonNotRunning: nothing listens on ``sock_path``.
        UnidistError: the socket cannot be reached (permission) or the answer is malformed.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(os.fspath(sock_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(
                f"no clinit daemon is listening on {sock_path} "
                "(start one with 'unidist clinit --daemon', or give --socket)"
            ) from exc
        except PermissionError as exc:
            raise UnidistError(
                f"permission denied on {sock_path}: only the daemon's user (and root) may "
                "talk to it"
            ) from exc
        # A daemon that refuses us answers without reading: read its answer all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(json.dumps(message).encode() + b"\n")
        try:
            answer = json.loads(read_line(conn))
        except (ValueError, OSError) as exc:
            raise UnidistError(f"bad answer from the clinit daemon on {sock_path}: {exc}") from exc
    if not isinstance(answer, dict):
        raise UnidistError(f"bad answer from the clinit daemon on {sock_path}: {answer!r}")
    return answer
