"""The default store: one SQLite file in WAL mode, so `status` can read while a server writes.

Reads run on one worker thread at a time (a capacity limiter of 1). Writes are group-committed:
calls that arrive while a commit is running are written together in the next transaction, each in
its own savepoint when there are several (one failing write does not undo the others), and each
call returns only once its own write is committed — so 64 concurrent calls cost a couple of
commits, not 64. A batch of small writes commits on the event loop when the connection is free and
no other process holds the write lock (about 100 µs of work, where the hop to a worker thread and
back costs some 170 µs of CPU more); anything else — attachments, a lock held elsewhere, a read in
progress — goes to the worker thread, which waits for the lock there. Checkpoints (copying the
write-ahead log into the file, with an fsync) run on the worker thread every `CHECKPOINT_EVERY`
commits, never on the loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..attachments import Attachment
from ..auth import LOCAL_OWNER
from ..errors import StoreError
from ..keys.budget import Budget, MoneyBudget, try_spend, try_spend_money
from ..keys.state import KeyRecord
from ..messages import Turn
from .base import ConversationConflict, ConversationInfo, UsageRow

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id     TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    record     TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id         TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    turns      INTEGER NOT NULL DEFAULT 0,
    owner      TEXT NOT NULL DEFAULT 'local'
);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    model      TEXT,
    provider   TEXT,
    key_id     TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE TABLE IF NOT EXISTS usage (
    day           TEXT NOT NULL,
    owner         TEXT NOT NULL,
    model         TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL NOT NULL DEFAULT 0,
    unpriced      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, owner, model, key_id)
);
CREATE TABLE IF NOT EXISTS blobs (
    sha256     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    data       BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS budgets (
    name       TEXT PRIMARY KEY,
    spend      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


BUSY_TIMEOUT_MS = 10_000  # how long the worker thread waits for another process's write lock
CHECKPOINT_EVERY = 200  # commits between checkpoints (SQLite's own would run inside a commit)


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    small: bool = True  # may be committed on the event loop
    done: bool = False
    error: BaseException | None = None
    result: Any = None


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._pending: list[_Write] = []
        self._commit_lock = anyio.Lock()
        self._commits = 0

    async def _write(self, fn: Callable[[sqlite3.Connection], Any], small: bool = True) -> Any:
        """Run `fn` in a committed transaction, shared with the writes queued alongside it; its result."""
        write = _Write(fn, small)
        self._pending.append(write)
        async with self._commit_lock:
            if not write.done:
                batch, self._pending = self._pending, []
                try:
                    if not self._commit_here(batch):
                        await self._run(lambda conn: _commit(conn, batch))
                    self._commits += 1
                    if self._commits % CHECKPOINT_EVERY == 0:
                        await self._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
                except BaseException as exc:
                    for queued in batch:
                        if not queued.done:
                            queued.done = True
                            queued.error = StoreError(f"the state file could not be written: {exc!r}")
                    raise
        if write.error is not None:
            raise write.error
        return write.result

    def _commit_here(self, batch: list[_Write]) -> bool:
        """Commit `batch` on the event loop if it is small, no read holds the connection and no other
        process holds the write lock; False (nothing written) leaves it to the worker thread."""
        conn = self._conn
        if conn is None or self._limiter.borrowed_tokens or not all(w.small for w in batch):
            return False
        try:
            _commit(conn, batch)  # busy_timeout is 0 here: a lock held elsewhere fails at once, never stalls the loop
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _unusable(self.path, exc) from None
            for write in batch:  # rolled back whole: the worker thread writes it again
                write.result, write.error = None, None
            return False
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None
        return True

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the state store is not open")
        try:
            return await anyio.to_thread.run_sync(_waiting_for_locks, fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None

    async def open(self) -> None:
        self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                # Created owner-only before SQLite touches it: it names keys and holds conversations.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the worker thread (_write)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(conversations)")}
            if "owner" not in columns:  # a state file from before per-client conversations
                conn.execute("ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'")
            turn_columns = {row[1] for row in conn.execute("PRAGMA table_info(turns)")}
            if "attachments" not in turn_columns:  # a state file from before attachments
                conn.execute("ALTER TABLE turns ADD COLUMN attachments TEXT")
            usage_columns = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
            if "cost_usd" not in usage_columns:  # a state file from before costs
                conn.execute("ALTER TABLE usage ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0")
                conn.execute("ALTER TABLE usage ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0")
                conn.execute("UPDATE usage SET unpriced = requests")  # their cost was never known: not $0
            conn.execute("PRAGMA busy_timeout = 0")  # on the event loop; the worker thread raises it (_run)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the state file {self.path}: {exc}") from None
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def save_keys(self, records: list[KeyRecord]) -> None:
        if not records:
            return
        rows = _key_rows(records)

        await self._write(lambda conn: _upsert_keys(conn, rows))

    async def load_keys(self) -> list[KeyRecord]:
        def read(conn: sqlite3.Connection) -> list[KeyRecord]:
            rows = conn.execute("SELECT record FROM keys ORDER BY provider, key_id").fetchall()
            return [KeyRecord.from_dict(json.loads(r[0])) for r in rows]

        return await self._run(read)

    async def get_turns(self, conversation_id: str, owner: str = LOCAL_OWNER) -> list[Turn] | None:
        def read(conn: sqlite3.Connection) -> list[Turn] | None:
            exists = conn.execute(
                "SELECT 1 FROM conversations WHERE id=? AND owner=?", (conversation_id, owner)
            ).fetchone()
            if exists is None:
                return None
            rows = conn.execute(
                "SELECT role, content, model, provider, key_id, created_at, attachments FROM turns "
                "WHERE conversation_id=? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
            return [Turn(r[0], r[1], r[2], r[3], r[4], r[5], attachments=_references(r[6])) for r in rows]

        return await self._run(read)

    async def append_turns(
        self,
        conversation_id: str,
        turns: list[Turn],
        *,
        create: bool,
        owner: str = LOCAL_OWNER,
        keys: list[KeyRecord] | None = None,
        usage: UsageRow | None = None,
        blobs: list[Attachment] | None = None,
    ) -> None:
        now = time.time()
        key_rows = _key_rows(keys or [])

        def write(conn: sqlite3.Connection) -> None:
            if create:  # a new conversation starts at turn 0: no need to read its count back
                try:
                    conn.execute(
                        "INSERT INTO conversations(id, created_at, updated_at, turns, owner) VALUES (?,?,?,?,?)",
                        (conversation_id, now, now, len(turns), owner),
                    )
                except sqlite3.IntegrityError:
                    raise ConversationConflict(conversation_id) from None
                start = 0
            else:
                row = conn.execute(
                    "SELECT turns FROM conversations WHERE id=? AND owner=?", (conversation_id, owner)
                ).fetchone()
                if row is None:
                    raise ConversationConflict(conversation_id)
                start = row[0]
                conn.execute(
                    "UPDATE conversations SET turns=turns+?, updated_at=? WHERE id=?",
                    (len(turns), now, conversation_id),
                )
            _insert_turns(conn, conversation_id, start, turns)
            _insert_blobs(conn, blobs or [], now)
            _upsert_keys(conn, key_rows)
            if usage is not None:
                conn.execute(
                    "INSERT INTO usage(day, owner, model, key_id, requests, input_tokens, output_tokens, cost_usd, "
                    "unpriced) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(day, owner, model, key_id) DO UPDATE SET "
                    "requests=requests+excluded.requests, input_tokens=input_tokens+excluded.input_tokens, "
                    "output_tokens=output_tokens+excluded.output_tokens, cost_usd=cost_usd+excluded.cost_usd, "
                    "unpriced=unpriced+excluded.unpriced",
                    (
                        usage.day,
                        usage.owner,
                        usage.model,
                        usage.key_id,
                        usage.requests,
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cost_usd,
                        usage.unpriced,
                    ),
                )

        await self._write(write, small=not blobs)

    async def list_conversations(self, limit: int = 50, owner: str = LOCAL_OWNER) -> list[ConversationInfo]:
        def read(conn: sqlite3.Connection) -> list[ConversationInfo]:
            rows = conn.execute(
                "SELECT id, created_at, updated_at, turns FROM conversations WHERE owner=? "
                "ORDER BY updated_at DESC LIMIT ?",
                (owner, limit),
            ).fetchall()
            return [ConversationInfo(*row) for row in rows]

        return await self._run(read)

    async def load_usage(self, since_day: str, owner: str | None = None) -> list[UsageRow]:
        def read(conn: sqlite3.Connection) -> list[UsageRow]:
            query = (
                "SELECT day, owner, model, key_id, requests, input_tokens, output_tokens, cost_usd, unpriced "
                "FROM usage WHERE day >= ?"
            )
            args: list[str] = [since_day]
            if owner is not None:
                query += " AND owner = ?"
                args.append(owner)
            return [UsageRow(*row) for row in conn.execute(query + " ORDER BY day, owner, model, key_id", args)]

        return await self._run(read)

    async def spend_budget(
        self, name: str, budget: Budget, now: float, requests: int, tokens: int, enforce: bool = True
    ) -> tuple[float, str]:
        return await self._write(
            lambda conn: _charge(
                conn, name, now, lambda state: try_spend(state, budget, now, requests, tokens, enforce)
            )
        )

    async def spend_money(
        self, name: str, budget: MoneyBudget, now: float, amount: float, enforce: bool = True
    ) -> tuple[float, str]:
        return await self._write(
            lambda conn: _charge(conn, f"usd:{name}", now, lambda s: try_spend_money(s, budget, now, amount, enforce))
        )

    async def load_blobs(self, hashes: list[str]) -> dict[str, bytes]:
        return await self._run(lambda conn: _read_blobs(conn, hashes))

    async def blob_bytes(self) -> int:
        return await self._run(lambda conn: int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]))

    async def ping(self) -> bool:
        try:
            return await self._run(_select_one)
        except (StoreError, sqlite3.Error):
            return False


def _charge(
    conn: sqlite3.Connection, name: str, now: float, spend: Callable[[dict], tuple[float, str]]
) -> tuple[float, str]:
    """Charge a budget's JSON state in this transaction (nothing written when `spend` refuses)."""
    row = conn.execute("SELECT spend FROM budgets WHERE name=?", (name,)).fetchone()
    state = json.loads(row[0]) if row else {}
    verdict = spend(state)
    if verdict[0] == 0:
        conn.execute(
            "INSERT INTO budgets(name, spend, updated_at) VALUES (?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET spend=excluded.spend, updated_at=excluded.updated_at",
            (name, json.dumps(state), now),
        )
    return verdict


def _insert_turns(conn: sqlite3.Connection, conversation_id: str, start: int, turns: list[Turn]) -> None:
    conn.executemany(
        "INSERT INTO turns(conversation_id, seq, role, content, model, provider, key_id, created_at, "
        "attachments) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (conversation_id, start + i, t.role, t.content, t.model, t.provider, t.key_id, t.created_at, refs)
            for i, t in enumerate(turns)
            for refs in [json.dumps([a.to_dict() for a in t.attachments]) if t.attachments else None]
        ],
    )


def _insert_blobs(conn: sqlite3.Connection, blobs: list[Attachment], now: float) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO blobs(sha256, media_type, size, data, created_at) VALUES (?,?,?,?,?)",
        [(b.sha256, b.media_type, b.size, b.data, now) for b in blobs if b.data is not None],
    )


def _read_blobs(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for i in range(0, len(hashes), 500):  # under SQLite's limit on bound parameters
        part = hashes[i : i + 500]
        marks = ",".join("?" * len(part))
        found.update(conn.execute(f"SELECT sha256, data FROM blobs WHERE sha256 IN ({marks})", part))
    return found


def _references(raw: str | None) -> tuple[Attachment, ...]:
    return tuple(Attachment.from_dict(item) for item in json.loads(raw)) if raw else ()


def _select_one(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1").fetchone() == (1,)


def _key_rows(records: list[KeyRecord]) -> list[tuple[str, str, str, float]]:
    now = time.time()
    return [(r.key_id, r.provider, json.dumps(r.to_dict()), now) for r in records]


def _upsert_keys(conn: sqlite3.Connection, rows: list[tuple[str, str, str, float]]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO keys(key_id, provider, record, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(key_id) DO UPDATE SET provider=excluded.provider, "
            "record=excluded.record, updated_at=excluded.updated_at",
            rows,
        )


def _unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"the state file {path} could not be used: {exc} — check the disk and the file's permissions")


def conn_path(conn: sqlite3.Connection) -> str:
    """The file behind a connection (for messages)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "(state file)"


def _waiting_for_locks(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """Run `fn` on the worker thread, where waiting up to BUSY_TIMEOUT_MS for another process's lock
    is fine; the connection's own timeout is 0, for the writes committed on the event loop."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        return fn(conn)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _applied(conn: sqlite3.Connection, write: _Write) -> bool:
    """Run one write, keeping its result or its error (the caller undoes a failed one)."""
    try:
        write.result = write.fn(conn)
    except Exception as exc:
        write.error = _unusable(Path(conn_path(conn)), exc) if isinstance(exc, sqlite3.Error) else exc
        return False
    return True


def _commit(conn: sqlite3.Connection, batch: list[_Write]) -> None:
    """One transaction for the whole batch. A write alone is undone with its transaction; in a larger
    batch each write has a savepoint, so a failing one is undone alone."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if len(batch) == 1:
            if _applied(conn, batch[0]):
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        else:
            for write in batch:
                conn.execute("SAVEPOINT one_write")
                if not _applied(conn, write):
                    conn.execute("ROLLBACK TO one_write")
                conn.execute("RELEASE one_write")
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    for write in batch:
        write.done = True
