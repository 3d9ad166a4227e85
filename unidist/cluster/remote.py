"""Run commands and copy files on cluster hosts with the system ``ssh`` and ``scp``.

The binaries are ``$UNIDIST_SSH`` (default ``ssh``) and ``$UNIDIST_SCP`` (default ``scp``), so
your ``~/.ssh/config``, agent, jump hosts and ControlMaster settings apply unchanged. Extra
options for both come from the ``ssh_options`` argument, else from ``$UNIDIST_SSH_OPTIONS``
(split like a shell would, e.g. ``-F /etc/unidist/ssh_config -o User=ops``).

* :func:`run` runs one command on many hosts in parallel and returns a :class:`Result` per
  host; :func:`run_one` runs it on one host.
* :func:`copy` copies local files to a directory on many hosts (``scp``).
* :func:`write_remote_file` writes bytes to a file on one host, replacing it atomically.
* :func:`resolve_targets` turns a group name, host list or ``None`` (the whole cluster) into
  hosts; :func:`ssh_argv` shows the exact local command line used for a host.

Safety rules (see ``docs/remote.md``):

* No local shell is ever used. A command given as an argv list is quoted with
  :func:`shlex.join`, so the remote shell sees exactly those words; a string is passed to the
  remote shell as a command line (``"uptime; df -h"``), like ``dsh``.
* Host names are checked before use: a host or user starting with ``-``, or holding a
  character outside letters, digits and ``._-`` (one ``@`` before the host; an IPv6
  address bare or in ``[]``), is refused with :class:`ValueError`; ``--`` always precedes
  the host.
* ssh runs with ``BatchMode=yes`` (never a password or host key prompt) and a
  ``ConnectTimeout``; host key checking is left as your ssh config says.

How a result is classified (``Result.error``):

* ``ok``: the command exited 0. ``failed``: it ran and exited non-zero (or was killed by a
  signal, which ssh reports as exit 255).
* ``unreachable``: ssh could not connect or log in (refused, unresolvable, host key or
  authentication failure, ...), so the command never ran; ``exit_code`` is None and ssh's
  message is in ``stderr``.
* ``timeout``: ``timeout`` seconds passed; the local ssh (its whole process group) was
  killed and ``exit_code`` is None.

**Exit status 255.** ssh exits 255 both when it fails to connect and when the remote command
exits 255 (or dies of a signal). To tell them apart, the remote command is prefixed with one
``echo`` of a random start marker and the remote shell's pid on stderr (removed from the
returned ``stderr``): 255 with the marker is the command's (``failed``), 255 without it is
ssh's (``unreachable``). The marker also lets a timeout kill the remote command: after the
local ssh is killed, a second ssh sends SIGTERM (SIGKILL 2 s later) to the remote process
group, because sshd does not stop a command without a terminal when the connection drops.
This needs a POSIX login shell on the host (sh, bash, dash, ksh, zsh); for csh or fish pass
``track=False``: exit 255 is then ``unreachable`` only when ssh printed a connection error,
and a timed-out remote command is left running.
"""

from __future__ import annotations

import ipaddress
import math
import os
import posixpath
import re
import secrets
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from unidist.cluster.files import Cluster

__all__ = [
    "FAILED",
    "OK",
    "TIMEOUT",
    "UNREACHABLE",
    "Result",
    "check_host",
    "copy",
    "remote_command",
    "resolve_targets",
    "run",
    "run_one",
    "scp_argv",
    "ssh_argv",
    "write_remote_file",
]

OK: Final = "ok"
FAILED: Final = "failed"
TIMEOUT: Final = "timeout"
UNREACHABLE: Final = "unreachable"

ENV_SSH: Final = "UNIDIST_SSH"
ENV_SCP: Final = "UNIDIST_SCP"
ENV_OPTIONS: Final = "UNIDIST_SSH_OPTIONS"
SSH_FAILURE: Final = 255

_HOST_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_USER_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
# Characters a remote shell would interpret (scp's legacy protocol passes the remote path
# through it), plus whitespace and control characters.
_UNSAFE_REMOTE_PATH: Final = re.compile(r"[\s\x00-\x1f\x7f;&|$`\\\"'<>(){}*?\[\]!#]")
# Lines ssh prints when it cannot connect or log in (used for scp, and for ssh with
# track=False, where no start marker tells the two 255s apart).
_CONNECT_ERRORS: Final = re.compile(
    rb"^(?:ssh: |kex_exchange_identification|banner exchange|Connection (?:timed out|closed by"
    rb"|reset by|refused)|Connection to \S+ port \d+ timed out|Host key verification failed"
    rb"|(?:\S+: )?Permission denied \(|Unable to negotiate|Too many authentication failures"
    rb"|Received disconnect from|ssh_exchange_identification|No route to host"
    rb"|Network is unreachable|Bad owner or permissions|command-line line \d+:"
    rb"|.*: Could not resolve hostname|ProxyCommand|ProxyJump|channel \d+: open failed)",
    re.MULTILINE,
)
_MARKER_PREFIX: Final = "UNIDIST-STARTED-"
_DRAIN_AFTER_KILL: Final = 2.0
_POLL: Final = 0.2


# ---------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Result:
    """The outcome of a command (or copy) on one host.

    Attributes:
        host: the host as given.
        exit_code: the remote command's exit status (scp's for a copy); None when it never
            ran (``unreachable``) or was stopped by the timeout.
        stdout, stderr: its output, decoded as UTF-8 (invalid bytes replaced). ssh's own
            messages (e.g. why a connection failed) are in ``stderr``.
        duration: seconds from starting ssh to its end.
        error: ``"ok"``, ``"failed"``, ``"timeout"`` or ``"unreachable"``.
    """

    host: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    error: str

    @property
    def ok(self) -> bool:
        """True when the command ran and exited 0."""
        return self.error == OK

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------------- targets
def _split_host(host: str) -> tuple[str, str, bool]:
    """``(user@ or "", name without brackets, is_ipv6)``."""
    user, at, name = host.rpartition("@")
    inner = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    return user + at, inner, ":" in inner or inner != name


def check_host(host: object) -> str:
    """Return ``host`` if it is a safe ``[user@]host`` for ssh.

    Raises:
        ValueError: it is empty, starts with ``-`` (host or user), or is neither a name of
            letters, digits and ``._-`` nor an IPv6 address (bare or in ``[]``); the message
            names it.
        TypeError: it is not a str.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, not {type(host).__name__}: {host!r}")
    user, at, name = host.rpartition("@")
    if name.startswith("-") or (at and user.startswith("-")):
        raise ValueError(f"refusing host {host!r}: a host or user may not start with '-'")
    _, inner, ipv6 = _split_host(host)
    if ipv6:
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"invalid host {host!r}: not an IPv6 address") from None
    elif not _HOST_RE.fullmatch(name):
        raise ValueError(
            f"invalid host name {host!r}: use letters, digits and ._- "
            "(optionally user@host, or an IPv6 address)"
        )
    if at and not _USER_RE.fullmatch(user):
        raise ValueError(f"invalid user in {host!r}: use letters, digits and ._-")
    return host


def resolve_targets(
    targets: str | Iterable[str] | None, cluster: Cluster | None = None
) -> list[str]:
    """The hosts that ``targets`` names, in order, without duplicates.

    Args:
        targets: ``None`` for every host of the cluster (just this host when there is no
            cluster file); a group or lump name of the cluster file (including ``__all__``
            and ``__orphans__``); a host; a comma-separated list of those (``"web,db1"``);
            or an iterable of any of these. A name that is a group of the cluster means the
            group, otherwise it is a host.
        cluster: the cluster file; default :func:`unidist.cluster.load` (``$CLUSTER``), read
            only when needed.

    Raises:
        ValueError: a bad host name (see :func:`check_host`) or an empty name.
        ClusterFileError: the cluster file cannot be read.
    """
    loaded: list[Cluster] = [cluster] if cluster is not None else []

    def get_cluster() -> Cluster:
        if not loaded:
            from unidist.cluster.files import load

            loaded.append(load())
        return loaded[0]

    if targets is None:
        return [check_host(h) for h in get_cluster().hosts]
    items: Iterable[str] = [targets] if isinstance(targets, str) else targets
    hosts: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"targets must be strings, not {type(item).__name__}: {item!r}")
        for raw in item.split(","):
            name = raw.strip()
            if not name:
                raise ValueError(f"empty host or group name in targets {item!r}")
            members: tuple[str, ...]
            try:
                members = get_cluster().group(name)
            except KeyError:
                members = (name,)
            for host in members:
                hosts[check_host(host)] = None
    return list(hosts)


# ---------------------------------------------------------------------------- command lines
def _options(ssh_options: Sequence[str] | None) -> list[str]:
    if ssh_options is None:
        return shlex.split(os.environ.get(ENV_OPTIONS, ""))
    if isinstance(ssh_options, str):
        raise TypeError("ssh_options must be a list of arguments, not a string")
    return list(ssh_options)


def _timeout_option(connect_timeout: float) -> str:
    if not connect_timeout > 0 or not math.isfinite(connect_timeout):
        raise ValueError(f"connect_timeout must be a positive number, not {connect_timeout!r}")
    return f"ConnectTimeout={max(1, math.ceil(connect_timeout))}"


def remote_command(command: Sequence[str] | str) -> str:
    """The command line the remote shell runs: ``shlex.join(argv)``, or a string as is.

    Raises:
        ValueError: an empty command, a NUL character, or not a str/sequence of str.
    """
    if isinstance(command, str):
        line = command
    else:
        words: list[object] = list(command)
        if not all(isinstance(w, str) for w in words):
            raise TypeError(f"command must be a str or a sequence of str, not {command!r}")
        line = shlex.join(str(w) for w in words)
    if not line.strip():
        raise ValueError("empty remote command")
    if "\0" in line:
        raise ValueError("remote command contains a NUL character")
    return line


def _ssh_host(host: str) -> str:
    """ssh wants an IPv6 address bare (``::1``)."""
    user, inner, _ = _split_host(host)
    return user + inner


def _scp_host(host: str) -> str:
    """scp wants an IPv6 address in brackets (``[::1]:dir``), else the ``:`` would split it."""
    user, inner, ipv6 = _split_host(host)
    return f"{user}[{inner}]" if ipv6 else user + inner


def ssh_argv(
    host: str,
    command: Sequence[str] | str,
    *,
    connect_timeout: float = 10,
    ssh_options: Sequence[str] | None = None,
) -> list[str]:
    """The local argv that runs ``command`` on ``host`` (no shell involved locally).

    ``[$UNIDIST_SSH, -o BatchMode=yes, -o ConnectTimeout=N, *ssh_options, --, host, line]``
    where ``line`` is ``shlex.join(command)`` for a list, the string itself for a string.
    ``BatchMode`` and ``ConnectTimeout`` come first, so they win over ``ssh_options`` and the
    ssh config (ssh keeps the first value it sees).

    Raises:
        ValueError: a bad host (see :func:`check_host`), an empty command or bad options.
    """
    check_host(host)
    return [
        os.environ.get(ENV_SSH) or "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        _timeout_option(connect_timeout),
        *_options(ssh_options),
        "--",
        _ssh_host(host),
        remote_command(command),
    ]


def _check_remote_path(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty string, not {path!r}")
    if path.startswith("-"):
        raise ValueError(f"refusing {what} {path!r}: it may not start with '-'")
    if _UNSAFE_REMOTE_PATH.search(path):
        raise ValueError(
            f"refusing {what} {path!r}: whitespace or shell metacharacters "
            "(scp may pass the remote path through the remote shell)"
        )


def scp_argv(
    host: str,
    files: Sequence[str | os.PathLike[str]],
    remote_dir: str,
    *,
    connect_timeout: float = 10,
    ssh_options: Sequence[str] | None = None,
    preserve: bool = True,
) -> list[str]:
    """The local argv that copies ``files`` into ``remote_dir`` on ``host``.

    Local paths are made absolute, so a name holding ``:`` is never read as a remote host
    and one starting with ``-`` never as an option; ``--`` precedes them. ``remote_dir``
    gets a trailing ``/``, so scp fails rather than create a file of that name. ``-r`` is added when
    a file is a directory, ``-p`` (keep modes and times) when ``preserve``.

    Raises:
        ValueError: a bad host or remote directory, no files.
    """
    check_host(host)
    _check_remote_path(remote_dir, "remote directory")
    paths = [os.path.abspath(os.fspath(f)) for f in files]
    if not paths:
        raise ValueError("no files to copy")
    flags = (["-p"] if preserve else []) + (["-r"] if any(map(os.path.isdir, paths)) else [])
    return [
        os.environ.get(ENV_SCP) or "scp",
        "-o",
        "BatchMode=yes",
        "-o",
        _timeout_option(connect_timeout),
        *_options(ssh_options),
        *flags,
        "--",
        *paths,
        f"{_scp_host(host)}:{remote_dir.rstrip('/')}/",  # a directory, never a new file
    ]


# ---------------------------------------------------------------------------- one process
class _Cancelled:
    """Shared by the runs of one :func:`run`: set to stop them all (e.g. on Ctrl-C)."""

    def __init__(self) -> None:
        self.event = threading.Event()


OutputCallback = Callable[[str, str, str], None]


@dataclass
class _Outcome:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool
    remote_pid: int | None
    marker_seen: bool


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass


class _Lines:
    """Splits one stream into lines for the output callback; keeps every byte."""

    def __init__(self, host: str, name: str, callback: OutputCallback | None) -> None:
        self.host = host
        self.name = name
        self.callback = callback
        self.data = bytearray()
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if self.callback is None:
            return
        self._pending += chunk
        while True:
            cut = self._pending.find(b"\n")
            if cut < 0:
                break
            line = bytes(self._pending[:cut])
            del self._pending[: cut + 1]
            self.callback(self.host, self.name, line.decode("utf-8", "replace"))

    def finish(self) -> None:
        if self.callback is not None and self._pending:
            line = bytes(self._pending)
            self._pending.clear()
            self.callback(self.host, self.name, line.decode("utf-8", "replace"))


class _Marker:
    """Removes the start marker line from stderr and records the remote pid."""

    def __init__(self, nonce: str | None, sink: _Lines) -> None:
        self.tag = f"{_MARKER_PREFIX}{nonce}:".encode() if nonce else None
        self.sink = sink
        self.pid: int | None = None
        self.seen = False
        self._head = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self.tag is None or self.seen:
            self.sink.feed(chunk)
            return
        self._head += chunk
        while not self.seen:
            cut = self._head.find(b"\n")
            if cut < 0:
                return  # wait for the rest of the line
            line = bytes(self._head[: cut + 1])
            del self._head[: cut + 1]
            if line.startswith(self.tag):
                self.seen = True
                digits = line[len(self.tag) :].strip()
                self.pid = int(digits) if digits.isdigit() else None
            else:
                self.sink.feed(line)  # e.g. a login script's message before the marker
        rest = bytes(self._head)
        self._head.clear()
        if rest:
            self.sink.feed(rest)

    def finish(self) -> None:
        if self._head:
            self.sink.feed(bytes(self._head))
            self._head.clear()
        self.sink.finish()


class _Process:
    """One ssh/scp process in its own process group, with its pipes pumped by a selector."""

    def __init__(
        self,
        argv: list[str],
        host: str,
        *,
        stdin: bytes | None,
        nonce: str | None,
        on_output: OutputCallback | None,
    ) -> None:
        self.start = time.monotonic()
        self.proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a timeout kills ssh and anything it started
        )
        self.out = _Lines(host, "stdout", on_output)
        self.err_lines = _Lines(host, "stderr", on_output)
        self.err = _Marker(nonce, self.err_lines)
        self.sel = selectors.DefaultSelector()
        self.readers: dict[int, Callable[[bytes], None]] = {}
        for pipe, sink in ((self.proc.stdout, self.out.feed), (self.proc.stderr, self.err.feed)):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            self.sel.register(pipe.fileno(), selectors.EVENT_READ)
            self.readers[pipe.fileno()] = sink
        self.to_write = memoryview(stdin or b"")
        self.stdin_fd = -1
        if self.proc.stdin is not None:
            if self.to_write:
                self.stdin_fd = self.proc.stdin.fileno()
                os.set_blocking(self.stdin_fd, False)
                self.sel.register(self.stdin_fd, selectors.EVENT_WRITE)
            else:
                self.proc.stdin.close()

    def _write(self) -> None:
        try:
            written = os.write(self.stdin_fd, self.to_write[:65536])
            self.to_write = self.to_write[written:]
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the command does not read all of its input
            self.to_write = self.to_write[:0]
        if not self.to_write:
            self.sel.unregister(self.stdin_fd)
            self.stdin_fd = -1
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.readers[fd](chunk)
        else:
            self.sel.unregister(fd)
            del self.readers[fd]

    def pump(self, deadline: float | None, cancel: _Cancelled | None) -> bool:
        """Move data until the output ends; return True if stopped by deadline or cancel."""
        stopped = False
        drain_until: float | None = None
        while self.readers:
            now = time.monotonic()
            if not stopped and (
                (deadline is not None and now >= deadline)
                or (cancel is not None and cancel.event.is_set())
            ):
                stopped = True
                _kill_group(self.proc)
                drain_until = now + _DRAIN_AFTER_KILL
            if drain_until is not None and now >= drain_until:
                break  # something outside the killed group holds the pipes
            exited = self.proc.poll() is not None
            wait_for = 0.0 if exited else _POLL
            if deadline is not None and not stopped:
                wait_for = min(wait_for, max(0.0, deadline - now))
            events = self.sel.select(wait_for)
            if not events and exited:
                break  # ssh is gone and nothing is left in the pipes
            for key, _mask in events:
                if key.fd == self.stdin_fd:
                    self._write()
                elif key.fd in self.readers:
                    self._read(int(key.fd))
        return stopped

    def close(self, stopped: bool) -> _Outcome:
        self.sel.close()
        proc = self.proc
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        if proc.poll() is None and stopped:
            _kill_group(proc)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
        self.out.finish()
        self.err.finish()
        return _Outcome(
            None if stopped else proc.returncode,
            bytes(self.out.data),
            bytes(self.err_lines.data),
            time.monotonic() - self.start,
            stopped,
            self.err.pid,
            self.err.seen,
        )


def _execute(
    argv: list[str],
    host: str,
    *,
    stdin: bytes | None,
    timeout: float | None,
    nonce: str | None,
    on_output: OutputCallback | None,
    cancel: _Cancelled | None,
) -> _Outcome:
    """Run ``argv`` in its own process group, feeding ``stdin`` and collecting output until
    it exits, the timeout passes (the group is killed) or ``cancel`` is set.

    Raises:
        FileNotFoundError: the binary is not installed.
    """
    process = _Process(argv, host, stdin=stdin, nonce=nonce, on_output=on_output)
    stopped = True
    try:
        deadline = None if timeout is None else process.start + timeout
        stopped = process.pump(deadline, cancel)
    finally:
        outcome = process.close(stopped)
    return outcome


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _classify(host: str, res: _Outcome, *, tracked: bool, ssh_status: bool = True) -> Result:
    """Turn a finished process into a :class:`Result`.

    ``tracked``: the start marker decides whether the command ran. ``ssh_status``: the exit
    status is ssh's (255 = ssh failure), else scp's (any non-zero may be a connection error).
    """
    stdout, stderr = _text(res.stdout), _text(res.stderr)
    if res.timed_out:
        return Result(host, None, stdout, stderr, res.duration, TIMEOUT)
    code = res.returncode
    assert code is not None
    if code < 0:  # killed by a signal locally
        return Result(host, 128 - code, stdout, stderr, res.duration, FAILED)
    if code == 0:
        return Result(host, 0, stdout, stderr, res.duration, OK)
    if tracked:
        if code == SSH_FAILURE and not res.marker_seen:
            return Result(host, None, stdout, stderr, res.duration, UNREACHABLE)
        return Result(host, code, stdout, stderr, res.duration, FAILED)
    if (not ssh_status or code == SSH_FAILURE) and _CONNECT_ERRORS.search(res.stderr):
        return Result(host, None, stdout, stderr, res.duration, UNREACHABLE)
    return Result(host, code, stdout, stderr, res.duration, FAILED)


def _kill_remote(
    host: str, pid: int, connect_timeout: float, ssh_options: Sequence[str] | None
) -> None:
    """Best effort: SIGTERM the remote process group ``pid`` (the timed-out command's remote
    shell leads it), SIGKILL it 2 s later."""
    group = f"-{int(pid)}"
    line = (
        f"kill -s TERM -- {group} 2>/dev/null; "
        f"(sleep 2; kill -s KILL -- {group}) </dev/null >/dev/null 2>&1 &"
    )
    argv = ssh_argv(host, line, connect_timeout=connect_timeout, ssh_options=ssh_options)
    try:
        _execute(
            argv,
            host,
            stdin=None,
            timeout=connect_timeout + 5,
            nonce=None,
            on_output=None,
            cancel=None,
        )
    except OSError:
        pass


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (not timeout > 0 or not math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number or None, not {timeout!r}")


def _run_one(
    host: str,
    line: str,
    *,
    timeout: float | None,
    connect_timeout: float,
    ssh_options: Sequence[str] | None,
    stdin: bytes | None,
    track: bool,
    on_output: OutputCallback | None,
    cancel: _Cancelled | None,
) -> Result:
    nonce = secrets.token_hex(8) if track else None
    remote = f"echo {_MARKER_PREFIX}{nonce}:$$ >&2\n{line}" if nonce else line
    argv = ssh_argv(host, remote, connect_timeout=connect_timeout, ssh_options=ssh_options)
    outcome = _execute(
        argv,
        host,
        stdin=stdin,
        timeout=timeout,
        nonce=nonce,
        on_output=on_output,
        cancel=cancel,
    )
    if outcome.timed_out and outcome.remote_pid is not None:
        _kill_remote(host, outcome.remote_pid, connect_timeout, ssh_options)
    return _classify(host, outcome, tracked=track)


def run_one(
    host: str,
    command: Sequence[str] | str,
    *,
    timeout: float | None = None,
    connect_timeout: float = 10,
    ssh_options: Sequence[str] | None = None,
    stdin: bytes | None = None,
    track: bool = True,
    on_output: OutputCallback | None = None,
) -> Result:
    """Run ``command`` on ``host`` over ssh and wait for it.

    Args:
        host: ``host`` or ``user@host`` (an ssh config alias works).
        command: an argv list (quoted for the remote shell with :func:`shlex.join`, so each
            word arrives exactly) or a string run by the remote shell as a command line.
        timeout: seconds for the whole run (connection included); then the local ssh's
            process group is killed, the remote command is sent SIGTERM (see the module
            docstring) and the result is ``timeout``. None: no limit.
        connect_timeout: ssh's ``ConnectTimeout`` (seconds, rounded up).
        ssh_options: extra ssh arguments; None: ``$UNIDIST_SSH_OPTIONS``.
        stdin: bytes fed to the command's standard input (then closed); None: empty input.
        track: prefix the remote command with the start marker (needs a POSIX login shell;
            see the module docstring).
        on_output: called as ``on_output(host, "stdout" | "stderr", line)`` for each output
            line as it arrives (without its newline), from the calling thread.

    Returns:
        A :class:`Result`; a failure to connect is a result (``unreachable``), not an error.

    Raises:
        ValueError: a bad host, command, timeout or options.
        FileNotFoundError: the ssh binary is not installed.
    """
    _check_timeout(timeout)
    return _run_one(
        host,
        remote_command(command),
        timeout=timeout,
        connect_timeout=connect_timeout,
        ssh_options=ssh_options,
        stdin=stdin,
        track=track,
        on_output=on_output,
        cancel=None,
    )


# ---------------------------------------------------------------------------- fan-out
def _fan_out(
    hosts: list[str],
    parallel: int,
    job: Callable[[str, _Cancelled], Result],
    on_result: Callable[[Result], None] | None,
) -> dict[str, Result]:
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel must be a positive integer, not {parallel!r}")
    results: dict[str, Result] = {}
    if not hosts:
        return results
    cancel = _Cancelled()
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(hosts)), thread_name_prefix="dsh")
    try:
        pending: set[Future[Result]] = {pool.submit(job, h, cancel) for h in hosts}
        while pending:
            done, pending = wait(pending, timeout=_POLL, return_when=FIRST_COMPLETED)
            for fut in done:
                res = fut.result()
                results[res.host] = res
                if on_result is not None:
                    on_result(res)
    except BaseException:
        cancel.event.set()  # Ctrl-C or a failing callback: stop every ssh, then re-raise
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return {h: results[h] for h in hosts}


def run(
    targets: str | Iterable[str] | None,
    command: Sequence[str] | str,
    *,
    parallel: int = 32,
    timeout: float | None = None,
    connect_timeout: float = 10,
    cluster: Cluster | None = None,
    ssh_options: Sequence[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
    stdin: bytes | None = None,
    track: bool = True,
    on_output: OutputCallback | None = None,
) -> dict[str, Result]:
    """Run ``command`` on every host of ``targets``, at most ``parallel`` at a time.

    Args:
        targets: hosts, a group or lump name, or None for the whole cluster (see
            :func:`resolve_targets`).
        command: an argv list (quoted exactly) or a remote shell command line.
        parallel: how many ssh processes run at once.
        timeout: per-host limit in seconds (see :func:`run_one`).
        cluster: the cluster file for group names; default ``$CLUSTER``.
        on_result: called with each :class:`Result` as its host finishes, in the calling
            thread. on_output: called with each output line as it arrives, from worker
            threads (serialize your printing).
        connect_timeout, ssh_options, stdin, track: as for :func:`run_one`.

    Returns:
        ``{host: Result}`` in target order. Every host gets a result; none raises.

    Raises:
        ValueError: bad targets, command, timeout or ``parallel`` (before any ssh starts).
        ClusterFileError: the cluster file cannot be read.
        FileNotFoundError: the ssh binary is not installed.
        KeyboardInterrupt: every running ssh is killed first.
    """
    _check_timeout(timeout)
    hosts = resolve_targets(targets, cluster)
    line = remote_command(command)
    _options(ssh_options)
    _timeout_option(connect_timeout)

    def job(host: str, cancel: _Cancelled) -> Result:
        return _run_one(
            host,
            line,
            timeout=timeout,
            connect_timeout=connect_timeout,
            ssh_options=ssh_options,
            stdin=stdin,
            track=track,
            on_output=on_output,
            cancel=cancel,
        )

    return _fan_out(hosts, parallel, job, on_result)


def copy(
    targets: str | Iterable[str] | None,
    files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    remote_dir: str,
    *,
    parallel: int = 32,
    timeout: float | None = None,
    connect_timeout: float = 10,
    cluster: Cluster | None = None,
    ssh_options: Sequence[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
    preserve: bool = True,
) -> dict[str, Result]:
    """Copy local ``files`` into ``remote_dir`` on every host of ``targets`` with scp.

    Directories are copied recursively; with ``preserve`` (default) modes and times are kept.
    ``remote_dir`` is relative to the remote home unless absolute; it must exist. It may not
    hold whitespace or shell metacharacters (older scp passes it through the remote shell).

    Returns:
        ``{host: Result}`` in target order; ``exit_code`` is scp's. A connection failure is
        ``unreachable`` (recognised from ssh's message, since scp exits 255 or 1 for any
        failure).

    Raises:
        FileNotFoundError: a local file does not exist (nothing is copied anywhere), or the
            scp binary is not installed.
        ValueError: bad targets, remote directory, timeout or ``parallel``.
    """
    _check_timeout(timeout)
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not paths:
        raise ValueError("no files to copy")
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such local file: {os.fspath(path)!r}")
    _check_remote_path(remote_dir, "remote directory")
    _options(ssh_options)
    _timeout_option(connect_timeout)
    hosts = resolve_targets(targets, cluster)

    def job(host: str, cancel: _Cancelled) -> Result:
        argv = scp_argv(
            host,
            paths,
            remote_dir,
            connect_timeout=connect_timeout,
            ssh_options=ssh_options,
            preserve=preserve,
        )
        outcome = _execute(
            argv, host, stdin=None, timeout=timeout, nonce=None, on_output=None, cancel=cancel
        )
        return _classify(host, outcome, tracked=False, ssh_status=False)

    return _fan_out(hosts, parallel, job, on_result)


def _remote_path_expr(path: str) -> str:
    """``path`` quoted for the remote shell; a leading ``~/`` becomes ``"$HOME"/``."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def write_remote_file(
    host: str,
    path: str,
    content: str | bytes,
    *,
    mode: int = 0o644,
    timeout: float | None = None,
    connect_timeout: float = 10,
    ssh_options: Sequence[str] | None = None,
) -> Result:
    """Write ``content`` to ``path`` on ``host``, replacing the file atomically.

    The bytes (a str is encoded as UTF-8) go through ssh's standard input into a temporary
    file in the same directory, which gets ``mode`` and is then renamed over ``path``: a
    reader sees the old file or the new one, never a part (the data is not fsynced). The
    directory must exist. ``path`` is taken literally (any characters but NUL); a relative
    path is relative to the remote home, and a leading ``~/`` means the remote home.

    Returns:
        A :class:`Result` (``ok`` when the file is in place).

    Raises:
        ValueError: a bad host, an empty path or one holding NUL, a bad mode.
    """
    _check_timeout(timeout)
    if not isinstance(path, str) or not path or "\0" in path or path.endswith("/"):
        raise ValueError(f"path must name a file, not {path!r}")
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be an int between 0 and 0o7777, not {mode!r}")
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    directory = posixpath.dirname(path) or "."
    if not directory.startswith(("/", "~/")) and directory != "~":
        directory = "./" + directory  # mktemp never sees a template starting with "-"
    target = _remote_path_expr(path)
    script = (
        "set -e; umask 077; "
        f"t=$(mktemp {_remote_path_expr(posixpath.join(directory, '.unidist-write.XXXXXX'))}); "
        "trap 'rm -f -- \"$t\"' EXIT; "
        'cat > "$t"; '
        f'chmod {mode:04o} "$t"; '
        f'mv -f -- "$t" {target}; '
        "trap - EXIT"
    )
    return _run_one(
        host,
        script,
        timeout=timeout,
        connect_timeout=connect_timeout,
        ssh_options=ssh_options,
        stdin=data,
        track=True,
        on_output=None,
        cancel=None,
    )
