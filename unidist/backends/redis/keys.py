"""Redis key layout: one prefix, one hash tag per object.

Every key of one object shares the hash tag ``{<kind>:<name>}`` so that a Lua script touching
several keys of that object stays in one Redis Cluster slot::

    unidist:{l:backup}:h        lock holders (hash holder -> "token acquired_us expires_us info")
    unidist:{l:backup}:e        lock lease ends (zset holder -> expiry µs, +inf without ttl)
    unidist:{l:backup}:w        FIFO waiters (zset holder -> registration sequence)
    unidist:{l:backup}:we       waiter registration ends (zset holder -> expiry µs)
    unidist:{l:backup}:m        lock meta (hash: token = last fencing token, wseq, limit)
    unidist:{l:backup}:wi       waiter registrations (hash holder -> "ttl_us info")
    unidist:{l:backup}:p        provisional (handed-off, not yet claimed) grants: holder -> ttl
    unidist:{l:backup}:n        wake-up list for lock_wait callers without a registration
    unidist:{l:backup}:n:<h>    grant handed to waiter <h> (its BLMOVE source)
    unidist:{l:backup}:k:<h>    claim of waiter <h> (its BLMOVE destination)
    unidist:{l:backup}:g        exists while a lock_wait without a registration waits (releases
                                push onto :n only then)
    unidist:{c:jobs}            counter value (string)
    unidist:{c:jobs}:r:<caller> last request id and result of one calling thread (dedupe of
                                a retried counter_add, 5 min)
    unidist:{s:config}          state bucket (hash key -> JSON text)
    unidist:{q:work}:m          messages (hash id -> "attempts enqueued_us nonce rank receipt
                                body", the JSON body after the fifth space)
    unidist:{q:work}:r          ready (zset, scores 0, member = prio(16 hex) seq(16 hex) id)
    unidist:{q:work}:d          delayed (zset id -> due µs)
    unidist:{q:work}:f          in flight (zset id -> visibility deadline µs)
    unidist:{q:work}:x          dead (zset id -> time of death µs)
    unidist:{q:work}:s          put sequence (string, INCR)
    unidist:{q:work}:r:<caller> "id nonce" of one calling thread's last put (dedupe of a
                                retried put whose message was already consumed, 5 min)
    unidist:{q:work}:n          wake-up list for queue_wait
    unidist:{g:workers}:e       members (zset member -> expiry µs)
    unidist:{g:workers}:i       member infos (hash member -> JSON text)

Names are checked with :func:`unidist._names.check_name` (letters, digits, ``._-:@``), so they
can contain neither braces (which would move the hash tag) nor glob characters (which would
widen a ``SCAN`` pattern), and a key can never leave the prefix.
"""

from __future__ import annotations

from typing import Final

from unidist._names import check_name
from unidist.errors import InvalidURL

DEFAULT_PREFIX: Final = "unidist:"
MAX_PREFIX_LENGTH: Final = 100
_FORBIDDEN_IN_PREFIX: Final = frozenset("{}*?[]\\ \t\r\n\x00")

LOCK: Final = "l"
COUNTER: Final = "c"
STATE: Final = "s"
QUEUE: Final = "q"
GROUP: Final = "g"

LOCK_SUFFIXES: Final = ("h", "e", "w", "we", "m", "n", "wi", "p", "k", "g")
QUEUE_SUFFIXES: Final = ("m", "r", "d", "f", "x", "s", "n")
GROUP_SUFFIXES: Final = ("e", "i")
_LOCK_CACHE_SIZE: Final = 1024
"""Lock names whose keys :meth:`KeySpace.lock` keeps (the hot path builds them once)."""


def check_prefix(prefix: str) -> str:
    """Validate a key prefix (the ``?prefix=`` option).

    Raises:
        ValueError: empty, too long, or holding a brace, glob character, whitespace or NUL.
    """
    if not prefix:
        raise ValueError("prefix must not be empty")
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ValueError(f"prefix is longer than {MAX_PREFIX_LENGTH} characters")
    bad = sorted(set(prefix) & _FORBIDDEN_IN_PREFIX)
    if bad:
        raise ValueError(
            f"prefix {prefix!r} contains {bad[0]!r}; braces, glob characters and whitespace "
            "are not allowed"
        )
    return prefix


class KeySpace:
    """Builds and parses the keys of one backend (one prefix)."""

    __slots__ = ("_locks", "_queues", "_singles", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        try:
            self.prefix = check_prefix(prefix)
        except ValueError as exc:
            raise InvalidURL(str(exc)) from exc
        self._locks: dict[str, list[str]] = {}
        self._queues: dict[str, list[str]] = {}
        self._singles: dict[tuple[str, str], str] = {}

    def tag(self, kind: str, name: str, what: str = "name") -> str:
        """``<prefix>{<kind>:<name>}``: the base key of one object (checks ``name``)."""
        check_name(name, what)
        return f"{self.prefix}{{{kind}:{name}}}"

    def lock(self, name: str) -> list[str]:
        """The lock keys in :data:`LOCK_SUFFIXES` order (a cached list: do not modify it)."""
        found = self._locks.get(name) if isinstance(name, str) else None
        if found is None:
            base = self.tag(LOCK, name, "lock name")
            found = [f"{base}:{suffix}" for suffix in LOCK_SUFFIXES]
            if len(self._locks) >= _LOCK_CACHE_SIZE:
                self._locks.clear()
            self._locks[name] = found
        return found

    @staticmethod
    def waiter_wake(lock_keys: list[str], holder: str) -> str:
        """The list a grant is handed to waiter ``holder`` on (same hash tag as the lock)."""
        return f"{lock_keys[5]}:{holder}"

    @staticmethod
    def waiter_claim(lock_keys: list[str], holder: str) -> str:
        """Where waiter ``holder``'s BLMOVE moves its grant: the server-side claim."""
        return f"{lock_keys[8]}:{holder}"

    def counter(self, name: str) -> str:
        return self._single(COUNTER, name, "counter name")

    def _single(self, kind: str, name: str, what: str) -> str:
        """The one key of a counter or bucket, cached (the name is checked once)."""
        found = self._singles.get((kind, name)) if isinstance(name, str) else None
        if found is None:
            found = self.tag(kind, name, what)
            if len(self._singles) >= _LOCK_CACHE_SIZE:
                self._singles.clear()
            self._singles[(kind, name)] = found
        return found

    def counter_request(self, name: str, caller: str) -> str:
        return self.request_record(self.counter(name), caller)

    @staticmethod
    def request_record(counter_key: str, caller: str) -> str:
        """The dedupe record of ``caller`` for the counter stored at ``counter_key``."""
        return f"{counter_key}:r:{caller}"

    def state(self, bucket: str) -> str:
        return self._single(STATE, bucket, "bucket name")

    def queue(self, name: str) -> list[str]:
        """The queue keys in :data:`QUEUE_SUFFIXES` order (a cached list: do not modify it)."""
        found = self._queues.get(name) if isinstance(name, str) else None
        if found is None:
            base = self.tag(QUEUE, name, "queue name")
            found = [f"{base}:{suffix}" for suffix in QUEUE_SUFFIXES]
            if len(self._queues) >= _LOCK_CACHE_SIZE:
                self._queues.clear()
            self._queues[name] = found
        return found

    def group(self, name: str) -> list[str]:
        """The membership keys in :data:`GROUP_SUFFIXES` order."""
        base = self.tag(GROUP, name, "group name")
        return [f"{base}:{suffix}" for suffix in GROUP_SUFFIXES]

    # ------------------------------------------------------------------ listing
    def pattern(self, kind: str, suffix: str = "") -> str:
        """``SCAN`` pattern matching the base keys (plus ``suffix``) of every object of ``kind``.

        The prefix holds no glob characters (see :func:`check_prefix`), so it is literal.
        """
        return f"{self.prefix}{{{kind}:*}}{suffix}"

    def name_of(self, key: str, kind: str, suffix: str = "") -> str | None:
        """The object name in ``key`` if ``key`` is exactly ``<prefix>{<kind>:NAME}<suffix>``."""
        head = f"{self.prefix}{{{kind}:"
        tail = f"}}{suffix}"
        if not (key.startswith(head) and key.endswith(tail)):
            return None
        name = key[len(head) : len(key) - len(tail)]
        if not name or "}" in name or "{" in name:
            return None
        return name


def hash_slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (CRC16/XMODEM of the hash tag, mod 16384)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end != -1 and end != start + 1:
            raw = raw[start + 1 : end]
    crc = 0
    for byte in raw:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc % 16384
