"""The central log store: one Redis stream per track, reached through the backend URL.

Key layout (``prefix`` is the URL's ``?prefix=``, default ``unidist:``; the hash tag keeps
every key of one track in one Redis Cluster slot)::

    unidist:{log:backup}:s              the stream; entry fields id, r (see below)
    unidist:{log:backup}:o:<host>:<fp>  shipped-up-to offset of one file of one host
    unidist:log:tracks                  set of track names that have a stream

A stream entry holds consecutive records of one file: ``r`` is their JSON lines joined by
``\n`` (about 16 KiB, or one longer line), ``id`` the record id of the first. A record's id is
``<host>/<fingerprint>/<offset>``, its byte offset in the file, so the ids of the others
follow from the line lengths (empty lines are no records). Entries of older shippers, one
record each, read the same way. :meth:`RedisStore.read` and the other readers return one
tuple per record. Packing records costs Redis one ``XADD`` per entry instead of one per
record, which is most of the store's cost per record.

Deduplication: the file identity in the record id is the content fingerprint, so the copy
``copytruncate`` makes keeps its records' ids. One host ships one file in offset order, so
the store keeps, per (host, file), the offset up to which it holds everything;
:meth:`RedisStore.append` is one static Lua script that skips records below that offset and
adds the rest together with the new offset. A batch is therefore stored completely or not at
all, and a batch re-sent after a shipper crash adds nothing twice.

Streams are capped after each batch with ``XTRIM MAXLEN ~`` at the entry count that holds
about ``maxlen`` records (default 1,000,000 records per track, at the batch's records per
entry; a stream can exceed it by one batch until then) and, when ``max_age`` is given,
``XTRIM MINID ~`` (entries older than that many seconds).
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
ENTRY_BYTES: Final = 16 << 10
"""Records are packed into stream entries of about this many bytes (one longer line alone)."""
APPEND_LUA: Final = """
-- KEYS[1] the track's stream, KEYS[2] the (host, file) shipped-up-to offset.
-- ARGV: maxlen (records), record id prefix, offset ttl (s), min stream id to keep ('' = no
-- age cap), offset of the chunk in its file, number of lines in the chunk, then the chunk
-- as slices: complete lines joined by newlines, each slice without its last newline.
-- Returns the position in the chunk from which lines were added, -1 if none.
local call, find, sub, format = redis.call, string.find, string.sub, string.format
local stream, prefix = KEYS[1], ARGV[2]
local done = tonumber(call('GET', KEYS[2]) or '0')
local base = tonumber(ARGV[5])
local start = base
local first = -1
local entries = 0
for i = 7, #ARGV do
  local s = ARGV[i]
  local stop = start + #s + 1
  if stop > done then
    if start < done then
      -- a re-sent batch: drop the lines that start below the stored offset
      local p = find(s, '\\n', done - start, true)
      if p then
        s, start = sub(s, p + 1), start + p
      else
        s = ''
      end
    end
    if first < 0 then
      first = start - base
    end
    if #s > 0 then
      call('XADD', stream, '*', 'id', prefix .. format('%d', start), 'r', s)
      entries = entries + 1
    end
  end
  start = stop
end
if start > done then
  call('SET', KEYS[2], format('%d', start), 'EX', ARGV[3])
end
if entries > 0 then
  local cap = tonumber(ARGV[1])
  local lines = tonumber(ARGV[6])
  if lines > #ARGV - 6 then
    cap = math.ceil(cap * (#ARGV - 6) / lines)
  end
  call('XTRIM', stream, 'MAXLEN', '~', cap)
  if ARGV[4] ~= '' then
    call('XTRIM', stream, 'MINID', '~', ARGV[4])
  end
end
return first
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
    def append(
        self, track: str, host: str, fp: str, offset: int, chunk: bytes, lines: int | None = None
    ) -> int:
        """Store the lines of ``chunk`` (read at ``offset`` of file ``fp`` of ``host``), skipping
        those already stored; return how many were added.

        ``chunk`` holds complete lines, each ending in ``\\n`` (``lines`` of them, counted
        here when not given). Durable as Redis is (see the Redis backend's notes on
        persistence).

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached (nothing or everything of the
                chunk was stored; a retry is safe).
        """
        check_name(track, "track name")
        if not chunk:
            return 0
        if lines is None:
            lines = chunk.count(b"\n")
        minid = "" if self.max_age is None else int((time.time() - self.max_age) * 1000)
        args: list[str | int | bytes] = [
            self.maxlen,
            f"{host}/{fp}/",
            OFFSET_TTL,
            minid,
            offset,
            lines,
            *_slices(chunk),
        ]
        keys = [stream_key(self.prefix, track), f"{self.prefix}{{log:{track}}}:o:{host}:{fp}"]
        try:
            if track not in self._known_tracks:
                self.redis.sadd(self.tracks_key, track)
                self._known_tracks.add(track)
            first = int(self._append(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        if first < 0:
            return 0
        return lines if first == 0 else chunk.count(b"\n", first)

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
        """The records of up to ``count`` entries of ``track`` after stream id ``after``
        (exclusive), oldest first: ``(stream id, record id, JSON line)``. Records packed in
        one entry share its stream id, so a page ends at an entry boundary and the last
        stream id is the cursor for the next page.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        start = "-" if after == "-" else f"({after}"
        try:
            entries = self.redis.xrange(stream_key(self.prefix, track), start, "+", count=count)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        return [rec for e in entries for rec in _records(e)]

    def read_reverse(
        self, track: str, before: str = "+", count: int = 1000
    ) -> list[tuple[str, bytes, bytes]]:
        """The records of up to ``count`` entries of ``track`` before stream id ``before``
        (exclusive), newest first.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        end = "+" if before == "+" else f"({before}"
        try:
            entries = self.redis.xrevrange(stream_key(self.prefix, track), end, "-", count=count)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from exc
        return [rec for e in entries for rec in reversed(_records(e))]

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
                out += [(by_key[name], sid, line) for sid, _, line in _records(entry)]
        return out

    def last_id(self, track: str) -> str:
        """The stream id of the newest entry of ``track``, or ``0-0``.

        Raises:
            unidist.BackendUnavailable: Redis cannot be reached.
        """
        newest = self.read_reverse(track, count=1)
        return newest[0][0] if newest else "0-0"


def _slices(chunk: bytes) -> list[bytes]:
    """``chunk`` (complete lines) cut after a newline about every :data:`ENTRY_BYTES`, each
    piece without its last newline: the ``r`` values of the stream entries."""
    out: list[bytes] = []
    pos, last = 0, len(chunk) - 1
    while pos <= last:
        cut = chunk.find(b"\n", pos + ENTRY_BYTES - 1)
        if cut < 0:
            cut = last
        out.append(chunk[pos:cut])
        pos = cut + 1
    return out


def _records(entry: Any) -> list[tuple[str, bytes, bytes]]:
    """The records of one stream entry: ``(stream id, record id, JSON line)``."""
    sid, fields = entry
    sid_text = sid.decode() if isinstance(sid, bytes) else str(sid)
    rid, raw = bytes(fields.get(b"id", b"")), bytes(fields.get(b"r", b""))
    if b"\n" not in raw:
        return [(sid_text, rid, raw)]
    prefix, _, first = rid.rpartition(b"/")
    try:
        offset = int(first)
    except ValueError:  # not written by this module: keep its id on every line
        return [(sid_text, rid, line) for line in raw.split(b"\n") if line]
    out = []
    for line in raw.split(b"\n"):
        if line:
            out.append((sid_text, b"%s/%d" % (prefix, offset), line))
        offset += len(line) + 1
    return out
