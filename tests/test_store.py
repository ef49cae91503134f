"""The SQLite store: atomic appends, key records, file permissions, and reopening."""

from __future__ import annotations

import os
import stat

import pytest

from mcp_keygate.keys.state import Hold, KeyRecord, KeyState
from mcp_keygate.messages import Turn
from mcp_keygate.store import ConversationConflict, MemoryStore, SQLiteStore, StoreError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "memory", "redis"])
async def store(request, tmp_path):
    if request.param == "redis":
        from redis.asyncio import Redis

        from mcp_keygate.store.redis import RedisStore

        from .redis_support import unique_prefix

        s = RedisStore(Redis.from_url(request.getfixturevalue("redis_url")), unique_prefix())
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "state" / "state.db")
    else:
        s = MemoryStore()
    await s.open()
    yield s
    await s.close()


async def test_conversation_round_trip(store):
    turns = [Turn("system", "be brief"), Turn("user", "hi"), Turn("assistant", "hello", "mini", "p", "p:abc", 1.0)]
    await store.append_turns("c_1", turns, create=True)
    await store.append_turns(
        "c_1", [Turn("user", "again"), Turn("assistant", "sure", "big", "q", "q:def")], create=False
    )
    got = await store.get_turns("c_1")
    assert [t.content for t in got] == ["be brief", "hi", "hello", "again", "sure"]
    assert got[2].model == "mini" and got[4].key_id == "q:def"
    assert await store.get_turns("c_unknown") is None
    infos = await store.list_conversations()
    assert [(i.id, i.turns) for i in infos] == [("c_1", 5)]


async def test_creating_an_existing_conversation_conflicts(store):
    await store.append_turns("c_1", [Turn("user", "a")], create=True)
    with pytest.raises(ConversationConflict):
        await store.append_turns("c_1", [Turn("user", "b")], create=True)
    assert [t.content for t in await store.get_turns("c_1")] == ["a"]


async def test_a_conversation_belongs_to_its_owner(store):
    await store.append_turns("c_1", [Turn("user", "alice's")], create=True, owner="alice")
    assert await store.get_turns("c_1", "bob") is None
    with pytest.raises(ConversationConflict):
        await store.append_turns("c_1", [Turn("user", "bob's")], create=False, owner="bob")
    assert [t.content for t in await store.get_turns("c_1", "alice")] == ["alice's"]
    assert [i.id for i in await store.list_conversations(owner="alice")] == ["c_1"]
    assert await store.list_conversations(owner="bob") == []
    assert await store.ping()


async def test_key_records_round_trip(store):
    record = KeyRecord("p:abc", "p", "…wxyz", Hold(KeyState.EXHAUSTED, 123.0, "quota", 429, 1.0))
    record.model_holds["m"] = Hold(KeyState.COOLING, 50.0, "slow", 429, 1.0, 2)
    record.requests = 3
    await store.save_keys([record])
    record.requests = 4
    await store.save_keys([record])
    (loaded,) = await store.load_keys()
    assert loaded.to_dict() == record.to_dict()


async def test_sqlite_file_is_private_and_atomic_on_failure(tmp_path):
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await store.append_turns("c_1", [Turn("user", "a"), Turn("assistant", "b")], create=True)
    # A turn that violates the schema (content NULL) aborts the whole append: no half call is stored.
    record = KeyRecord("p:abc", "p", "…wxyz", requests=7)
    with pytest.raises(StoreError, match="could not be used: NOT NULL constraint failed"):
        await store.append_turns(
            "c_1",
            [Turn("user", "ok"), Turn("assistant", None)],
            create=False,
            keys=[record],  # type: ignore[arg-type]
        )
    assert [t.content for t in await store.get_turns("c_1")] == ["a", "b"]
    assert await store.load_keys() == []  # the key records of the failed append were rolled back too
    await store.append_turns("c_1", [Turn("user", "c")], create=False, keys=[record])
    assert [r.requests for r in await store.load_keys()] == [7]
    await store.close()
    reopened = SQLiteStore(path)
    await reopened.open()
    assert len(await reopened.get_turns("c_1")) == 3
    await reopened.close()


async def test_concurrent_writes_commit_together_and_a_failing_one_fails_alone(store):
    import anyio

    await store.append_turns("c_taken", [Turn("user", "first")], create=True)
    errors: dict[str, Exception] = {}

    async def write(cid: str, create: bool) -> None:
        try:
            await store.append_turns(cid, [Turn("user", cid), Turn("assistant", "ok")], create=create)
        except ConversationConflict as exc:
            errors[cid] = exc

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(write, f"c_{i:02d}", True)
        tg.start_soon(write, "c_taken", True)  # conflicts, in the middle of the others' batch
        tg.start_soon(write, "c_missing", False)  # appending to a conversation nobody created
    assert set(errors) == {"c_taken", "c_missing"}
    for i in range(40):
        assert [t.content for t in await store.get_turns(f"c_{i:02d}")] == [f"c_{i:02d}", "ok"]
    assert [t.content for t in await store.get_turns("c_taken")] == ["first"]
    assert await store.get_turns("c_missing") is None


async def test_a_write_lock_held_by_another_process_never_stalls_the_event_loop(tmp_path):
    """Small writes commit on the event loop; while another process holds the file's write lock
    they must wait on the worker thread instead, with the loop serving everything else."""
    import sqlite3
    import time

    import anyio

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    await store.append_turns("c_before", [Turn("user", "first")], create=True)  # committed on the loop
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another keygate (or a tool) writing
    written = anyio.Event()

    async def write() -> None:
        await store.append_turns("c_during", [Turn("user", "waited")], create=True)
        written.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            started = time.monotonic()
            for _ in range(10):  # the loop keeps turning while the write waits for the lock
                await anyio.sleep(0.02)
            assert time.monotonic() - started < 5.0  # a stalled loop would take the 10 s busy timeout
            assert not written.is_set()
            other.execute("COMMIT")
            with anyio.fail_after(10):
                await written.wait()
    finally:
        other.close()
    assert [t.content for t in await store.get_turns("c_during")] == ["waited"]
    await store.append_turns("c_after", [Turn("user", "fine")], create=True)  # back on the fast path
    assert [t.content for t in await store.get_turns("c_after")] == ["fine"]
    await store.close()


async def test_checkpoints_keep_the_write_ahead_log_bounded(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    for i in range(1000):
        await store.append_turns(f"c_{i}", [Turn("user", "x" * 2000), Turn("assistant", "y" * 2000)], create=True)
    wal = (tmp_path / "s.db-wal").stat().st_size
    await store.close()
    # Without checkpoints the log holds every commit (≈ 24 MB here); with them, one round's worth (≈ 5 MB).
    assert wal < 10 * 1024 * 1024, wal
