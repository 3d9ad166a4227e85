"""Start a throwaway ``redis-server`` on a free loopback port.

Used by the test suite, the benchmarks and ``start.sh``::

    from backends.redis.server import RedisServer

    with RedisServer() as srv:            # started and answering PING
        backend = unidist.connect(srv.url)
        srv.kill()                        # SIGKILL, like a crash
        srv.start()                       # same port, same data directory

Persistence is off unless ``aof=True`` (``appendonly yes`` + ``appendfsync always``;
``appendfsync="everysec"`` or ``"no"`` choose another fsync policy).
The server listens on 127.0.0.1 only. Run this file as a script to start a server and
print its URL; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_cluster_port(host: str = HOST) -> int:
    """A free port ``p`` <= 55535 whose Cluster bus port ``p + 10000`` is free too."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 55536)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair (p, p + 10000) for a Redis Cluster node")


def _ping(host: str, port: int, password: str | None, timeout: float = 0.5) -> bool:
    """True if a Redis server at host:port answers PING (after AUTH when given)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            cmds = []
            if password is not None:
                pw = password.encode()
                cmds.append(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw))
            cmds.append(b"*1\r\n$4\r\nPING\r\n")
            sock.sendall(b"".join(cmds))
            data = b""
            deadline = time.monotonic() + timeout
            while b"PONG" not in data and b"-" not in data and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b"+PONG" in data
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1.

    Args:
        aof: enable the append-only file with ``appendfsync always`` (acked writes survive
            ``kill()``); persistence is off by default.
        password: ``requirepass`` for the server; included (percent-encoded) in :attr:`url`.
        port: a fixed port; default picks a free one.
        data_dir: working directory of the server (AOF files, log); default a fresh private
            temporary directory, removed by :meth:`stop`.
        autostart: start at once (default); otherwise call :meth:`start` or use ``with``.
        unix_socket: also listen on ``<data_dir>/redis.sock`` (mode 0700); see
            :attr:`unix_url`.
        appendfsync: with ``aof``: ``always`` (default), ``everysec`` or ``no``.
        extra_args: more ``--option value`` arguments for ``redis-server`` (TLS ports,
            replication, Cluster settings...).
        config: the configuration file (default ``redis.conf`` or ``redis-aof.conf`` here).

    Raises:
        RuntimeError: ``redis-server`` is not on PATH, or the server did not answer PING in
            time (the message quotes its log).
    """

    def __init__(
        self,
        aof: bool = False,
        password: str | None = None,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        autostart: bool = True,
        executable: str = "redis-server",
        unix_socket: bool = False,
        appendfsync: str = "always",
        extra_args: Sequence[str] = (),
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise RuntimeError(
                f"{executable!r} is not on PATH; install Redis (e.g. 'apt-get install "
                "redis-server' or 'brew install redis') to run the Redis backend and its tests"
            )
        self.executable = found
        self.aof = aof
        self.password = password
        self.host = HOST
        self._fixed_port = port is not None
        # A Cluster node also listens on port + 10000 (its bus), so it needs a port pair.
        self._pick_port = free_cluster_port if "--cluster-enabled" in extra_args else free_port
        self.port = port if port is not None else self._pick_port()
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(data_dir)
            if data_dir is not None
            else Path(tempfile.mkdtemp(prefix="unidist-redis-"))
        )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.unix_socket = unix_socket
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
        if config is None:
            # A private copy: Sentinel failovers (CONFIG REWRITE) rewrite the file in place.
            shared = HERE / ("redis-aof.conf" if aof else "redis.conf")
            config = self.data_dir / "redis.conf"
            config.write_text(shared.read_text())
            config.chmod(0o600)
        self.config = Path(config)
        self.proc: subprocess.Popen[bytes] | None = None
        if autostart:
            self.start()

    # ------------------------------------------------------------------ identity
    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        """Where the server listens when started with ``unix_socket=True``."""
        return self.data_dir / "redis.sock"

    @property
    def unix_url(self) -> str:
        """``unix://[:password@]/path/redis.sock?db=0`` (needs ``unix_socket=True``)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        aof = self.appendfsync if self.aof else "off"
        return f"<RedisServer {self.host}:{self.port} aof={aof} {state}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RedisServer:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if self._try_start():
                return self
            if attempt + 1 < attempts:
                # Somebody else took the port between probing and binding; pick another.
                self.port = self._pick_port()
        raise RuntimeError(
            f"redis-server on {self.host}:{self.port} did not start within {START_TIMEOUT}s; "
            f"log ({self.log_path}):\n{self._log_tail()}"
        )

    def _try_start(self) -> bool:
        argv = [
            self.executable,
            str(self.config),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(self.log_path),
        ]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        if self.unix_socket:
            argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.aof:
            argv += ["--appendfsync", self.appendfsync]
        argv += self.extra_args
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.data_dir,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if _ping(self.host, self.port, self.password):
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes its AOF) and wait; remove a temporary data dir."""
        self._terminate(signal.SIGTERM, timeout)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server, like a crash. The data directory is kept for :meth:`start`."""
        self._terminate(signal.SIGKILL, 10.0)

    def restart(self, *, hard: bool = False) -> RedisServer:
        """Stop (SIGKILL if ``hard``, else SIGTERM) and start again on the same port and dir."""
        if hard:
            self.kill()
        else:
            self._terminate(signal.SIGTERM, 10.0)
        return self.start()

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()


class RedisSentinel(RedisServer):
    """One Redis Sentinel on 127.0.0.1 monitoring ``primary`` as service ``service``.

    Fast settings for tests: the primary counts as down after ``down_after_ms`` without
    an answer, and a failover may take ``failover_timeout_ms``. ``quorum`` Sentinels must
    agree that the primary is down.
    """

    def __init__(
        self,
        primary: RedisServer,
        service: str = "unidist",
        *,
        quorum: int = 1,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
    ) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="unidist-sentinel-"))
        conf = data_dir / "sentinel.conf"  # Sentinel rewrites its own file: one per instance
        lines = [
            f"sentinel monitor {service} {primary.host} {primary.port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if primary.password is not None:
            lines.append(f"sentinel auth-pass {service} {primary.password}")
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        self.service = service
        super().__init__(data_dir=data_dir, config=conf, extra_args=["--sentinel"])
        self._own_dir = True

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:PORT/SERVICE/0`` (add more Sentinels with commas)."""
        return f"redis+sentinel://{self.host}:{self.port}/{self.service}/0"

    def primary_address(self) -> tuple[str, int] | None:
        """The primary this Sentinel names now (``SENTINEL get-master-addr-by-name``)."""
        name = self.service.encode()
        cmd = b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$%d\r\n%s\r\n" % (
            len(name),
            name,
        )
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(cmd)
                data = b""
                while data.count(b"\r\n") < 5:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    data += chunk
        except OSError:
            return None
        parts = data.split(b"\r\n")
        if not data.startswith(b"*2"):
            return None
        return parts[2].decode(), int(parts[4])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a throwaway redis-server on 127.0.0.1.")
    parser.add_argument("--aof", action="store_true", help="appendonly yes, appendfsync always")
    parser.add_argument("--password", default=None, help="requirepass")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--data-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    try:
        server = RedisServer(
            aof=args.aof, password=args.password, port=args.port, data_dir=args.data_dir
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    print(
        f"# pid {server.proc.pid if server.proc else '?'}, dir {server.data_dir}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server.running:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
