"""The central log store: one Redis stream per track, reached through the backend URL.

Key layout (``prefix`` is the URL's ``?prefix=``, default ``unidist:``; the hash tag keeps
every key of one track in one Redis Cluster slot)::

    unidist:{log:backup}:s              the stream; entry fields id (record id), r (JSON line)
    unidist:{log:backup}:o:<host>:<fp>  shipped-up-to offset of one file of one host
    unidist:log:tracks                  set of track names that have a stream

Deduplication: a record's id is ``<host>/<fingerprint>/<offset>`` (the file identity is the
content fingerprint, so the copy ``copytruncate`` makes keeps its records' ids). One host
ships one file in offset order, so the store keeps, per (host, file), the offset up to which
it holds everything; :meth:`RedisStore.append` is one static Lua script that skips records
below that offset and adds the rest together with the new offset. A batch is therefore
stored completely or not at all, and a batch re-sent after a shipper crash adds nothing
twice.

Streams are capped after each batch with ``XTRIM MAXLEN ~ <maxlen>`` (default 1,000,000
entries per track; a stream can exceed it by one batch until then) and, when ``max_age`` is
given, ``XTRIM MINID ~`` (entries older than that many seconds).

Cost: the script runs one ``XADD`` per record inside Redis. On Redis 7 most of its time goes
to ``XADD`` itself and to Lua creating (hashing and interning) a string for each line; the
shipper's own share is small (see ``benchmarks/bench_log.py``, which prints both).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

from unidist._names import check_name
from unidist.backends._url import redact
from unidist.errors import BackendUnavailable, InvalidURL

DEFAULT_PREFIX: Final = "unidist:"
DEFAULT_MAXLEN: Final = 1_000_000
OFFSET_TTL: Final = 90 * 86400
"""Seconds a (host, file) shipped-up-to offset is kept after its last batch."""
APPEND_LUA: Final = """
-- KEYS[1] the track's stream, KEYS[2] the (host, file) shipped-up-to offset.
-- ARGV: maxlen, record id prefix, offset ttl (s), min stream id to keep ('' = no age cap),
-- offset of the chunk in its file, the chunk (complete lines, each ending in a newline).
local call, find, sub, format = redis.call, string.find, string.sub, string.format
local stream, prefix = KEYS[1], ARGV[2]
local done = tonumber(call('GET', KEYS[2]) or '0')
local base = tonumber(ARGV[5])
local blob = ARGV[6]
local size = #blob
if base + size <= done then
  return 0
end
local pos = 1
if done > base then
  -- a re-sent batch: skip the lines that start below the stored offset
  pos = (find(blob, '\\n', done - base, true) or size) + 1
end
local added = 0
while pos <= size do
  local nl = find(blob, '\\n', pos, true) or (size + 1)
  if nl > pos then
    call('XADD', stream, '*', 'id', prefix .. format('%d', base + pos - 1),
         'r', sub(blob, pos, nl - 1))
    added = added + 1
  end
  pos = nl + 1
end
call('SET', KEYS[2], format('%d', base + size), 'EX', ARGV[3])
call('XTRIM', stream, 'MAXLEN', '~', ARGV[1])
if ARGV[4] ~= '' then
  call('XTRIM', stream, 'MINID', '~', ARGV[4])
end
return added
"""
"""Static script (never built from data): dedupe and append one batch atomically. Kept here
rather than in ``backends/redis/scripts/`` because the log store is not a Backend method."""
_PREFIX_FORBIDDEN: Final = frozenset("{}*?[]\\ \t\r\n\x00")


@dataclass(frozen=True)
class StoreURL:
    """A Redis URL split into the part redis-py takes and the key prefix."""

    redis_url: str
    prefix: str
    redacted: str


def parse_store_url(url: str) -> StoreURL:
    """Split ``redis://…?prefix=…`` (also ``rediss://``, ``unix://``).

    Raises:
        InvalidURL: not a Redis URL, or a prefix with braces, glob characters or whitespace.
    """
    safe = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise InvalidURL(
            f"the central log store is Redis: expected redis://, rediss:// or unix://, got {safe}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        elif key in {"connect_timeout", "socket_timeout"}:
            rest.append(("socket_connect_timeout" if key == "connect_timeout" else key, value))
        elif key in {"db", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile",
                     "ssl_keyfile", "ssl_check_hostname", "health_check_interval"}:  # fmt: skip
            rest.append((key, value))
        # other backend options (retries, max_connections...) do not concern the log store
    if not prefix or len(prefix) > 100 or _PREFIX_FORBIDDEN & set(prefix):
        raise InvalidURL(f"invalid prefix {prefix!r} in {safe}")
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return StoreURL(clean, prefix, safe)


def stream_key(prefix: str, track: str) -> str:
    """The stream of ``track``."""
    return f"{prefix}{{log:{track}}}:s"


class RedisStore:
    """The central store (see the module docstring).

    Args:
        url: ``redis://host:port/db?prefix=…``.
        maxlen: approximate cap of each track's stream.
        max_age: trim entries older than this many seconds (None: length cap only).

    Raises:
        InvalidURL: a bad URL.
    """

    def __init__(
        self, url: str, maxlen: int = DEFAULT_MAXLEN, max_age: float | None = None
    ) -> None:
        parsed = parse_store_url(url)
        self.url = parsed.redacted
        self.prefix = parsed.prefix
        self.maxlen = maxlen
        self.max_age = max_age
        kwargs: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 2.0}
        # redis-py's stubs are looser than its runtime; typed as Any at this edge.
        self.redis: Any = redis.Redis.from_url(parsed.redis_url, **kwargs)
        self.tracks_key = f"{self.prefix}log:tracks"
        self._append = self.redis.register_script(APPEND_LUA)
        self._known_tracks: set[str] = set()

    def close(self) -> None:
        """Close the connection pool."""
        self.redis.close()

    def unavailable(self, exc: BaseException) -> BackendUnavailable:
        """The error to raise for a Redis failure (names the redacted URL)."""
        return BackendUnavailable(f"log store {self.url} unavailable: {exc}", url=self.url)

    # ------------------------------------------------------------------ writing
    def append(self, track: str, host: str, fp: str, offset: int, chunk: bytes) -> int:
        """Store the lines of ``chunk`` (read at ``offset`` of file ``fp`` of ``host``), skipping
        those already stored; return how many were added.

        ``chunk`` holds complete lines, each ending in ``\\n``. Durable as Redis is (see the
        Redis backend's notes on persistence).

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached (nothing or everything of the
                chunk was stored; a retry is safe).
        """
        check_name(track, "track name")
        if not chunk:
            return 0
        minid = "" if self.max_age is None else int((time.time() - self.max_age) * 1000)
        args: list[str | int | bytes] = [
            self.maxlen,
            f"{host}/{fp}/",
            OFFSET_TTL,
            minid,
            offset,
            chunk,
        ]
        keys = [stream_key(self.prefix, track), f"{self.prefix}{{log:{track}}}:o:{host}:{fp}"]
        try:
            if track not in self._known_tracks:
                self.redis.sadd(self.tracks_key, track)
                self._known_tracks.add(track)
            return int(self._append(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc

    # ------------------------------------------------------------------ reading
    def tracks(self) -> list[str]:
        """Names of the tracks that have a stream.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        try:
            members = self.redis.smembers(self.tracks_key)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def read(
        self, track: str, after: str = "-", count: int = 1000
    ) -> list[tuple[str, bytes, bytes]]:
        """Up to ``count`` entries of ``track`` after stream id ``after`` (exclusive):
        ``(stream id, record id, JSON line)``.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        start = "-" if after == "-" else f"({after}"
        try:
            entries = self.redis.xrange(stream_key(self.prefix, track), start, "+", count=count)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        return [_entry(e) for e in entries]

    def read_reverse(
        self, track: str, before: str = "+", count: int = 1000
    ) -> list[tuple[str, bytes, bytes]]:
        """Up to ``count`` entries of ``track`` before stream id ``before`` (exclusive), newest
        first.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        end = "+" if before == "+" else f"({before}"
        try:
            entries = self.redis.xrevrange(stream_key(self.prefix, track), end, "-", count=count)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        return [_entry(e) for e in entries]

    def wait(self, cursors: dict[str, str], timeout: float) -> list[tuple[str, str, bytes]]:
        """Block up to ``timeout`` s for entries after ``cursors`` (track → stream id):
        ``(track, stream id, JSON line)`` in arrival order per track.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        if not cursors:
            time.sleep(timeout)
            return []
        streams = {stream_key(self.prefix, t): c for t, c in cursors.items()}
        by_key = {stream_key(self.prefix, t): t for t in cursors}
        try:
            reply = self.redis.xread(streams, block=max(1, int(timeout * 1000)), count=1000)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        out: list[tuple[str, str, bytes]] = []
        for key, entries in reply or []:
            name = key.decode() if isinstance(key, bytes) else str(key)
            for entry in entries:
                sid, _, line = _entry(entry)
                out.append((by_key[name], sid, line))
        return out

    def last_id(self, track: str) -> str:
        """The stream id of the newest entry of ``track``, or ``0-0``.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        newest = self.read_reverse(track, count=1)
        return newest[0][0] if newest else "0-0"


def _entry(entry: Any) -> tuple[str, bytes, bytes]:
    sid, fields = entry
    sid_text = sid.decode() if isinstance(sid, bytes) else str(sid)
    return sid_text, bytes(fields.get(b"id", b"")), bytes(fields.get(b"r", b""))
