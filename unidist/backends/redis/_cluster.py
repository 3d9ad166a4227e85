"""Redis Cluster routing for the Redis backend (``redis+cluster://``).

:class:`ClusterClient` keeps unidist's retry policy (:class:`~._client.Client`) and adds the
routing: the slot table comes from ``CLUSTER SLOTS`` of any reachable node, each command goes
to the primary that owns the slot of its first key (every key of one unidist object shares
one hash tag, hence one slot), and per thread there is one connection per node.

Redirections are followed without counting as ambiguous, because a redirected command did
not run: ``MOVED`` updates the table (and asks for a fresh one), ``ASK`` sends ``ASKING``
and the command once to the importing node, ``TRYAGAIN`` (a script whose keys are split by
a migration in progress) and ``CLUSTERDOWN`` back off and retry, all within the retry
budget. A lost connection refreshes the table before the next attempt, so a replica
promoted by a Cluster failover is found.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from unidist.backends.redis._client import _CONNECTION_ERRORS, Client, Policy
from unidist.backends.redis.keys import hash_slot
from unidist.errors import InvalidURL

SLOTS: Final = 16384


class ClusterClient(Client):
    """A :class:`Client` for Redis Cluster. ``seeds`` are ``(host, port)`` of some nodes;
    ``pool`` supplies the connection settings (its host and port are replaced per node)."""

    def __init__(self, pool: Any, seeds: Sequence[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(pool, **kwargs)
        self.seeds = [f"{h}:{p}" for h, p in seeds]
        self._slots: list[str | None] = [None] * SLOTS
        self._primaries: list[str] = []
        self._table_lock = threading.Lock()
        self._stale = True

    # ------------------------------------------------------------------ slot table
    def _node_conn(self, node: str) -> Any:
        conns: dict[str, Any] | None = getattr(self._local, "conns", None)
        if conns is None or getattr(self._local, "pid", None) != os.getpid():
            conns = self._local.conns = {}
            self._local.pid = os.getpid()
        conn = conns.get(node)
        if conn is None:
            host, _, port = node.rpartition(":")
            conn = conns[node] = self._new_connection(host=host, port=int(port))
        return conn

    def _refresh(self) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers."""
        candidates = list(dict.fromkeys([*self._primaries, *self.seeds]))
        last: BaseException | None = None
        for node in candidates:
            try:
                conn = self._ready(self._node_conn(node))
                conn.send_command("CLUSTER", "SLOTS")
                reply = conn.read_response()
            except (*_CONNECTION_ERRORS, ResponseError) as exc:
                last = exc
                try:
                    self._node_conn(node).disconnect()
                except Exception:  # noqa: S110 - best effort
                    pass
                continue
            table: list[str | None] = [None] * SLOTS
            primaries: list[str] = []
            for entry in reply:
                start, end, primary = int(entry[0]), int(entry[1]), entry[2]
                host = primary[0] if primary[0] else node.rpartition(":")[0]
                addr = f"{host}:{int(primary[1])}"
                if addr not in primaries:
                    primaries.append(addr)
                for slot in range(start, end + 1):
                    table[slot] = addr
            with self._table_lock:
                self._slots, self._primaries, self._stale = table, primaries, False
            return
        raise ConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS: {last}")

    def _node_for(self, key: str | None) -> str:
        if self._stale:
            self._refresh()
        if key is None:
            return self._primaries[0] if self._primaries else self.seeds[0]
        node = self._slots[hash_slot(key)]
        if node is None:
            self._stale = True
            raise ConnectionError(f"no Redis Cluster node serves the slot of {key}")
        return node

    # ------------------------------------------------------------------ Client hooks
    def _connection(self, key: str | None = None, node: str | None = None) -> Any:
        ask = getattr(self._local, "ask", None)
        self._local.ask = None
        self._local.asking = ask is not None
        target = ask or node or self._node_for(key)
        try:
            conn = self._ready(self._node_conn(target))
        except _CONNECTION_ERRORS:
            self._stale = True  # a failover may have moved the slot: ask again next time
            raise
        if ask:
            conn.send_command("ASKING")
            conn.read_response()
        return conn

    def _same_route(self, conn: Any) -> None:
        if getattr(self._local, "asking", False):
            conn.send_command("ASKING")
            conn.read_response()

    def _redirect(self, exc: ResponseError, attempt: int, started: float) -> bool:
        if not isinstance(exc, AskError | TryAgainError | ClusterDownError):
            return False
        if not self._may_retry(attempt, started):
            return False
        if isinstance(exc, MovedError):
            addr = f"{exc.host}:{exc.port}"
            with self._table_lock:
                self._slots[exc.slot_id] = addr
                self._stale = True  # one slot moved: others probably did too
        elif isinstance(exc, AskError):
            self._local.ask = f"{exc.host}:{exc.port}"
        else:  # TRYAGAIN (keys split by a migration) or CLUSTERDOWN: wait a little
            if isinstance(exc, ClusterDownError):
                self._stale = True
            time.sleep(min(0.01 * 2 ** min(attempt, 6), 0.25))
        return True

    def scan(self, pattern: str, count: int) -> set[str]:
        """``SCAN`` every primary."""
        if self._stale:
            self._refresh()
        found: set[str] = set()
        for node in list(self._primaries):
            found |= self._scan_node(pattern, count, node)
        return found

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The commands one by one, each to the node of its key (they may be on several)."""
        return [self.command(*cmd, policy=Policy.SAFE) for cmd in commands]

    def close(self) -> None:
        super().close()
        self._stale = True


def host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` of a URL's host list.

    Raises:
        InvalidURL: an empty host or a bad port (the message names the redacted ``url``).
    """
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise InvalidURL(f"empty host in the host list of {url}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidURL(f"bad port {port_text!r} in the host list of {url}")
    return host, int(port_text)
