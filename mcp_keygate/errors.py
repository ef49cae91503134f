"""One exception root, two branches: what becomes a tool error, and what the state store says.

`CallError` messages are written for the caller (an agent or a person reading a tool error): they
say what was wrong and what to do. `StoreError` messages say which store failed and what to check.
Anything else escaping to a user is a bug.
"""

from __future__ import annotations


class KeygateError(Exception):
    """The root of every error mcp-keygate raises on purpose."""


class CallError(KeygateError):
    """A call that cannot be served as asked; the message becomes the tool error."""


class InvalidRequest(CallError, ValueError):
    """A tool call whose arguments cannot be served; the message names the field."""


class StoreError(KeygateError):
    """The state store (SQLite file or Redis) cannot be used; the message says which and what to check."""


class PoolContention(StoreError):
    """Redis kept changing under a transaction for too long (pathological contention)."""
