"""Time in one place: monotonic deadlines for waits, wall clock only for reported timestamps.

Lock leases never depend on this process's wall clock: Redis judges them by the server's
``TIME``, ``file://`` by the host's monotonic clock (one clock for every process of the
host, never stepped), ``memory://`` by the process's own clock (nobody else shares it).

``$UNIDIST_CLOCK_SKEW`` (seconds, may be negative), read at import, shifts :func:`wall` of
this process: a stand-in for a client whose clock was stepped (NTP, ``date -s``), used by the
reliability suite to show that such a jump neither steals nor stretches a lease. Leave it
unset in production.
"""

from __future__ import annotations

import math
import os
import time
from typing import Final


def _skew() -> float:
    raw = os.environ.get("UNIDIST_CLOCK_SKEW", "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"UNIDIST_CLOCK_SKEW must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"UNIDIST_CLOCK_SKEW must be finite, got {raw!r}")
    return value


#: seconds added to this process's wall clock (``$UNIDIST_CLOCK_SKEW``; 0 normally).
SKEW: Final = _skew()

monotonic = time.monotonic


def wall() -> float:
    """Unix seconds of this process's wall clock (plus ``$UNIDIST_CLOCK_SKEW``)."""
    return time.time() + SKEW


if not SKEW:
    wall = time.time  # the fast path: no skew

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
