"""Backend URL parsing: scheme, location, typed query options, password redaction."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from unidist.errors import InvalidURL

OptionParser = Callable[[str], Any]


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    # Only the user information is rewritten, so multi-host locations (Sentinel, Cluster
    # seed lists: h1:26379,h2:26379) come through unchanged.
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def opt_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def opt_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number >= 0, got {text!r}")
    return value


def opt_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {text!r}")
    return value


def opt_choice(*choices: str) -> OptionParser:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def opt_str(text: str) -> str:
    return text


@dataclass(frozen=True)
class ParsedURL:
    """A backend URL split into parts, with options already converted to their types."""

    url: str
    scheme: str
    netloc: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        return redact(self.url)


def parse_url(url: str, options: Mapping[str, OptionParser]) -> ParsedURL:
    """Split ``url`` and convert its query options with the ``options`` table.

    Raises:
        InvalidURL: an option not in the table, a repeated option, or a value its parser refuses.
    """
    safe = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL(f"cannot parse backend URL {safe}: {exc}") from exc
    parsed: dict[str, Any] = {}
    for key, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in options:
            known = ", ".join(sorted(options)) or "none"
            raise InvalidURL(
                f"unknown option {key!r} in backend URL {safe}; {parts.scheme}:// accepts: {known}"
            )
        if key in parsed:
            raise InvalidURL(f"option {key!r} given twice in backend URL {safe}")
        try:
            parsed[key] = options[key](raw)
        except ValueError as exc:
            raise InvalidURL(f"option {key}={raw!r} in backend URL {safe}: {exc}") from exc
    return ParsedURL(
        url=url, scheme=parts.scheme, netloc=parts.netloc, path=parts.path, options=parsed
    )
