"""Jobs over hosts (placeholder; being implemented)."""

from __future__ import annotations


class JobSpec:
    """One job (placeholder)."""


class JobManager:
    """Runs jobs over hosts (placeholder)."""
