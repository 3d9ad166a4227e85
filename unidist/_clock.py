"""Time in one place: monotonic deadlines for waits, wall clock only for reported timestamps."""

from __future__ import annotations

import math
import time
from typing import Final

monotonic = time.monotonic
wall = time.time

FOREVER: Final = math.inf


class Deadline:
    """A point on the monotonic clock; ``None`` timeout means never."""

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        self._at = FOREVER if timeout is None else monotonic() + max(0.0, timeout)

    @property
    def expired(self) -> bool:
        return monotonic() >= self._at

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (never negative), at most ``cap`` when given."""
        left = max(0.0, self._at - monotonic())
        return left if cap is None else min(left, cap)


def check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    """Validate a user-supplied timeout: None or a finite number >= 0 (ValueError otherwise)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0, got {timeout!r}")
    return float(timeout)
