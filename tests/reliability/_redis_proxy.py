"""A loopback TCP proxy in front of a redis-server that loses replies (R3).

Every command is forwarded to the server, so it *runs*; with probability ``p`` (seeded) the
server's reply is then swallowed and both connections are closed: the client sees its
connection die after sending, the "ambiguous outcome" case.
"""

from __future__ import annotations

import random
import socket
import threading


class LossyProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target_port``, dropping replies at rate ``p``."""

    def __init__(self, target_port: int, p: float, seed: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.p = p
        self._rng = random.Random(seed)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.dropped = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept)

    def _lose(self) -> bool:
        """Whether to swallow the next reply (called under the proxy's lock)."""
        return self._rng.random() < self.p

    def _start(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):  # no Nagle/delayed-ACK stalls on small replies
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, server]
            self._start(self._pump, client, server, False)
            self._start(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if replies:
                    with self._lock:
                        lose = self._lose()
                        if lose:
                            self.dropped += 1
                        else:
                            self.forwarded += 1
                    if lose:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
