"""Services published on hosts (placeholder; being implemented)."""

from __future__ import annotations


class Grid:
    """Publishes services and hands out proxies (placeholder)."""
