"""``redis://`` / ``rediss://`` / ``unix://`` — objects shared by many hosts through one Redis.

URL forms::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                                   (TLS; certificates verified by default)
    unix://[[user]:password@]/path/to/redis.sock[?db=0&...]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db][?...]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0][?...]

``redis+sentinel://`` names Sentinels (default port 26379) and the monitored service; the
primary is asked for again after every lost connection, so a failover is followed within
the retry budget (``sentinel_username``/``sentinel_password`` for Sentinels with a
password). ``redis+cluster://`` names some Cluster nodes; commands go to the primary of
their slot, and MOVED/ASK/TRYAGAIN/CLUSTERDOWN are followed within the retry budget. TLS is
not available with either yet.

Options (query string; anything else is :class:`~unidist.errors.InvalidURL`):

* ``prefix`` (default ``unidist:``): every key starts with it; no braces, glob characters or
  whitespace.
* ``db``: database number (also the ``/db`` path of ``redis://``).
* ``connect_timeout`` (default 1.5 s): TCP connect timeout of one attempt; also the retry
  budget when ``retry_for`` is not given.
* ``retry_for`` (seconds): the retry budget. While the server is unreachable, restarting or
  loading its data, an operation retries (the first retry at once, then after 50 ms doubling
  to 500 ms) for at most this
  long, then raises :class:`~unidist.errors.BackendUnavailable`; the longest stall is
  ``retry_for`` plus one attempt (``connect_timeout`` to connect, ``socket_timeout`` once
  sent). With ``retry_for`` the number of retries is unbounded unless ``retries`` is given.
  Without it: ``connect_timeout`` for connection failures, 5 s while the server loads.
* ``socket_timeout`` (default 5 s): how long one command may take before the server counts
  as unavailable (blocking waits get their own timeout on top).
* ``retries`` (default 3, unbounded when ``retry_for`` is given): retries after a
  connection failure.
* Connections: one per thread that uses the backend, closed when the thread ends.
* ``health_check_interval``: seconds after which an idle connection is PINGed before use.
* ``client_name``: ``CLIENT SETNAME`` of the connections.
* ``rediss://`` only: ``ssl_cert_reqs=required|optional|none`` (default ``required``),
  ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname`` (default true).

Scope: ``network`` — every host that reaches the server shares the objects.

Atomicity: each operation is one Lua script or one native command, so every other client sees
it completely or not at all. Scripts are static files (``scripts/*.lua``), take names and
values only as KEYS/ARGV, and use the server clock (``TIME``) for leases, expiries, due times
and visibility deadlines; client clocks never matter. All keys of one object share a hash tag
(``unidist:{q:work}:r``), so a script only touches one Redis Cluster slot (see
:mod:`unidist.backends.redis.keys`).

Retries: redis-py's own retries are off. A failed connect is retried (nothing was sent); a
connection lost after a command was sent is retried only where that is idempotent
(``counter_add`` deduplicates by request id for 5 minutes, ``lock_acquire`` by holder,
``queue_put`` by message id plus a per-call nonce and the calling thread's last put);
when the budget runs out after a send, ``counter_add`` and ``queue_put`` raise
:class:`~unidist.errors.OutcomeUnknown`; otherwise, or when a retry of
``lock_release``/``queue_ack``/``queue_nack``/``state_cas``/``member_leave`` answers "nothing
to do", :class:`~unidist.errors.OutcomeUnknown` says the first attempt may have taken effect.
``queue_get``, ``state_delete``, ``lock_break``, ``queue_purge`` and ``queue_requeue_dead``
are never retried after sending. An unreachable server raises
:class:`~unidist.errors.BackendUnavailable` naming ``host:port`` (never the password) within
about ``connect_timeout``; a wrong password says "authentication failed".

Guarantees per topology and persistence mode, the ACL command list and the measurements:
``docs/reliability/redis.md``.

Durability is Redis's: without persistence (the default ``redis.conf``) a restart loses
everything; with ``appendonly yes`` + ``appendfsync always`` an acknowledged operation
survives a crash of the single server; ``appendfsync everysec`` may lose the last second
or two, also when only the server process crashes; replication with Sentinel or Cluster
failover can lose acknowledged writes.
Locks are never meant to outlive the server.

Fencing tokens: ``max(last token + 1, server TIME in microseconds)``, stored per lock in a
key that release never deletes. With persistence they increase strictly; after a restart
*without* persistence they still increase as long as the server clock does not step back
by more than the downtime (tokens track microseconds, far above the acquisition rate).

Waiting and fairness: waiters register in a FIFO (a zset ordered by registration
sequence, each entry lapsing ``WAITER_TTL`` after its last refresh). ``lock_release`` hands
every free slot straight to the waiter at the head of the FIFO and pushes that grant onto
the waiter's own list; the waiter sleeps in ``BLMOVE`` from that list to its claim list, so
the server claims the grant the instant it is pushed and the waiter's next ``lock_acquire``
returns it without another round trip (one server step and one wake-up per handover, no
thundering herd, strict FIFO). A handed-off grant nobody claims (the waiter died) is
provisional and lapses after ``WAITER_TTL``, then goes to the next waiter. Waits are bounded
by the end of the earliest lease, so expiry is noticed without polling. Puts, nacks and
requeues push onto the queue's wake list; ``queue_wait`` BLPOPs it, bounded by the next due
delayed message or visibility deadline.

Connections: one per thread (made by the redis-py pool, checked for a dead socket before
each command); a blocked wait never holds a connection another thread needs.

Fork safety: a connection made in another process is never reused; a forked child opens
its own (and redis-py's pool resets itself on a new pid).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

from redis.connection import ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.sentinel import Sentinel, SentinelConnectionPool

from unidist._names import check_name
from unidist.backends._url import (
    OptionParser,
    ParsedURL,
    opt_bool,
    opt_choice,
    opt_float,
    opt_int,
    opt_str,
)
from unidist.backends.base import STATE_ABSENT, Backend, Delivery, LockGrant, Scope
from unidist.backends.redis import keys as _keys
from unidist.backends.redis._batch import RedisBatchMixin
from unidist.backends.redis._client import NO_RETRY, Client, Policy, load_scripts
from unidist.backends.redis._cluster import ClusterClient, host_port
from unidist.codec import JSON, decode, encode
from unidist.errors import CorruptData, InvalidName, InvalidURL

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
REQUEST_TTL_MS: Final = 300_000
"""How long ``counter_add`` remembers a request id (dedupe of retried calls)."""
PROMOTE_BATCH: Final = 1000
"""Due delayed / expired in-flight messages moved per receive."""
_SCAN_COUNT: Final = 1000
_PUT_KEYS_CACHE: Final = 1024
"""Queue names whose put keys each thread keeps (see ``RedisBackend._put_keys``)."""


def _opt_positive(text: str) -> float:
    value = opt_float(text)
    if value <= 0:
        raise ValueError(f"expected a number > 0, got {text!r}")
    return value


def _opt_prefix(text: str) -> str:
    return _keys.check_prefix(text)


def _us(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


def _seconds(us: str | int) -> float:
    return int(us) / 1_000_000


def _split_delta(delta: int) -> list[str]:
    """``delta`` as parts that each fit INCRBY's signed 64-bit argument."""
    parts: list[str] = []
    sign = -1 if delta < 0 else 1
    rest = abs(delta)
    while rest > INT64_MAX:
        parts.append(str(sign * INT64_MAX))
        rest -= INT64_MAX
    parts.append(str(sign * rest))
    return parts


def _priority_rank(priority: int) -> str:
    """16 hex digits that sort ascending as ``priority`` descends (any signed 64-bit int)."""
    if not INT64_MIN <= priority <= INT64_MAX:
        raise ValueError(f"priority {priority} is outside the signed 64-bit range")
    return f"{INT64_MAX - priority:016x}"


_RANK_0: Final = _priority_rank(0)


def _priority_of(rank: str) -> int:
    return INT64_MAX - int(rank[:16], 16)


class RedisBackend(RedisBatchMixin, Backend):
    """Many hosts sharing one Redis server. See the module docs: URL, options, guarantees."""

    schemes: ClassVar[tuple[str, ...]] = (
        "redis",
        "rediss",
        "unix",
        "redis+sentinel",
        "redis+cluster",
    )
    options: ClassVar[dict[str, OptionParser]] = {
        "prefix": _opt_prefix,
        "db": opt_int,
        "connect_timeout": _opt_positive,
        "socket_timeout": _opt_positive,
        "retries": opt_int,
        "retry_for": _opt_positive,
        "health_check_interval": opt_float,
        "client_name": opt_str,
        "ssl_cert_reqs": opt_choice("required", "optional", "none"),
        "ssl_ca_certs": opt_str,
        "ssl_certfile": opt_str,
        "ssl_keyfile": opt_str,
        "ssl_check_hostname": opt_bool,
        "sentinel_username": opt_str,
        "sentinel_password": opt_str,
    }
    scope: ClassVar[Scope] = "network"

    def __init__(self, parsed: ParsedURL) -> None:
        super().__init__(parsed)
        opts = parsed.options
        scheme = parsed.scheme.lower()
        if scheme not in self.schemes:
            raise InvalidURL(f"RedisBackend does not serve {scheme}:// URLs ({self.url})")
        if scheme != "redis+sentinel":
            sentinel_opts = sorted(k for k in opts if k.startswith("sentinel_"))
            if sentinel_opts:
                raise InvalidURL(
                    f"option {sentinel_opts[0]!r} needs a redis+sentinel:// URL; got {self.url}"
                )
        if scheme != "rediss":
            tls_opts = sorted(k for k in opts if k.startswith("ssl_"))
            if tls_opts:
                raise InvalidURL(
                    f"option {tls_opts[0]!r} needs a rediss:// URL (TLS); got {self.url}"
                )
        self.keys = _keys.KeySpace(opts.get("prefix", _keys.DEFAULT_PREFIX))
        self._caller_token = secrets.token_hex(6)
        self.connect_timeout: float = opts.get("connect_timeout", 1.5)
        self.socket_timeout: float = opts.get("socket_timeout", 5.0)
        settings: dict[str, Any] = {
            "url": self.url,
            "retries": opts.get("retries", None if "retry_for" in opts else 3),
            "connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry_for": opts.get("retry_for"),
        }
        self._client: Client
        if scheme == "redis+cluster":
            pool, seeds = self._cluster_pool(parsed)
            self.where = "Redis Cluster " + ",".join(f"{h}:{p}" for h, p in seeds)
            self._client = ClusterClient(pool, seeds, where=self.where, **settings)
        else:
            pool, self.where = self._make_pool(parsed, scheme)
            self._client = Client(pool, where=self.where, **settings)
        self._scripts = load_scripts()
        self._local = threading.local()
        self._closed = False

    def _common_kwargs(self, username: str | None, password: str | None) -> dict[str, Any]:
        opts = self._parsed.options
        return {
            "username": username,
            "password": password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "decode_responses": True,
            "retry": NO_RETRY,
            "health_check_interval": opts.get("health_check_interval", 0),
            "client_name": opts.get("client_name"),
        }

    def _sentinel_pool(self, parsed: ParsedURL) -> tuple[ConnectionPool, str]:
        """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db]``:
        the primary of SERVICE as the Sentinels name it, asked again after every lost
        connection (so a failover is followed within the retry budget)."""
        opts = parsed.options
        userinfo, _, hostlist = parsed.netloc.rpartition("@")
        username: str | None = None
        password: str | None = None
        if userinfo:
            user, colon, pw = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(pw) if colon else None
        sentinels: list[tuple[str, int]] = []
        for item in hostlist.split(","):
            host, port = host_port(item.strip(), 26379, self.url)
            sentinels.append((host, port))
        segments = [unquote(p) for p in parsed.path.split("/") if p]
        if not segments or len(segments) > 2:
            raise InvalidURL(
                "a redis+sentinel:// URL names the monitored service in its path: "
                f"redis+sentinel://host:26379/SERVICE[/db], got {self.url}"
            )
        service = segments[0]
        db = opts.get("db")
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise InvalidURL(f"the database number must be an integer in {self.url}")
            if db is not None and db != int(segments[1]):
                raise InvalidURL(f"database given twice (path and ?db=) in {self.url}")
            db = int(segments[1])
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": NO_RETRY,
            "decode_responses": True,
        }
        if "sentinel_password" in opts:
            sentinel_kwargs["password"] = opts["sentinel_password"]
            sentinel_kwargs["username"] = opts.get("sentinel_username")
        manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        kwargs = self._common_kwargs(username, password)
        kwargs["db"] = db or 0
        pool = SentinelConnectionPool(service, manager, **kwargs)  # type: ignore[no-untyped-call]
        where = f"service {service!r} via Sentinel " + ",".join(f"{h}:{p}" for h, p in sentinels)
        return pool, where

    def _cluster_pool(self, parsed: ParsedURL) -> tuple[ConnectionPool, list[tuple[str, int]]]:
        """``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]``: some nodes
        of the Cluster (the slot table is read from any of them); database 0 only."""
        userinfo, _, hostlist = parsed.netloc.rpartition("@")
        username: str | None = None
        password: str | None = None
        if userinfo:
            user, colon, pw = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(pw) if colon else None
        seeds = [host_port(item.strip(), 6379, self.url) for item in hostlist.split(",")]
        if parsed.path.strip("/") not in ("", "0") or parsed.options.get("db", 0) != 0:
            raise InvalidURL(f"Redis Cluster has only database 0; got {self.url}")
        kwargs = self._common_kwargs(username, password)
        kwargs.update(host=seeds[0][0], port=seeds[0][1], db=0)
        return ConnectionPool(**kwargs), seeds

    def _make_pool(self, parsed: ParsedURL, scheme: str) -> tuple[ConnectionPool, str]:
        if scheme == "redis+sentinel":
            return self._sentinel_pool(parsed)
        opts = parsed.options
        try:
            parts = urlsplit(parsed.url)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"cannot parse backend URL {self.url}: {exc}") from exc
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        db = opts.get("db")
        kwargs = self._common_kwargs(username, password)
        if scheme == "unix":
            path = unquote(parts.path)
            if not path or not path.startswith("/"):
                raise InvalidURL(f"unix:// URL needs an absolute socket path, got {self.url}")
            if parts.hostname:
                raise InvalidURL(
                    f"unix:// URLs name a socket path: use unix:///path/redis.sock ({self.url})"
                )
            kwargs.update(connection_class=UnixDomainSocketConnection, path=path, db=db or 0)
            where = path
        else:
            host = parts.hostname or "localhost"
            port = port or 6379
            path_db = parts.path.strip("/")
            if path_db:
                if not path_db.isdigit():
                    raise InvalidURL(
                        f"the path of a {scheme}:// URL is the database number, got "
                        f"{parts.path!r} in {self.url}"
                    )
                if db is not None and db != int(path_db):
                    raise InvalidURL(f"database given twice (path and ?db=) in {self.url}")
                db = int(path_db)
            kwargs.update(host=host, port=port, db=db or 0)
            if scheme == "rediss":
                reqs = opts.get("ssl_cert_reqs", "required")
                kwargs.update(
                    connection_class=SSLConnection,
                    ssl_cert_reqs=reqs,
                    ssl_ca_certs=opts.get("ssl_ca_certs"),
                    ssl_certfile=opts.get("ssl_certfile"),
                    ssl_keyfile=opts.get("ssl_keyfile"),
                    ssl_check_hostname=opts.get("ssl_check_hostname", reqs != "none"),
                )
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return ConnectionPool(**kwargs), where

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Disconnect every pooled connection. Idempotent; a later call reconnects."""
        self._closed = True
        self._client.close()

    def ping(self) -> None:
        """PING the server.

        Raises:
            BackendUnavailable: it cannot be reached, or the password is wrong.
        """
        self._client.command("PING")

    def _run(self, script: str, keys: list[str], args: list[str | int], policy: Policy) -> Any:
        return self._client.script(self._scripts[script], keys, args, policy)

    def _waits(self) -> dict[str, Any]:
        waits: dict[str, Any] | None = getattr(self._local, "waits", None)
        if waits is None:
            waits = self._local.waits = {}
        return waits

    def _scan(self, pattern: str) -> list[str]:
        return sorted(self._client.scan(pattern, _SCAN_COUNT))

    # ------------------------------------------------------------------ locks
    def lock_acquire(
        self,
        name: str,
        limit: int,
        holder: str,
        info: Mapping[str, JSON],
        ttl: float | None,
        *,
        waiting: bool = False,
    ) -> LockGrant | None:
        """One atomic attempt (script ``lock_acquire``); see :meth:`Backend.lock_acquire`.

        A grant that a release handed to this waiter and :meth:`lock_wait` already claimed
        is returned without a round trip. Retried safely after a lost reply: a holder that
        already holds gets its grant back.
        """
        keys = self.keys.lock(name)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        _check_id(holder, "holder id")
        waits = self._waits()
        cached = waits.get(name)
        if cached is not None and cached[0] == holder and cached[2] is not None:
            del waits[name]
            return self._grant(name, holder, cached[2])
        info_text = encode(dict(info))
        reply = self._run(
            "lock_acquire",
            keys,
            [
                limit,
                holder,
                info_text,
                -1 if ttl is None else _us(ttl),
                1 if waiting else 0,
                self._waiter_ttl_us(),
            ],
            Policy.SAFE,
        )
        if int(reply[0]) == 1:
            waits.pop(name, None)
            return self._grant(name, holder, reply[1:4])
        hint = int(reply[1])
        if waiting:
            wake_by = None if hint < 0 else time.monotonic() + hint / 1_000_000
            waits[name] = (holder, wake_by, None)
        return None

    def _waiter_ttl_us(self) -> int:
        return _us(self.WAITER_TTL)

    @staticmethod
    def _grant(name: str, holder: str, fields: Sequence[str]) -> LockGrant:
        token, acquired, expires = fields
        return LockGrant(
            name=name,
            holder=holder,
            token=int(token),
            acquired_at=_seconds(acquired),
            expires_at=None if int(expires) < 0 else _seconds(expires),
        )

    def lock_cancel_wait(self, name: str, holder: str) -> None:
        """Drop ``holder``'s waiter registration, and free a slot that a release handed to
        it meanwhile (passing it to the next waiter)."""
        keys = self.keys.lock(name)
        _check_id(holder, "holder id")
        waits = self._waits()
        if waits.get(name, (None,))[0] == holder:
            del waits[name]
        self._run("lock_cancel_wait", keys, [holder, self._waiter_ttl_us()], Policy.SAFE)

    def lock_release(self, name: str, holder: str) -> bool:
        """Free ``holder``'s slot and hand free slots to the FIFO head(s); one script.

        Raises:
            OutcomeUnknown: the reply was lost and the retry found the slot already free.
        """
        keys = self.keys.lock(name)
        _check_id(holder, "holder id")
        args: list[str | int] = [holder, self._waiter_ttl_us()]
        return bool(self._run("lock_release", keys, args, Policy.FALSE_UNKNOWN))

    def lock_renew(self, name: str, holder: str, ttl: float | None) -> float | bool | None:
        """Extend the lease to server now + ``ttl``; False if the slot is no longer held."""
        keys = self.keys.lock(name)
        _check_id(holder, "holder id")
        args: list[str | int] = [holder, -1 if ttl is None else _us(ttl), self._waiter_ttl_us()]
        reply = self._run("lock_renew", keys, args, Policy.SAFE)
        if int(reply[0]) == 0:
            return False
        return None if int(reply[1]) < 0 else _seconds(reply[1])

    def lock_owners(self, name: str) -> list[dict[str, JSON]]:
        """Live holders (lease not ended by the server clock), ordered by ``acquired_at``."""
        keys = self.keys.lock(name)
        reply = self._run("lock_owners", keys, [self._waiter_ttl_us()], Policy.SAFE)
        owners: list[dict[str, JSON]] = []
        for i in range(0, len(reply), 2):
            owners.append(self._owner(name, reply[i], reply[i + 1]))
        owners.sort(key=lambda o: (float(o["acquired_at"] or 0), int(o["token"] or 0)))  # type: ignore[arg-type]
        return owners

    def _owner(self, name: str, holder: str, record: str) -> dict[str, JSON]:
        try:
            token, acquired, expires, info_text = record.split(" ", 3)
            info = decode(info_text, where=f"lock {name!r} holder {holder}")
            if not isinstance(info, dict):
                raise ValueError("info is not an object")  # noqa: TRY004 - becomes CorruptData
            owner: dict[str, JSON] = dict(info)
            owner.update(
                holder=holder,
                token=int(token),
                acquired_at=_seconds(acquired),
                expires_at=None if int(expires) < 0 else _seconds(expires),
            )
        except ValueError as exc:
            raise CorruptData(
                f"lock {name!r} holder {holder!r} has a malformed record in Redis at "
                f"{self.where}: {exc}",
                path=self.keys.lock(name)[0],
            ) from exc
        return owner

    def lock_break(self, name: str, holder: str | None = None) -> int:
        """Free every slot of ``name`` (or only ``holder``'s) and wake its waiters; returns
        the live slots freed.

        Raises:
            OutcomeUnknown: the reply was lost (never retried after sending).
        """
        keys = self.keys.lock(name)
        args: list[str | int] = [self._waiter_ttl_us(), holder or ""]
        return int(self._run("lock_break", keys, args, Policy.NEVER))

    def locks(self) -> dict[str, list[dict[str, JSON]]]:
        """Every lock with a live holder (``SCAN`` under the prefix), mapped to its owners."""
        result: dict[str, list[dict[str, JSON]]] = {}
        for key in self._scan(self.keys.pattern(_keys.LOCK, ":h")):
            name = self.keys.name_of(key, _keys.LOCK, ":h")
            if name is None:
                continue
            try:
                owners = self.lock_owners(name)
            except InvalidName:
                continue
            if owners:
                result[name] = owners
        return dict(sorted(result.items()))

    def lock_wait(self, name: str, timeout: float, holder: str | None = None) -> None:
        """Block until a release hands waiter ``holder`` a slot, for at most ``timeout``
        seconds, also bounded by the end of the earliest lease seen by the last attempt.

        ``holder`` defaults to the waiter this thread registered last for ``name``. Releases
        give free slots straight to the waiters at the head of the FIFO and push the grant
        onto each one's list; the waiting ``BLMOVE`` claims it on the server the moment it is
        pushed, so the next :meth:`lock_acquire` returns it without another round trip.
        Without a registration this announces itself (releases push onto the generic wake-up
        list only while some caller waits there) and BLPOPs that list.
        """
        keys = self.keys.lock(name)
        if timeout <= 0:
            return
        waits = self._waits()
        registration = waits.get(name)
        wake_by = None
        if registration is not None and holder in (None, registration[0]):
            holder, wake_by = registration[0], registration[1]
        if holder is None:
            # Releases push onto the generic wake list only while someone announced a wait.
            announce = max(timeout, 0.001) + self.socket_timeout + 1.0
            self._run("lock_wait_flag", [keys[9]], [round(announce * 1000)], Policy.SAFE)
            self._client.blpop([keys[5]], timeout)
            return
        _check_id(holder, "holder id")
        if wake_by is not None:
            timeout = min(timeout, max(wake_by - time.monotonic(), 0.0) + 0.001)
        src = self.keys.waiter_wake(keys, holder)
        dst = self.keys.waiter_claim(keys, holder)
        grant = self._client.blocking(("BLMOVE", src, dst, "LEFT", "RIGHT"), timeout)
        if isinstance(grant, str) and grant.count(" ") == 2:
            waits[name] = (holder, None, grant.split(" "))

    # ------------------------------------------------------------------ counters
    def counter_add(self, name: str, delta: int, request_id: str) -> int:
        """INCRBY in one script that remembers the calling thread's last ``request_id`` and its
        result for 5 minutes, so a retry after a lost reply returns the first result instead
        of adding twice.

        Raises:
            OverflowError: the result would leave the signed 64-bit range; nothing changed.
        """
        key = self.keys.counter(name)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        _check_id(request_id, "request id")
        if abs(delta) > 2 * INT64_MAX + 1:
            raise OverflowError(f"counter {name!r}: adding {delta} leaves the signed 64-bit range")
        # One dedupe record per counter and calling thread (a thread retries only its latest
        # request), so the records stay as few as the threads, not as the increments.
        caller = self._caller()
        parts = [str(delta)] if INT64_MIN < delta <= INT64_MAX else _split_delta(delta)
        reply = self._client.script(
            self._scripts["counter_add"],
            [key, _keys.KeySpace.request_record(key, caller)],
            [REQUEST_TTL_MS, request_id, *parts],
            Policy.DEDUPED,
        )
        if int(reply[0]) == 1:
            return int(reply[1])
        error = str(reply[1])
        if "overflow" in error:
            raise OverflowError(f"counter {name!r}: adding {delta} leaves the signed 64-bit range")
        raise CorruptData(
            f"counter {name!r} in Redis at {self.where} does not hold an integer ({error})",
            path=key,
        )

    def _caller(self) -> str:
        """This backend handle, process and thread: the owner of a dedupe record."""
        return f"{self._caller_token}.{os.getpid()}.{threading.get_ident()}"

    def counter_get(self, name: str) -> int:
        """GET; 0 for a counter never written."""
        key = self.keys.counter(name)
        return self._int(key, self._client.command("GET", key))

    def _int(self, key: str, value: str | None) -> int:
        if value is None:
            return 0
        try:
            return int(value)
        except ValueError as exc:
            raise CorruptData(
                f"{key} in Redis at {self.where} does not hold an integer", path=key
            ) from exc

    def counter_set(self, name: str, value: int) -> None:
        """SET (atomic, idempotent).

        Raises:
            OverflowError: ``value`` is outside the signed 64-bit range.
        """
        key = self.keys.counter(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"counter {name!r}: {value} is outside the signed 64-bit range")
        self._client.command("SET", key, str(value))

    def counters(self) -> dict[str, int]:
        """Every counter under the prefix (``SCAN``), with its value."""
        names: list[tuple[str, str]] = []
        for key in self._scan(self.keys.pattern(_keys.COUNTER)):
            name = self.keys.name_of(key, _keys.COUNTER)
            if name is not None:
                names.append((name, key))
        values = self._client.pipeline([("GET", key) for _, key in names])
        return {
            name: self._int(key, value)
            for (name, key), value in zip(names, values, strict=True)
            if value is not None
        }

    # ------------------------------------------------------------------ state buckets
    def state_get(self, bucket: str, key: str) -> str | None:
        """HGET."""
        result: str | None = self._client.command("HGET", self.keys.state(bucket), _key(key))
        return result

    def state_set(self, bucket: str, key: str, value: str) -> None:
        """HSET (atomic, idempotent)."""
        self._client.command("HSET", self.keys.state(bucket), _key(key), _text(value))

    def state_update(self, bucket: str, items: Mapping[str, str]) -> None:
        """One HSET with every pair: all or none."""
        hkey = self.keys.state(bucket)
        flat: list[str] = []
        for key, value in items.items():
            flat += [_key(key), _text(value)]
        if flat:
            self._client.command("HSET", hkey, *flat)

    def state_delete(self, bucket: str, key: str) -> str | None:
        """HGET + HDEL in one script; returns the old text.

        Raises:
            OutcomeUnknown: the reply was lost (never retried after sending).
        """
        result: str | None = self._run(
            "state_delete", [self.keys.state(bucket)], [_key(key)], Policy.NEVER
        )
        return result

    def state_cas(self, bucket: str, key: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set in one script (``None`` expected matches absent or null,
        :data:`STATE_ABSENT` only absent, any other text only that text).

        Raises:
            OutcomeUnknown: the reply was lost and the retry did not match.
        """
        mode = 0 if expected is None else 2 if expected == STATE_ABSENT else 1
        args: list[str | int] = [
            _key(key),
            mode,
            "" if expected is None else _text(expected),
            0 if new is None else 1,
            "" if new is None else _text(new),
        ]
        return bool(self._run("state_cas", [self.keys.state(bucket)], args, Policy.FALSE_UNKNOWN))

    def state_items(self, bucket: str) -> dict[str, str]:
        """HGETALL: one consistent copy."""
        flat = self._client.command("HGETALL", self.keys.state(bucket))
        if isinstance(flat, dict):
            return dict(flat)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def state_len(self, bucket: str) -> int:
        """HLEN."""
        return int(self._client.command("HLEN", self.keys.state(bucket)))

    def state_clear(self, bucket: str) -> None:
        """DEL of the bucket's hash."""
        self._client.command("DEL", self.keys.state(bucket))

    def buckets(self) -> list[str]:
        """Buckets holding at least one key (``SCAN``), sorted."""
        names = (
            self.keys.name_of(k, _keys.STATE) for k in self._scan(self.keys.pattern(_keys.STATE))
        )
        return sorted(n for n in names if n is not None)

    # ------------------------------------------------------------------ queues
    def queue_put(
        self,
        name: str,
        msg_id: str,
        body: str,
        delay: float,
        priority: int,
        *,
        new_id: bool = False,
    ) -> bool:
        """Store the message (ready, or delayed until server now + ``delay``) in one script.

        Idempotent on ``msg_id``; a retry after a lost reply recognises its own first attempt
        by a per-call nonce and still returns True, even when a consumer took the message in
        between (the server remembers each calling thread's last put for 5 minutes). A put of
        an id that is still queued, or that is the thread's last put, returns False.

        Raises:
            OutcomeUnknown: the reply was lost and the retry budget ran out; putting the same
                id again is safe.
        """
        keys = self._put_keys(name)
        if not new_id:  # an id made by MessageQueue.put is 32 hex digits already
            check_name(msg_id, "message id")
        args: list[str | int] = [
            msg_id,
            _text(body),
            _us(delay) if delay else 0,
            _priority_rank(priority) if priority else _RANK_0,
            os.urandom(8).hex(),
            REQUEST_TTL_MS,
        ]
        return bool(self._run("queue_put", keys, args, Policy.DEDUPED))

    def _put_keys(self, name: str) -> list[str]:
        """The keys of ``queue_put.lua`` for this thread (a cached list: do not modify it).

        The last one is the calling thread's put record, so the cache is per thread and
        per process (a forked child has its own records)."""
        local = self._local
        cache: dict[str, list[str]] | None = getattr(local, "put_keys", None)
        if cache is None or local.put_keys_pid != os.getpid():
            cache = local.put_keys = {}
            local.put_keys_pid = os.getpid()
        found = cache.get(name)
        if found is None:
            k = self.keys.queue(name)
            record = _keys.KeySpace.request_record(k[0][:-2], self._caller())
            found = [k[0], k[1], k[2], k[5], k[6], record]
            if len(cache) >= _PUT_KEYS_CACHE:
                cache.clear()
            cache[name] = found
        return found

    def _take(
        self, name: str, mode: str, visibility: float, max_attempts: int, consumer: str = ""
    ) -> Delivery | None:
        keys = self.keys.queue(name)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        # A lost receive reply is harmless to retry (the lost delivery comes back after its
        # visibility timeout); a lost get reply means the message is gone: never retried.
        receipt_part = ""
        if mode == "r":
            receipt_part = os.urandom(8).hex()
            args: list[str | int] = [
                "r",
                max_attempts,
                PROMOTE_BATCH,
                _us(visibility),
                receipt_part,
                consumer,
            ]
            reply = self._run("queue_take", keys, args, Policy.SAFE)
        else:  # a get has no receipt
            reply = self._run("queue_take", keys, ["g", max_attempts, PROMOTE_BATCH], Policy.NEVER)
        if reply[0] == 0:
            hint = int(reply[1])
            self._waits()["q:" + name] = None if hint < 0 else time.monotonic() + hint / 1e6
            return None
        waits = getattr(self._local, "waits", None)
        if waits:
            waits.pop("q:" + name, None)
        # The record as it was before this delivery: the delivery adds one attempt, and a
        # receive the receipt the script wrote ("attempts.random[/consumer]").
        attempts, enqueued, _nonce, rank, _old, body = reply[1].split(" ", 5)
        n = int(attempts) + 1
        if receipt_part:
            receipt = f"{n}.{receipt_part}/{consumer}" if consumer else f"{n}.{receipt_part}"
        else:
            receipt = ""
        return Delivery(rank[32:], body, n, receipt, _priority_of(rank), int(enqueued) / 1e6)

    def queue_receive(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        consumer: str | None = None,
    ) -> Delivery | None:
        """Promote due/expired messages, then pop the first ready one into flight (one script).

        A lost reply is retried: the delivery it hid returns after its visibility timeout (or
        when ``consumer`` is released). ``consumer`` is kept in the receipt after a ``/``.
        """
        if consumer is not None:
            check_name(consumer, "consumer id")
        return self._take(name, "r", visibility_timeout, max_attempts, consumer or "")

    def queue_release(self, name: str, consumer: str, max_attempts: int) -> int:
        """Give back every message in flight under ``consumer`` in one script (it scans the
        in-flight set); see :meth:`Backend.queue_release`. After a lost reply the retry
        finds nothing left and returns 0."""
        check_name(consumer, "consumer id")
        keys = self.keys.queue(name)
        return int(self._run("queue_release", keys, [consumer, max_attempts], Policy.SAFE))

    def queue_get(self, name: str, max_attempts: int) -> Delivery | None:
        """Like :meth:`queue_receive` but deletes the message in the same script.

        Raises:
            OutcomeUnknown: the reply was lost; the message may have been taken.
        """
        return self._take(name, "g", 0.0, max_attempts)

    def queue_ack(self, name: str, msg_id: str, receipt: str) -> bool:
        """Delete the in-flight message if ``receipt`` is current (one script).

        Raises:
            OutcomeUnknown: the reply was lost and the retry found the message gone.
        """
        keys = self.keys.queue(name)
        if not receipt or receipt == "-" or " " in receipt:
            return False
        return bool(self._run("queue_ack", keys, [msg_id, receipt], Policy.FALSE_UNKNOWN))

    def queue_nack(
        self, name: str, msg_id: str, receipt: str, delay: float, max_attempts: int
    ) -> bool:
        """Return the in-flight message (ready, delayed or dead) if ``receipt`` is current.

        Raises:
            OutcomeUnknown: the reply was lost and the retry found the message gone.
        """
        keys = self.keys.queue(name)
        if not receipt or receipt == "-" or " " in receipt:
            return False
        args: list[str | int] = [msg_id, receipt, _us(delay), max_attempts]
        return bool(self._run("queue_nack", keys, args, Policy.FALSE_UNKNOWN))

    def queue_stats(self, name: str) -> dict[str, int]:
        """Counts by the server clock (due delayed messages count as ready)."""
        reply = self._run("queue_stats", self.keys.queue(name), [], Policy.SAFE)
        return {
            "ready": int(reply[0]),
            "delayed": int(reply[1]),
            "in_flight": int(reply[2]),
            "dead": int(reply[3]),
        }

    def queue_dead(self, name: str) -> list[Delivery]:
        """Dead messages, oldest death first (``receipt`` empty)."""
        reply = self._run("queue_dead", self.keys.queue(name)[:5], [], Policy.SAFE)
        dead: list[Delivery] = []
        for i in range(0, len(reply), 3):
            msg_id, body, meta = reply[i], reply[i + 1], reply[i + 2]
            try:
                attempts, enqueued, _nonce, rank, _receipt = meta.split(" ")
                dead.append(
                    Delivery(
                        id=msg_id,
                        body=body,
                        attempts=int(attempts),
                        receipt="",
                        priority=_priority_of(rank),
                        enqueued_at=_seconds(enqueued),
                    )
                )
            except ValueError as exc:
                raise CorruptData(
                    f"queue {name!r} message {msg_id!r} has malformed metadata in Redis at "
                    f"{self.where}",
                    path=self.keys.queue(name)[0],
                ) from exc
        return dead

    def queue_requeue_dead(self, name: str) -> int:
        """Dead → ready with attempts 0, in one script; returns the count.

        Raises:
            OutcomeUnknown: the reply was lost (never retried after sending).
        """
        return int(self._run("queue_requeue_dead", self.keys.queue(name), [], Policy.NEVER))

    def queue_purge(self, name: str, dead: bool) -> int:
        """Remove ready and delayed (and dead) messages in one script; returns the count.

        Raises:
            OutcomeUnknown: the reply was lost (never retried after sending).
        """
        keys = self.keys.queue(name)
        return int(self._run("queue_purge", keys, [1 if dead else 0], Policy.NEVER))

    def queue_wait(self, name: str, timeout: float) -> None:
        """BLPOP the queue's wake list, bounded by ``timeout`` and by the moment the next
        delayed message is due or the next visibility timeout ends."""
        keys = self.keys.queue(name)
        if timeout <= 0:
            return
        waits = self._waits()
        slot = "q:" + name
        if slot in waits:
            wake_by = waits.pop(slot)
        else:
            reply = self._run("queue_stats", keys, [], Policy.SAFE)
            if int(reply[0]) > 0:
                return
            hint = int(reply[4])
            wake_by = None if hint < 0 else time.monotonic() + hint / 1_000_000
        precise = False
        if wake_by is not None:
            due_in = max(wake_by - time.monotonic(), 0.0) + 0.001
            precise = due_in <= timeout
            timeout = min(timeout, due_in)
        self._client.blpop([keys[6]], timeout, precise=precise)

    def queues(self) -> list[str]:
        """Queues holding any message (their metadata hash exists), sorted."""
        pattern = self.keys.pattern(_keys.QUEUE, ":m")
        names = (self.keys.name_of(k, _keys.QUEUE, ":m") for k in self._scan(pattern))
        return sorted(n for n in names if n is not None)

    # ------------------------------------------------------------------ membership
    def member_heartbeat(
        self, group: str, member: str, info: Mapping[str, JSON], ttl: float
    ) -> None:
        """ZADD member → server now + ``ttl`` and HSET its info, in one script."""
        _check_id(member, "member id")
        args: list[str | int] = [member, encode(dict(info)), _us(ttl)]
        self._run("member_heartbeat", self.keys.group(group), args, Policy.SAFE)

    def member_leave(self, group: str, member: str) -> bool:
        """Remove ``member``; False if it was not a live member.

        Raises:
            OutcomeUnknown: the reply was lost and the retry found it gone.
        """
        _check_id(member, "member id")
        return bool(
            self._run("member_leave", self.keys.group(group), [member], Policy.FALSE_UNKNOWN)
        )

    def members(self, group: str) -> dict[str, dict[str, JSON]]:
        """Live members (expiry after server now) with their info records."""
        reply = self._run("members", self.keys.group(group), [], Policy.SAFE)
        out: dict[str, dict[str, JSON]] = {}
        for i in range(0, len(reply), 2):
            info = decode(reply[i + 1], where=f"group {group!r} member {reply[i]}")
            out[reply[i]] = dict(info) if isinstance(info, dict) else {"info": info}
        return out


def _check_id(value: object, what: str) -> str:
    """Ids stored as hash fields or key suffixes: non-empty str without whitespace."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValueError(f"{what} must be a non-empty str of at most 200 characters")
    # str.split() cuts at exactly the characters str.isspace() accepts.
    if value.split() != [value]:
        raise ValueError(f"{what} {value!r} must not contain whitespace")
    return value


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"state keys must be str, not {type(key).__name__}")
    return key


def _text(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"values cross the backend interface as JSON text, not {type(value)}")
    return value


__all__ = ["RedisBackend"]
