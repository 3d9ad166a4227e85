"""Locks and semaphores of the file backend (placeholder until the locks feature lands)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unidist.backends.base import LockGrant
from unidist.codec import JSON

_TODO = "file:// locks and semaphores are not implemented yet (locks feature)"


class FileLocksMixin:
    root: Path

    def _init_locks(self) -> None:
        pass

    def _close_locks(self) -> None:
        pass

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
        raise NotImplementedError(_TODO)

    def lock_cancel_wait(self, name: str, holder: str) -> None:
        raise NotImplementedError(_TODO)

    def lock_release(self, name: str, holder: str) -> bool:
        raise NotImplementedError(_TODO)

    def lock_renew(self, name: str, holder: str, ttl: float | None) -> float | None | bool:
        raise NotImplementedError(_TODO)

    def lock_owners(self, name: str) -> list[dict[str, JSON]]:
        raise NotImplementedError(_TODO)

    def lock_break(self, name: str) -> int:
        raise NotImplementedError(_TODO)

    def locks(self) -> dict[str, list[dict[str, JSON]]]:
        raise NotImplementedError(_TODO)

    def lock_wait(self, name: str, timeout: float) -> None:
        raise NotImplementedError(_TODO)
