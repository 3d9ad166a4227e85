"""The ``redis://``, ``rediss://`` and ``unix://`` backend: objects shared by many hosts."""

from unidist.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
