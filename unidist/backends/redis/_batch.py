"""Queue batches on Redis: a whole ``put_many`` or ``get_many``/``receive_many`` is one script.

Mixed into :class:`~unidist.backends.redis.backend.RedisBackend` ahead of
:class:`~unidist.backends.base.Backend`, whose defaults loop over the single-message methods.
Here a batch is one ``EVALSHA`` of ``scripts/queue_put_many.lua`` or
``scripts/queue_take_many.lua``: one round trip, and every other client sees the batch
completely or not at all. All keys of one queue share a hash tag, so the script touches one
Redis Cluster slot. While it runs the server serves no one else: a batch of 10,000 messages
of 100 bytes holds it for a few milliseconds.

Retries follow the module docs of :mod:`unidist.backends.redis.backend`: a put batch carries a
nonce that the server remembers (with the answer) in the calling thread's put record for 5
minutes, so a retry after a lost reply returns the first attempt's answer and stores nothing
twice (``OutcomeUnknown`` when the retry budget runs out); a get batch is never retried after
sending (``OutcomeUnknown``: the messages may have been taken); a lost receive batch is
retried (what it hid comes back after the visibility timeout).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from unidist._names import check_name
from unidist.backends.base import Delivery
from unidist.backends.redis import keys as _keys
from unidist.backends.redis._client import Client, Policy, Script

if TYPE_CHECKING:
    from unidist.backends.redis.keys import KeySpace

__all__ = ["RedisBatchMixin"]

_INT64_MAX: Final = 2**63 - 1
_INT64_MIN: Final = -(2**63)
_RECORD_TTL_MS: Final = 300_000
"""How long the server remembers a thread's last put batch (as ``queue_put``'s record)."""
_PROMOTE_BATCH: Final = 1000
"""Due delayed / expired in-flight messages moved per take (at least the batch size)."""

_HEX_IDS: Final = re.compile(r"[0-9a-f]*")

PUT_MANY: Final = Script.load("queue_put_many")
TAKE_MANY: Final = Script.load("queue_take_many")


def _rank(priority: int) -> str:
    """As ``backend._priority_rank``: 16 hex digits sorting ascending as priority descends."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not _INT64_MIN <= priority <= _INT64_MAX:
        raise ValueError(f"priority {priority} is outside the signed 64-bit range")
    return f"{_INT64_MAX - priority:016x}"


def _us(delay: float) -> int:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
    return max(0, round(delay * 1_000_000))


class RedisBatchMixin:
    """``queue_put_many``, ``queue_get_many`` and ``queue_receive_many`` as one script each."""

    if TYPE_CHECKING:
        keys: KeySpace
        _client: Client

        def _caller(self) -> str: ...

        def _waits(self) -> dict[str, Any]: ...

    def queue_put_many(
        self,
        name: str,
        items: Sequence[tuple[str, str, float, int]],
        *,
        new_ids: bool = False,
    ) -> list[bool]:
        """Store every message in one script call: all of them, or none if it fails.

        See :meth:`Backend.queue_put_many`. Every item is checked before anything is sent.
        Idempotent on each id; a retry after a lost reply recognises the batch by its nonce
        and returns the first attempt's answer.

        Raises:
            OutcomeUnknown: the reply was lost and the retry budget ran out; putting the same
                ids again is safe.
        """
        keys = self.keys.queue(name)
        args: list[str | int] = [secrets.token_hex(8), _RECORD_TTL_MS, "1"]
        # A batch usually has one delay and one priority: convert each distinct one once.
        delays: dict[float, int] = {}
        ranks: dict[int, str] = {}
        # Ids the caller just generated (UUID4 hex) are checked all at once.
        fresh = new_ids and _HEX_IDS.fullmatch("".join([item[0] for item in items])) is not None
        for msg_id, body, delay, priority in items:
            if not fresh or len(msg_id) != 32:
                check_name(msg_id, "message id", cache=False)
            if not isinstance(body, str):
                raise TypeError(
                    f"values cross the backend interface as JSON text, not {type(body)}"
                )
            us = delays.get(delay)
            if us is None:
                us = delays[delay] = _us(delay)
            rank = ranks.get(priority)
            if rank is None:
                rank = ranks[priority] = _rank(priority)
            args += (msg_id, body, us, rank)
        if len(args) == 3:
            return []
        if fresh:
            args[2] = "0"  # no duplicate check: random ids cannot be queued yet
        record = _keys.KeySpace.request_record(keys[0][:-2], self._caller())
        reply = self._client.script(PUT_MANY, [*keys, record], args, Policy.DEDUPED)
        return [c == "1" for c in str(reply)]

    def _take_many(
        self, name: str, mode: str, visibility: float, max_attempts: int, max_n: int, consumer: str
    ) -> list[Delivery]:
        keys = self.keys.queue(name)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
            raise ValueError(f"max_n must be an int >= 1, got {max_n!r}")
        # As queue_take: a lost receive is harmless to retry, a lost get is never retried.
        if mode == "r":
            policy, receipt_part = Policy.SAFE, secrets.token_hex(8)
        else:
            policy, receipt_part = Policy.NEVER, ""
        args: list[str | int] = [
            mode,
            _us(visibility),
            max_attempts,
            receipt_part,
            max(_PROMOTE_BATCH, max_n),
            consumer,
            max_n,
        ]
        reply = self._client.script(TAKE_MANY, keys, args, policy)
        waits = self._waits()
        if int(reply[0]) == 0:
            hint = int(reply[1])
            waits["q:" + name] = None if hint < 0 else time.monotonic() + hint / 1_000_000
            return []
        waits.pop("q:" + name, None)
        # The records as they were: the delivery adds one attempt, and a receive the
        # receipt the script wrote ("attempts.random[/consumer]").
        suffix = f"{receipt_part}/{consumer}" if consumer else receipt_part
        receive = mode == "r"
        priorities: dict[str, int] = {}
        out: list[Delivery] = []
        append = out.append
        for record in reply[1:]:
            attempts, enqueued, _nonce, rank, _old, body = record.split(" ", 5)
            n = int(attempts) + 1
            head = rank[:16]
            priority = priorities.get(head)
            if priority is None:
                priority = priorities[head] = _INT64_MAX - int(head, 16)
            receipt = f"{n}.{suffix}" if receive else ""
            append(Delivery(rank[32:], body, n, receipt, priority, int(enqueued) / 1_000_000))
        return out

    def queue_get_many(self, name: str, max_attempts: int, max_n: int) -> list[Delivery]:
        """Take and delete up to ``max_n`` ready messages in one script call.

        Raises:
            OutcomeUnknown: the reply was lost; the messages may have been taken.
        """
        return self._take_many(name, "g", 0.0, max_attempts, max_n, "")

    def queue_receive_many(
        self,
        name: str,
        visibility_timeout: float,
        max_attempts: int,
        max_n: int,
        consumer: str | None = None,
    ) -> list[Delivery]:
        """Put up to ``max_n`` ready messages in flight in one script call (retried after a
        lost reply: what it hid comes back after ``visibility_timeout``)."""
        if consumer is not None:
            check_name(consumer, "consumer id")
        return self._take_many(name, "r", visibility_timeout, max_attempts, max_n, consumer or "")
