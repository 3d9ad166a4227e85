"""A real, throwaway ``sshd`` on a loopback port for the remote-command tests.

:class:`Sshd` generates a host key and a user key with ``ssh-keygen`` in a temporary
directory, starts ``/usr/sbin/sshd -D -e`` on a free ``127.0.0.1`` port and writes an ssh
client config in which the aliases ``node1`` … ``node4`` all reach that sshd (as the current
user, with the throwaway key, the host key pre-trusted and ``StrictHostKeyChecking yes``) and
``nodedown`` reaches a loopback port where nothing listens (connection refused).

Each alias sends ``UNIDIST_TEST_NODE=<alias>`` to the server (``SetEnv``/``AcceptEnv``), so a
remote command can tell through which alias it was reached, e.g. to make one "host" fail.

Usage::

    with Sshd() as sshd:
        subprocess.run(["ssh", *sshd.ssh_options, "node1", "true"], check=True)

Pass ``sshd.ssh_options`` (``["-F", config_path]``) to ssh/scp, or set
``UNIDIST_SSH_OPTIONS`` to ``shlex.join(sshd.ssh_options)`` for :mod:`unidist.cluster.remote`.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final

SSHD: Final = "/usr/sbin/sshd"
HOSTS: Final = ("node1", "node2", "node3", "node4")
DOWN: Final = "nodedown"
_START_TIMEOUT: Final = 20.0
_MARKER: Final = "UNIDIST_TEST_SSHD"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    """A running sshd plus an ssh config for it (a context manager; also ``start``/``stop``).

    Attributes (valid after start):
        dir: the temporary directory holding keys, configs, pid file and sshd's log.
        port: the port sshd listens on (127.0.0.1).
        down_port: a loopback port held bound but not listening (connection refused).
        config_path: the ssh client config (aliases node1..node4 and nodedown).
        hosts: ``("node1", "node2", "node3", "node4")``, all reachable.
        down: ``"nodedown"``, unreachable.
        ssh_options: ``["-F", config_path]`` for ssh/scp.
        user: the login user (the current user).
        log_path: sshd's stderr (``-e``), useful when a test fails.
    """

    hosts: tuple[str, ...] = HOSTS
    down: str = DOWN

    def __init__(self) -> None:
        self.dir = Path()
        self.port = 0
        self.down_port = 0
        self.config_path = ""
        self.ssh_options: list[str] = []
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.log_path = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._down_sock: socket.socket | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create keys and configs, start sshd and wait until a real login succeeds.

        Raises:
            RuntimeError: sshd is missing or did not accept a login in time (its log is
                included).
        """
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is not installed (apt-get install -y openssh-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="unidist-sshd-"))
        try:
            self._prepare()
            last = ""
            for _ in range(3):  # the free port may be taken between probe and bind
                self.port = _free_port()
                self._write_configs()
                last = self._launch()
                if not last:
                    return
                self._kill()
            raise RuntimeError(f"sshd did not start: {last}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop sshd (and every session it still runs) and remove the temporary directory."""
        self._kill()
        if self._down_sock is not None:
            self._down_sock.close()
            self._down_sock = None
        if self.dir != Path() and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _keygen(self, name: str) -> Path:
        path = self.dir / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        return path

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        self.host_key = self._keygen("host_key")
        self.user_key = self._keygen("id_user")
        (self.dir / "authorized_keys").write_bytes(self.user_key.with_suffix(".pub").read_bytes())
        os.chmod(self.dir / "authorized_keys", 0o600)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self._down_sock = sock
        self.down_port = int(sock.getsockname()[1])
        self.log_path = self.dir / "sshd.log"

    def _write_configs(self) -> None:
        d = self.dir
        server = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {d / 'host_key'}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AcceptEnv UNIDIST_TEST_NODE",
            f"SetEnv {_MARKER}={d}",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 200",
            "MaxSessions 50",
            "LoginGraceTime 30",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]
        (d / "sshd_config").write_text("\n".join(server) + "\n")
        pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        client: list[str] = []
        for alias in HOSTS:
            client += [
                f"Host {alias}",
                "    HostName 127.0.0.1",
                f"    Port {self.port}",
                f"    SetEnv UNIDIST_TEST_NODE={alias}",
            ]
        client += [
            f"Host {DOWN}",
            "    HostName 127.0.0.1",
            f"    Port {self.down_port}",
            "Host *",
            f"    User {self.user}",
            f"    IdentityFile {d / 'id_user'}",
            "    IdentitiesOnly yes",
            "    IdentityAgent none",
            f"    UserKnownHostsFile {d / 'known_hosts'}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
            "    CheckHostIP no",
            "    ControlMaster no",
            "    ControlPath none",
            "    LogLevel ERROR",
        ]
        self.config_path = str(d / "ssh_config")
        Path(self.config_path).write_text("\n".join(client) + "\n")
        self.ssh_options = ["-F", self.config_path]

    def _launch(self) -> str:
        """Start sshd; return "" once a login works, else what went wrong."""
        log = open(self.log_path, "ab")  # closed in _kill
        self._log = log
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # sessions share its group: stop() kills them all
        )
        deadline = time.monotonic() + _START_TIMEOUT
        probe = ["ssh", *self.ssh_options, "-o", "ConnectTimeout=5", HOSTS[0], "echo", "ready"]
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with {self._proc.returncode}: {self._log_tail()}"
            res = subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL, timeout=15)
            if res.returncode == 0 and res.stdout == b"ready\n":
                return ""
            last = res.stderr.decode("utf-8", "replace").strip()
            time.sleep(0.05)
        return f"no login within {_START_TIMEOUT}s ({last}); log: {self._log_tail()}"

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # Sessions first (while the listener is their ancestor), then anything still
            # carrying this server's marker (commands orphaned by a dropped connection).
            _kill_pids(_descendants(proc.pid))
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            _kill_pids(self.session_pids())
        log = self._log
        self._log = None
        if log is not None:
            log.close()

    def session_pids(self) -> list[int]:
        """Processes started through this sshd that are still running (every session's
        environment carries a marker naming this server), e.g. a remote command left behind."""
        if self.dir == Path():
            return []
        marker = f"{_MARKER}={self.dir}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    env = fh.read().split(b"\0")
            except OSError:
                continue
            if marker in env:
                found.append(int(entry))
        return found

    def env(self) -> dict[str, str]:
        """``{"UNIDIST_SSH_OPTIONS": ...}`` for a child process's environment."""
        return {"UNIDIST_SSH_OPTIONS": shlex.join(self.ssh_options)}


def _descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to ``pid`` (as of now)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry))
    todo, seen = list(tree.get(pid, [])), set()
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += tree.get(p, [])
    return sorted(seen)


def _kill_pids(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


__all__ = ["DOWN", "HOSTS", "Sshd"]
