"""The codec, the error tree and URL redaction: the small shared pieces every backend uses."""

from __future__ import annotations

import queue

import pytest

import unidist
from unidist.backends._url import redact
from unidist.codec import decode, encode
from unidist.errors import CorruptData


def test_encoding_is_canonical() -> None:
    """Equal values encode to identical text whatever the key order (CAS relies on it)."""
    assert encode({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == encode(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )
    assert encode({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert encode("é✓") == '"é✓"'


def test_int_float_bool_stay_distinct() -> None:
    """1, 1.0 and True encode differently, so compare_and_set never confuses them."""
    assert len({encode(1), encode(1.0), encode(True)}) == 3


def test_large_int_round_trip() -> None:
    """Integers far outside 64 bits round-trip exactly."""
    n = 7**300
    assert decode(encode(n)) == n


def test_decode_damage_is_corrupt_data() -> None:
    """Undecodable stored text is CorruptData naming where, never a json traceback."""
    with pytest.raises(CorruptData, match="in bucket 'x'") as info:
        decode('{"a": ', where="bucket 'x'", offset=12)
    assert info.value.offset == 12


def test_error_tree() -> None:
    """Every error is a UnidistError and also the stdlib error users already catch."""
    assert issubclass(unidist.Empty, queue.Empty)
    assert issubclass(unidist.InvalidName, ValueError)
    assert issubclass(unidist.InvalidURL, ValueError)
    assert issubclass(unidist.SerializationError, TypeError)
    assert issubclass(unidist.LockTimeout, TimeoutError)
    assert issubclass(unidist.LockNotOwned, RuntimeError)
    assert issubclass(unidist.OutcomeUnknown, unidist.BackendUnavailable)
    for name in unidist.errors.__all__:
        assert issubclass(getattr(unidist.errors, name), unidist.UnidistError)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h/0?prefix=x:", "redis://user:***@h/0?prefix=x:"),
        ("rediss://u:p%40ss@[::1]:7000", "rediss://u:***@[::1]:7000"),
        ("redis://h:6379", "redis://h:6379"),
        ("file:///var/lib/unidist", "file:///var/lib/unidist"),
    ],
)
def test_redact_hides_passwords(url: str, expected: str) -> None:
    """Redaction replaces the password and keeps everything a user needs to find the server."""
    assert redact(url) == expected


def test_a_value_over_256_mib_is_refused_naming_the_limit() -> None:
    from unidist.codec import MAX_VALUE_BYTES, encode
    from unidist.errors import ValueTooLarge

    assert len(encode("x" * (MAX_VALUE_BYTES - 2))) == MAX_VALUE_BYTES  # the quotes count
    with pytest.raises(ValueTooLarge, match="limit of 268435456 bytes"):
        encode("x" * (MAX_VALUE_BYTES - 1))
    with pytest.raises(ValueTooLarge):
        encode(["é" * (MAX_VALUE_BYTES // 2)])  # counted in UTF-8 bytes, not characters
