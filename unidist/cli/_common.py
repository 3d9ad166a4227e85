"""Helpers shared by the command modules: value parsing, JSON output, owner descriptions."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from unidist.codec import JSON


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str, force_string: bool = False) -> JSON:
    """``text`` parsed as JSON, or ``text`` itself when it is not valid JSON (or when
    ``force_string``). ``NaN`` and ``Infinity`` are not JSON and stay strings."""
    if force_string:
        return text
    try:
        value: JSON = json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text
    except RecursionError:
        raise click.UsageError(
            "the JSON value is nested too deeply (Python's JSON parser stops near 1,000 levels)"
        ) from None
    return value


def dumps(value: Any, pretty: bool = False) -> str:
    """Canonical JSON text for output (sorted keys; indented when ``pretty``)."""
    if pretty:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def echo_json(value: Any, pretty: bool = False) -> None:
    """Print ``value`` as JSON on stdout."""
    click.echo(dumps(value, pretty))


def show_value(value: JSON, raw: bool) -> str:
    """A value for printing: JSON text, or a bare string with ``raw`` (like ``jq -r``)."""
    if raw and isinstance(value, str):
        return value
    return dumps(value)


def age(since: object, now: float | None = None) -> float | None:
    """Seconds from Unix time ``since`` to now, or None when ``since`` is not a number."""
    if isinstance(since, bool) or not isinstance(since, (int, float)):
        return None
    return max(0.0, (time.time() if now is None else now) - float(since))


def fmt_seconds(seconds: float | None) -> str:
    """``3.2s``, ``4m05s``, ``2h03m``, ``3d04h`` (``-`` for None)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_time(ts: object) -> str:
    """Unix seconds as local ``YYYY-MM-DD HH:MM:SS`` (``-`` when absent)."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def describe_owner(owner: Mapping[str, JSON]) -> str:
    """``host pid 123 (thread MainThread) for 4.2s, token 7``."""
    held = fmt_seconds(age(owner.get("acquired_at")))
    text = (
        f"{owner.get('host')} pid {owner.get('pid')} (thread {owner.get('thread')}) "
        f"for {held}, token {owner.get('token')}"
    )
    expires = owner.get("expires_at")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        text += f", lease ends in {fmt_seconds(max(0.0, float(expires) - time.time()))}"
    return text


def describe_owners(owners: Sequence[Mapping[str, JSON]]) -> str:
    """Every holder, ``; ``-separated (``nobody now`` when empty)."""
    if not owners:
        return "nobody now"
    return "; ".join(describe_owner(o) for o in owners)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


__all__ = [
    "age",
    "describe_owner",
    "describe_owners",
    "dumps",
    "echo_json",
    "fmt_seconds",
    "fmt_time",
    "parse_value",
    "show_value",
    "table",
]
