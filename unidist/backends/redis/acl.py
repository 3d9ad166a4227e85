"""A least-privilege Redis ACL user for unidist.

The Redis backend needs only the commands in :data:`COMMANDS` (the ones it sends and the ones
its Lua scripts call) and only keys under its prefix. Create a user limited to that, for
example for the default prefix::

    ACL SETUSER app on >PASSWORD resetkeys ~unidist:* resetchannels -@all +ping +get ...

:func:`setuser_args` gives the complete argument list; pass it to ``ACL SETUSER`` (or print
it for ``redis-cli`` / ``aclfile``). Then connect with ``redis://app:PASSWORD@host:6379/0``.
"""

from __future__ import annotations

from typing import Final

from unidist.backends.redis.keys import DEFAULT_PREFIX, check_prefix

COMMANDS: Final = (
    # connection set-up (redis-py) and health
    "ping",
    "hello",
    "auth",
    "select",
    "client|setname",
    # sent by the backend
    "get",
    "set",
    "del",
    "hget",
    "hset",
    "hsetnx",
    "hgetall",
    "hlen",
    "scan",
    "blpop",
    "blmove",
    "eval",
    "evalsha",
    # called inside the backend's Lua scripts
    "decrby",
    "exists",
    "hdel",
    "hexists",
    "hincrby",
    "hmget",
    "incr",
    "incrby",
    "ltrim",
    "pexpire",
    "pttl",
    "rpush",
    "time",
    "zadd",
    "zcard",
    "zcount",
    "zrange",
    "zrangebyscore",
    "zrank",
    "zpopmin",
    "zrem",
    "zremrangebyscore",
    "zscore",
    # Redis Cluster only (redis+cluster://): the slot table and ASK redirections
    "cluster|slots",
    "asking",
)
"""Every command the Redis backend needs (lower case, ``container|subcommand`` form).

redis-py also sends ``CLIENT SETINFO`` (Redis 7.2+) when it connects and ignores a refusal;
add ``+client|setinfo`` on 7.2+ servers to keep the client's library name visible."""


def rules(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """ACL rules (without the password) that allow :data:`COMMANDS` on keys under ``prefix``.

    Raises:
        ValueError: ``prefix`` is not a valid key prefix (it holds no glob characters, so the
            key pattern ``~<prefix>*`` matches exactly the keys under it).
    """
    check_prefix(prefix)
    return [
        "on",
        "resetkeys",
        f"~{prefix}*",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in COMMANDS),
    ]


def setuser_args(user: str, password: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """``ACL SETUSER`` arguments for ``user`` with ``password`` limited to ``prefix``."""
    if not user or any(c.isspace() for c in user):
        raise ValueError(f"user name {user!r} must be non-empty without whitespace")
    return [user, "resetpass", f">{password}", *rules(prefix)]


__all__ = ["COMMANDS", "rules", "setuser_args"]
