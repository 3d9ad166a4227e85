"""Counters, state buckets, queues and membership of the file backend (placeholder)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unidist.backends.base import Delivery
from unidist.codec import JSON

_TODO = "{} on file:// is not implemented yet ({})"


class FileStoreMixin:
    root: Path

    def _init_store(self) -> None:
        pass

    def _close_store(self) -> None:
        pass

    def counter_add(self, name: str, delta: int, request_id: str) -> int:
        raise NotImplementedError(_TODO.format("counters", "locks feature"))

    def counter_get(self, name: str) -> int:
        raise NotImplementedError(_TODO.format("counters", "locks feature"))

    def counter_set(self, name: str, value: int) -> None:
        raise NotImplementedError(_TODO.format("counters", "locks feature"))

    def counters(self) -> dict[str, int]:
        raise NotImplementedError(_TODO.format("counters", "locks feature"))

    def state_get(self, bucket: str, key: str) -> str | None:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_set(self, bucket: str, key: str, value: str) -> None:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_update(self, bucket: str, items: Mapping[str, str]) -> None:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_delete(self, bucket: str, key: str) -> str | None:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_cas(self, bucket: str, key: str, expected: str | None, new: str | None) -> bool:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_items(self, bucket: str) -> dict[str, str]:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_len(self, bucket: str) -> int:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def state_clear(self, bucket: str) -> None:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def buckets(self) -> list[str]:
        raise NotImplementedError(_TODO.format("state buckets", "state feature"))

    def queue_put(self, name: str, msg_id: str, body: str, delay: float, priority: int) -> bool:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_receive(
        self, name: str, visibility_timeout: float, max_attempts: int
    ) -> Delivery | None:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_get(self, name: str, max_attempts: int) -> Delivery | None:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_ack(self, name: str, msg_id: str, receipt: str) -> bool:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_nack(
        self, name: str, msg_id: str, receipt: str, delay: float, max_attempts: int
    ) -> bool:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_stats(self, name: str) -> dict[str, int]:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_dead(self, name: str) -> list[Delivery]:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_requeue_dead(self, name: str) -> int:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_purge(self, name: str, dead: bool) -> int:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queue_wait(self, name: str, timeout: float) -> None:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def queues(self) -> list[str]:
        raise NotImplementedError(_TODO.format("queues", "queues feature"))

    def member_heartbeat(
        self, group: str, member: str, info: Mapping[str, JSON], ttl: float
    ) -> None:
        raise NotImplementedError(_TODO.format("membership", "cluster membership feature"))

    def member_leave(self, group: str, member: str) -> bool:
        raise NotImplementedError(_TODO.format("membership", "cluster membership feature"))

    def members(self, group: str) -> dict[str, dict[str, JSON]]:
        raise NotImplementedError(_TODO.format("membership", "cluster membership feature"))
