"""The one place values are turned into stored text and back: JSON, never pickle.

Values are encoded canonically (object keys sorted, no insignificant whitespace, non-ASCII kept
as UTF-8), so two equal values always have the same stored text. That is what lets backends
compare values atomically on the server (``compare_and_set``) without decoding them. The price:
object key order is not preserved, exactly as JSON itself promises nothing about it.

Accepted: ``None``, ``bool``, ``int`` (any size Python can print, up to 4,300 digits), finite
``float``, ``str``, and ``list``/``tuple``/``dict`` of those with ``str`` keys. Tuples come
back as lists. Rejected with :class:`~unidist.errors.SerializationError` (a ``TypeError``):
everything else, including ``NaN``/``Infinity``, non-``str`` dict keys, ``bytes``, ``set``,
circular structures and lone surrogates in strings.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, TypeAlias

from unidist.errors import CorruptData, SerializationError, ValueTooLarge

__all__ = ["JSON", "MAX_VALUE_BYTES", "decode", "encode"]

JSON: TypeAlias = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]
"""A JSON value as Python holds it."""

MAX_VALUE_BYTES: Final = 256 * 1024 * 1024
"""The largest JSON text (UTF-8 bytes) of one value, the same on every backend: 256 MiB.
(Redis refuses bulk strings over 512 MB and the file journal bounds a record to 256 MiB.)"""

_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=True
)


def _check(value: Any, depth: int = 0) -> None:
    # json.dumps silently turns non-str keys (int, float, bool, None) into strings, which
    # would break round-trip equality; refuse them instead.
    if depth > 500:
        raise SerializationError("value nests deeper than 500 levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(
                    f"object keys must be str, got {type(k).__name__} key {k!r}"
                )
            _check(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check(v, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise SerializationError(f"{value!r} is not a JSON number")
    elif value is None or isinstance(value, (str, int, float)):
        return
    else:
        raise SerializationError(f"values of type {type(value).__name__} are not JSON")


def encode(value: Any) -> str:
    """Encode ``value`` as canonical JSON text.

    Raises:
        SerializationError: ``value`` is not a JSON value (see module docs).
        ValueTooLarge: its JSON text is over :data:`MAX_VALUE_BYTES` (256 MiB).
    """
    try:
        _check(value)
        text = _ENCODER.encode(value)
        # Lone surrogates would be written as invalid UTF-8; refuse them here.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except SerializationError:
        raise
    except RecursionError as exc:
        raise SerializationError("value nests too deeply or is circular") from exc
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SerializationError(f"value is not JSON: {exc}") from exc
    if size > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"value is {size} bytes of JSON, over the limit of {MAX_VALUE_BYTES} bytes (256 MiB)"
        )
    return text


def decode(text: str | bytes, *, where: str = "", offset: int = -1) -> JSON:
    """Decode stored JSON text.

    Raises:
        CorruptData: the text is not valid JSON (names ``where`` and ``offset`` if given).
    """
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptData(
            f"stored value is not valid JSON{f' in {where}' if where else ''}: {exc}",
            path=where,
            offset=offset,
        ) from exc
