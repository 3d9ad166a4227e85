"""The Redis backend's edge: connection pool, scripts, bounded retries and error translation.

Every command goes through :meth:`Client.run`. redis-py's own retries are switched off
(``Retry(NoBackoff(), 0)``) because it cannot tell whether a command that failed mid-flight
took effect. Instead each call declares a retry policy:

* a failure while *connecting* (nothing was sent) is always retried, with backoff, at most
  ``retries`` times and not after the retry budget (``retry_for`` seconds, default
  ``connect_timeout``) has passed since the call started;
* a failure after the command was sent is ambiguous (the server may have executed it):
  ``SAFE`` operations are idempotent and retried; ``DEDUPED`` operations are retried (the
  server recognises a repeated request) but raise :class:`~unidist.errors.OutcomeUnknown`
  when the retry budget runs out after a send; ``FALSE_UNKNOWN`` operations are retried,
  but a falsy answer after an ambiguous failure raises
  :class:`~unidist.errors.OutcomeUnknown` (the first attempt may have done the work);
  ``NEVER`` operations raise :class:`~unidist.errors.OutcomeUnknown` at once.
"""

from __future__ import annotations

import enum
import hashlib
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionPool
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from unidist.errors import BackendUnavailable, CorruptData, OutcomeUnknown

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis[hiredis] is a dependency; its packer skips redis-py's per-argument checks
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover
    _pack_command = None
else:
    _pack_command = cast("Callable[[tuple[Any, ...]], bytes]", _hiredis_pack)

T = TypeVar("T")

NO_RETRY: Final = Retry(NoBackoff(), 0)
"""Given to every redis-py connection: unidist decides about retries itself."""

_CONNECTION_ERRORS: Final = (redis.ConnectionError, redis.TimeoutError, OSError)


class Policy(enum.Enum):
    """What to do when a command may or may not have reached the server."""

    SAFE = "safe"
    DEDUPED = "deduped"
    FALSE_UNKNOWN = "false_unknown"
    NEVER = "never"


_INCLUDE: Final = "-- @include "
_KEYED: Final = frozenset(
    {"GET", "SET", "DEL", "HGET", "HSET", "HDEL", "HGETALL", "HLEN", "INCRBY", "EXISTS"}
)
"""Native commands whose first argument is their (only) key: routed by it in Cluster."""


@dataclass(frozen=True)
class Script:
    """A static Lua script shipped in ``scripts/`` (never built from user data)."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        """Read ``scripts/<name>.lua``, splicing in shared parts named by a line
        ``-- @include FILE`` (Redis scripts cannot import one another)."""
        folder = resources.files("unidist.backends.redis").joinpath("scripts")
        lines = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if line.startswith(_INCLUDE):
                lines[i] = folder.joinpath(line[len(_INCLUDE) :].strip()).read_text(
                    encoding="utf-8"
                )
        source = "\n".join(lines)
        sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
        return cls(name, source, sha)


SCRIPT_NAMES: Final = (
    "lock_acquire",
    "lock_release",
    "lock_cancel_wait",
    "lock_renew",
    "lock_owners",
    "lock_break",
    "lock_wait_flag",
    "counter_add",
    "state_delete",
    "state_cas",
    "queue_put",
    "queue_put_many",
    "queue_take",
    "queue_take_many",
    "queue_ack",
    "queue_nack",
    "queue_stats",
    "queue_dead",
    "queue_requeue_dead",
    "queue_purge",
    "queue_release",
    "member_heartbeat",
    "member_leave",
    "members",
)


def load_scripts() -> dict[str, Script]:
    """Every script of :data:`SCRIPT_NAMES`, read from the package data."""
    return {name: Script.load(name) for name in SCRIPT_NAMES}


class Client:
    """Runs commands and scripts on a pool with unidist's retry policy and error mapping.

    Args:
        pool: the redis-py pool (fork-safe: it resets itself in a child process).
        where: ``host:port`` or the socket path, for messages.
        url: the redacted backend URL, for :attr:`BackendUnavailable.url`.
        retries: retries after a failed connect or a retryable ambiguous failure (None:
            as many as fit in the budget).
        connect_timeout: the TCP connect timeout of one attempt.
        socket_timeout: extra read allowance on top of a blocking command's own timeout.
        retry_for: the retry budget in seconds: no retry starts after it (None: the legacy
            budget, ``connect_timeout`` for connection failures and 5 s while the server
            loads its data set).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        where: str,
        url: str,
        retries: int | None,
        connect_timeout: float,
        socket_timeout: float,
        retry_for: float | None = None,
    ) -> None:
        self.pool = pool
        self.where = where
        self.url = url
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.retry_for = retry_for
        self._local = threading.local()
        self._all: weakref.WeakSet[Any] = weakref.WeakSet()
        self._all_lock = threading.Lock()

    def _connection(self, key: str | None = None, node: str | None = None) -> Any:
        """This thread's connection, connected and with nothing pending to read.

        ``key`` (the first key of the command) and ``node`` (``host:port``) route a command
        in Redis Cluster (:class:`~unidist.backends.redis._cluster.ClusterClient`); one
        server ignores them.

        One connection per thread (not borrowed from the pool per call): no pool locking on
        the hot path, and a blocked BLMOVE never holds a connection another thread needs.
        A connection made in another process (before ``fork()``) is never reused.
        """
        conn: Any = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            # Built from the pool's settings but not counted by the pool: a thread's connection
            # lives in thread-local storage and is closed when the thread ends, so a process
            # may start any number of threads over time (the pool's cap would count the dead).
            conn = self._new_connection()
            self._local.conn = conn
        return self._ready(conn)

    def _new_connection(self, **overrides: Any) -> Any:
        conn = self.pool.connection_class(**{**self.pool.connection_kwargs, **overrides})
        with self._all_lock:
            self._all.add(conn)
        return conn

    @staticmethod
    def _ready(conn: Any) -> Any:
        # redis-py's connect() returns at once when connected, but only after building a
        # retry closure: test the socket here (this is on every command's path).
        if conn._sock is None:
            conn.connect()
        # A server that restarted or a reply left unread shows as readable: reconnect now,
        # before sending, so that a command is never sent on a dead socket.
        try:
            stale = conn.can_read(0)
        except _CONNECTION_ERRORS:
            stale = True
        if stale:
            conn.disconnect()
            conn.connect()
        return conn

    def close(self) -> None:
        """Disconnect every connection of every thread (they reconnect on next use)."""
        with self._all_lock:
            conns = list(self._all)
        for conn in conns:
            try:
                conn.disconnect()
            except Exception:  # noqa: S110 - closing is best effort
                pass
        self.pool.disconnect()

    # ------------------------------------------------------------------ public
    def command(self, *args: Any, policy: Policy = Policy.SAFE) -> Any:
        """Run one native command."""

        def send(conn: Any) -> Any:
            conn.send_command(*args)
            return conn.read_response()

        key = str(args[1]) if len(args) > 1 and str(args[0]).upper() in _KEYED else None
        return self.run(send, policy, str(args[0]), key=key)

    def script(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[str | int],
        policy: Policy = Policy.SAFE,
    ) -> Any:
        """Run a script atomically on the server (EVALSHA, loading it on NOSCRIPT)."""

        def send(conn: Any) -> Any:
            try:
                if _pack_command is None:  # pragma: no cover
                    conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                else:
                    conn.send_packed_command(
                        [_pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))]
                    )
                return conn.read_response()
            except NoScriptError:
                # Nothing ran; EVAL runs the script and caches it for the next EVALSHA.
                self._same_route(conn)
                conn.send_command("EVAL", script.source, len(keys), *keys, *args)
                return conn.read_response()

        return self.run(send, policy, script.name, key=keys[0] if keys else None)

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send idempotent read commands in one round trip (not a transaction)."""
        if not commands:
            return []

        def send(conn: Any) -> list[Any]:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies

        return self.run(send, Policy.SAFE, "pipeline")

    def blpop(self, keys: Sequence[str], timeout: float, *, precise: bool = False) -> Any:
        """BLPOP ``keys`` for up to ``timeout`` seconds (>= 1 ms); the reply or None."""
        return self.blocking(("BLPOP", *keys), timeout, precise=precise)

    def blocking(self, command: Sequence[str], timeout: float, *, precise: bool = False) -> Any:
        """Run a blocking list command (``BLPOP``, ``BLMOVE``...) whose last argument is
        ``timeout`` seconds (at least 1 ms); its reply, or None on timeout.

        The read allowance is ``timeout`` plus the socket timeout, so a dead server still
        surfaces as :class:`BackendUnavailable` instead of a hang.

        The server resolves blocking timeouts only when its event loop wakes (every
        ``1000/hz`` ms, 100 ms by default), so a wait that must end on time (a delayed message
        falling due) passes ``precise=True``: the client stops reading after ``timeout`` and
        drops that connection, whose late reply can then never be mistaken for another's.
        """
        wait = max(timeout, 0.001)

        def send(conn: Any) -> Any:
            if not precise:
                conn.send_command(*command, f"{wait:.3f}")
                return conn.read_response(timeout=wait + self.socket_timeout)
            conn.send_command(*command, f"{wait + 1.0:.3f}")
            try:
                return conn.read_response(timeout=wait)
            except RedisTimeoutError:
                conn.disconnect()
                return None

        # A retried wait can at worst miss one wake-up; callers re-check anyway, and a
        # claimed grant whose reply was lost is found again by the next acquire.
        return self.run(send, Policy.SAFE, str(command[0]), key=command[1])

    def scan(self, pattern: str, count: int) -> set[str]:
        """Every key matching ``pattern`` (``SCAN`` to the end; in Cluster, on every primary)."""
        return self._scan_node(pattern, count, None)

    def _scan_node(self, pattern: str, count: int, node: str | None) -> set[str]:
        found: set[str] = set()
        cursor: int | str = 0
        while True:

            def send(conn: Any, cursor: int | str = cursor) -> Any:
                conn.send_command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
                return conn.read_response()

            cursor, batch = self.run(send, Policy.SAFE, "SCAN", node=node)
            found.update(batch)
            if int(cursor) == 0:
                return found

    def _same_route(self, conn: Any) -> None:
        """Before a second command of one call on ``conn`` (EVAL after NOSCRIPT): in Cluster,
        repeat ``ASKING`` when the call was sent to a slot's importing node."""

    def _redirect(self, exc: ResponseError, attempt: int, started: float) -> bool:
        """Cluster redirections (MOVED, ASK, TRYAGAIN, CLUSTERDOWN): True to send again.
        One server never redirects."""
        return False

    # ------------------------------------------------------------------ core
    def run(
        self,
        send: Callable[[Any], T],
        policy: Policy,
        what: str,
        *,
        key: str | None = None,
        node: str | None = None,
    ) -> T:
        """Run ``send`` on a pooled connection under ``policy`` (see the module docs).

        ``key``/``node`` route the command in Redis Cluster."""
        started = time.monotonic()
        attempt = 0
        ambiguous = False
        while True:
            try:
                conn: Any = self._connection(key, node)
            except AuthenticationError as exc:
                raise self._auth_error(exc) from exc
            except _CONNECTION_ERRORS as exc:
                self._refuse_tls(exc)
                # Nothing was sent: always safe to try again.
                if self._may_retry(attempt, started):
                    attempt += 1
                    self._backoff(attempt, started)
                    continue
                raise self._unavailable(exc, what, ambiguous, policy, started) from exc
            except RedisError as exc:
                raise BackendUnavailable(
                    f"Redis at {self.where} failed the connection handshake "
                    f"({type(exc).__name__}: {_reason(exc)}); is it a Redis server?",
                    url=self.url,
                ) from exc
            try:
                result = send(conn)
            except AuthenticationError as exc:
                raise self._auth_error(exc) from exc
            except BusyLoadingError as exc:
                # The server is loading its data set and executed nothing.
                conn.disconnect()
                if self._may_retry(attempt, started, loading=True):
                    attempt += 1
                    self._backoff(attempt, started)
                    continue
                raise self._unavailable(exc, what, ambiguous, policy, started) from exc
            except _CONNECTION_ERRORS as exc:
                conn.disconnect()
                if policy is Policy.NEVER:
                    raise self._unavailable(exc, what, True, policy, started) from exc
                ambiguous = True
                if self._may_retry(attempt, started):
                    attempt += 1
                    self._backoff(attempt, started)
                    continue
                raise self._unavailable(exc, what, ambiguous, policy, started) from exc
            except ResponseError as exc:
                # A redirection means the command did not run: safe to send again.
                if self._redirect(exc, attempt, started):
                    attempt += 1
                    continue
                raise self._response_error(exc, what) from exc
            except RedisError as exc:
                raise BackendUnavailable(
                    f"Redis at {self.where} failed during {what}: {type(exc).__name__}: {exc}",
                    url=self.url,
                ) from exc
            if ambiguous and policy is Policy.FALSE_UNKNOWN and not result:
                raise OutcomeUnknown(
                    f"Redis at {self.where}: the connection failed after {what} was sent and "
                    "the retry found nothing to do; the first attempt may have taken effect",
                    url=self.url,
                )
            return result

    def _refuse_tls(self, exc: BaseException) -> None:
        """Raise at once for a certificate that failed verification (a retry won't pass)."""
        if _tls_refused(exc):
            raise BackendUnavailable(
                f"Redis at {self.where}: TLS certificate verification failed "
                f"({_reason(exc)}); pass the server's CA with ?ssl_ca_certs=",
                url=self.url,
            ) from exc

    def _budget(self, loading: bool = False) -> float:
        if self.retry_for is not None:
            return self.retry_for
        return max(self.connect_timeout, 5.0) if loading else self.connect_timeout

    def _may_retry(self, attempt: int, started: float, *, loading: bool = False) -> bool:
        if self.retries is not None and attempt >= self.retries:
            return False
        return time.monotonic() - started < self._budget(loading)

    def _backoff(self, attempt: int, started: float) -> None:
        """No pause before the first retry (a lost reply or a dropped idle connection is
        over at once), then 50 ms doubling up to 500 ms, never past the end of the budget."""
        if attempt <= 1:
            return
        pause = min(0.05 * 2 ** (attempt - 2), 0.5)
        if self.retry_for is not None:
            pause = min(pause, max(self.retry_for - (time.monotonic() - started), 0.0))
        time.sleep(pause)

    def _auth_error(self, exc: AuthenticationError) -> BackendUnavailable:
        # redis-py's messages never echo the password; keep only the server's short reason.
        return BackendUnavailable(
            f"Redis at {self.where}: authentication failed ({_reason(exc)}); check the user "
            f"name and password in the backend URL {self.url}",
            url=self.url,
        )

    def _unavailable(
        self, exc: BaseException, what: str, ambiguous: bool, policy: Policy, started: float
    ) -> BackendUnavailable:
        reason = f"{type(exc).__name__}: {_reason(exc)}"
        spent = time.monotonic() - started
        if spent >= 0.05:
            reason += f"; gave up after {spent:.1f} s"
        if ambiguous and policy is not Policy.SAFE:
            # DEDUPED too: a caller who repeats a counter increment itself could add twice.
            return OutcomeUnknown(
                f"Redis at {self.where}: connection lost after {what} was sent ({reason}); "
                "it may or may not have taken effect",
                url=self.url,
            )
        return BackendUnavailable(
            f"Redis at {self.where} is unavailable ({reason}); backend {self.url}",
            url=self.url,
        )

    def _response_error(self, exc: ResponseError, what: str) -> Exception:
        text = _reason(exc)
        code = text.split(" ", 1)[0]
        if code == "WRONGTYPE" or "not an integer" in text or "not a valid float" in text:
            return CorruptData(
                f"Redis at {self.where}: {what} found data of an unexpected shape under the "
                f"unidist prefix ({text})",
                path=self.url,
            )
        if code == "NOPERM" or isinstance(exc, NoPermissionError) or "no permissions" in text:
            hint = "the Redis user lacks a permission (ACL)"
        elif code == "OOM":
            hint = "the server is out of memory (maxmemory)"
        elif code == "READONLY":
            hint = "the server is a read-only replica"
        elif code in {"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "CROSSSLOT"}:
            hint = "Redis Cluster is not supported through redis:// URLs"
        else:
            hint = "the server refused the command"
        return BackendUnavailable(
            f"Redis at {self.where}: {hint} during {what} ({text})", url=self.url
        )


def _tls_refused(exc: BaseException) -> bool:
    """True if ``exc`` (or what it wraps) is a failed TLS certificate or host-name check."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
