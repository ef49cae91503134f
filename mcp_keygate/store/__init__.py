"""State stores: SQLite (default), memory (tests)."""

from __future__ import annotations

from pathlib import Path

from ..errors import StoreError
from .base import ConversationConflict, ConversationInfo, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore


def open_store(backend: str, path: str | Path | None = None, redis=None, prefix: str = "keygate") -> Store:
    """The store named in `[state] backend` (not yet opened)."""
    if backend == "redis":
        from .redis import RedisStore

        return RedisStore(redis, prefix)
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        if path is None:
            raise StoreError("the sqlite store needs a path")
        return SQLiteStore(path)
    raise StoreError(f"unknown state backend {backend!r} (expected 'sqlite', 'memory' or 'redis')")


__all__ = [
    "ConversationConflict",
    "ConversationInfo",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "open_store",
]
