"""The one naming rule every primitive and backend obeys.

A name is 1-200 characters of ASCII letters, digits and ``._-:@``. It may not be ``.`` or
``..`` nor start with ``.`` (so a name can never be a path component that escapes or hides),
which also means it can never contain ``/``, NUL or whitespace. The check runs before any I/O.
"""

from __future__ import annotations

import re
from typing import Final

from unidist.errors import InvalidName

MAX_NAME_LENGTH: Final = 200
# Names already found valid (a hot path: every backend call re-checks its name).
_VALID: set[object] = set()
_VALID_CACHE_SIZE: Final = 100_000
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_\-:@][A-Za-z0-9._\-:@]{0,199}")


def check_name(name: object, what: str = "name", *, cache: bool = True) -> str:
    """Return ``name`` if it is a valid primitive name, else raise :class:`InvalidName`.

    Args:
        name: the candidate name.
        what: what the name is for, used in the error message (``"lock name"``, ...).
        cache: remember a valid name so that its next check is one set lookup (pass False
            for one-off values such as message ids, which would crowd out object names).

    Raises:
        InvalidName: ``name`` is not a str, is empty, longer than 200 characters, starts with
            ``.``, or has a character outside letters, digits and ``._-:@``.
    """
    if type(name) is str and name in _VALID:
        return name
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidName(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}")
    if _NAME_RE.fullmatch(name) is None:
        if name.startswith("."):
            raise InvalidName(f"{what} {name!r} must not start with '.'")
        bad = next(ch for ch in name if _NAME_RE.fullmatch("a" + ch) is None)
        raise InvalidName(
            f"{what} {name!r} contains {bad!r}; allowed are letters, digits and '._-:@'"
        )
    if cache and len(_VALID) < _VALID_CACHE_SIZE:
        _VALID.add(name)
    return name
