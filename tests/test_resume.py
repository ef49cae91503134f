"""Resumable streams on streamable HTTP: a client whose connection drops mid-call reconnects with
`Last-Event-ID` and gets the answer it missed — with the events kept in memory and in Redis — and
no client can replay another session's events. A real `serve`, raw HTTP, the simulator."""

from __future__ import annotations

import json

import httpx2
import pytest

from .conftest import write_toml
from .redis_support import unique_prefix
from .servers import ALICE, BOB, ServerProcess, free_port

SLOW = "sim-ok-resume000000001"
ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture(params=["memory", "redis"])
def server(request, sim, tmp_path):
    """A server with tokens for alice and bob; its key answers after 1.5 s."""
    state = {"backend": "memory"}
    if request.param == "redis":
        state = {"backend": "redis", "url": request.getfixturevalue("redis_url"), "prefix": unique_prefix()}
    data = {
        "state": state,
        "server": {"auth_tokens": {"alice": "${ALICE_TOKEN}", "bob": "${BOB_TOKEN}"}},
        "providers": {"p": {"base_url": sim.openai_base, "keys": [SLOW]}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
    }
    httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {SLOW: {"latency_ms": 1500}}}).raise_for_status()
    process = ServerProcess(
        write_toml(tmp_path / "k.toml", data), free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}
    )
    yield process.wait_ready()
    _code, stderr = process.stop()
    assert "Traceback" not in stderr


def open_session(url: str, token: str) -> dict[str, str]:
    headers = {"accept": ACCEPT, "authorization": f"Bearer {token}"}
    opened = httpx2.post(f"{url}/mcp", json=INIT, headers=headers, timeout=10)
    session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    httpx2.post(f"{url}/mcp", json=note, headers=session, timeout=10).raise_for_status()
    return session


def events(lines) -> list[dict[str, str]]:
    """SSE events (id, retry, data) from a line iterator, until it ends."""
    found: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                found.append(current)
                yield current
            current = {}
            continue
        name, _, value = line.partition(":")
        current[name] = value.lstrip(" ")


def first_event_then_drop(url: str, session: dict[str, str]) -> dict[str, str]:
    """Start a call, read the stream's first event, and drop the connection."""
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "complete", "arguments": {"prompt": "hi"}},
    }
    with httpx2.Client(timeout=10) as client, client.stream("POST", f"{url}/mcp", json=call, headers=session) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        first = next(events(reply.iter_lines()))
        return first


def replay(url: str, headers: dict[str, str], last_event_id: str, timeout: float = 6.0) -> tuple[int, list[dict]]:
    """Reconnect with Last-Event-ID; the JSON-RPC messages received before the stream ends or the
    answer arrives (or `timeout` passes)."""
    messages: list[dict] = []
    try:
        with (
            httpx2.Client(timeout=timeout) as client,
            client.stream("GET", f"{url}/mcp", headers={**headers, "last-event-id": last_event_id}) as reply,
        ):
            if reply.status_code != 200:
                return reply.status_code, []
            for event in events(reply.iter_lines()):
                if event.get("data"):
                    messages.append(json.loads(event["data"]))
                    if messages[-1].get("id") == 7:
                        break
            return 200, messages
    except httpx2.ReadTimeout:
        return 200, messages


def test_a_dropped_stream_resumes_with_the_answer(server):
    session = open_session(server.url, ALICE)
    priming = first_event_then_drop(server.url, session)
    # The stream opens with a priming event: an id, no data, and how soon to reconnect.
    assert priming["id"] and not priming.get("data") and priming["retry"] == "2000"
    status, messages = replay(server.url, session, priming["id"])
    assert status == 200
    answers = [m for m in messages if m.get("id") == 7]
    assert len(answers) == 1 and not answers[0]["result"].get("isError"), messages
    assert answers[0]["result"]["structuredContent"]["model"] == "mini"


def test_no_session_can_replay_another_sessions_events(server):
    alice = open_session(server.url, ALICE)
    priming = first_event_then_drop(server.url, alice)
    # Another session of the same token, naming alice's event id: nothing of alice's comes back.
    alice_again = open_session(server.url, ALICE)
    status, messages = replay(server.url, alice_again, priming["id"], timeout=4)
    assert status in (200, 400, 404) and not any(m.get("id") == 7 for m in messages), messages
    # Another token, with alice's session id and event id: refused outright.
    stolen = {**alice, "authorization": f"Bearer {BOB}"}
    status, messages = replay(server.url, stolen, priming["id"])
    assert status == 404 and messages == []
    # Alice herself still gets her answer.
    status, messages = replay(server.url, alice, priming["id"])
    assert any(m.get("id") == 7 and "result" in m for m in messages)


@pytest.mark.anyio
async def test_the_memory_store_stays_within_its_bounds_and_forgets_oldest_first():
    from mcp_types import JSONRPCNotification

    from mcp_keygate.resume import MemoryEventStore, SessionScope, _current

    store = MemoryEventStore(max_events=50, max_bytes=20_000)
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"message": "x" * 900})
    ids = []
    _current.set(SessionScope())
    for _ in range(200):
        ids.append(await store.store_event("7", note))
        assert store.count <= 50 and store.bytes <= 20_000
    replayed: list = []

    async def collect(event) -> None:
        replayed.append(event)

    assert await store.replay_events_after(ids[0], collect) is None  # long forgotten
    assert await store.replay_events_after(ids[-3], collect) == "7"
    assert [e.event_id for e in replayed] == ids[-2:]
    _current.set(SessionScope())  # another session: the same ids mean nothing to it
    assert await store.replay_events_after(ids[-3], collect) is None


@pytest.mark.anyio
async def test_the_redis_store_keeps_each_session_within_its_bytes_and_events(redis_url):
    from mcp_types import JSONRPCNotification
    from redis.asyncio import Redis

    from mcp_keygate.resume import SessionScope, _current
    from mcp_keygate.resume_redis import RedisEventStore

    redis = Redis.from_url(redis_url)
    store = RedisEventStore(redis, unique_prefix(), max_events_per_session=50, max_bytes_per_session=20_000, ttl_s=60)
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"message": "x" * 900})
    scope = SessionScope()
    _current.set(scope)
    ids = [await store.store_event("7", note) for _ in range(200)]
    key = store._key(scope.namespace)
    entries = await redis.xrange(key)
    kept = sum(len(fields[b"m"]) for _, fields in entries)
    assert len(entries) <= 50 and kept <= 20_000 and int(await redis.get(f"{key}:bytes")) == kept
    assert await redis.ttl(key) > 0
    replayed: list = []

    async def collect(event) -> None:
        replayed.append(event.event_id)

    assert await store.replay_events_after(ids[0], collect) is None  # trimmed away
    assert await store.replay_events_after(ids[-3], collect) == "7" and replayed == ids[-2:]
    await redis.aclose()


@pytest.mark.parametrize("json_response", [True, False])
def test_json_replies_leave_no_events_behind_while_streams_keep_theirs(json_response, sim, tmp_path, redis_url):
    """With JSON replies there is nothing to resume: the replies of many calls must not pile up as
    events (with the Redis backend, a Redis write each); with SSE replies they are kept, as above."""
    from redis import Redis

    prefix = unique_prefix()
    data = {
        "state": {"backend": "redis", "url": redis_url, "prefix": prefix},
        "server": {"json_response": json_response},
        "providers": {"p": {"base_url": sim.openai_base, "keys": ["sim-ok-replies0000001"]}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
    }
    process = ServerProcess(write_toml(tmp_path / "k.toml", data), free_port(), {}).wait_ready()
    try:
        url = process.url
        session = open_session(url, "unused")
        session.pop("authorization")
        for i in range(5):
            call = {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call"}
            call["params"] = {"name": "complete", "arguments": {"prompt": "hi"}}
            reply = httpx2.post(f"{url}/mcp", json=call, headers=session, timeout=30)
            assert reply.status_code == 200 and '"isError":false' in reply.text.replace(" ", ""), reply.text[:300]
        redis = Redis.from_url(redis_url)
        kept = sum(redis.xlen(key) for key in redis.scan_iter(f"{prefix}:resume:*") if redis.type(key) == b"stream")
        redis.close()
        assert (kept == 0) if json_response else (kept >= 10), kept
    finally:
        _code, stderr = process.stop()
        assert "Traceback" not in stderr


@pytest.mark.anyio
async def test_with_json_replies_the_get_stream_still_resumes():
    """Only a request's reply goes unkept: the standalone GET stream (list_changed, server
    notifications) is still there for a client that reconnects."""
    from mcp.server.streamable_http import GET_STREAM_KEY
    from mcp_types import JSONRPCNotification

    from mcp_keygate.resume import MemoryEventStore, RequestRepliesUnkept, SessionScope, _current

    inner = MemoryEventStore()
    store = RequestRepliesUnkept(inner)
    _current.set(SessionScope())
    note = JSONRPCNotification(jsonrpc="2.0", method="notifications/tools/list_changed")
    first = await store.store_event(GET_STREAM_KEY, None)
    await store.store_event("7", note)
    await store.store_event(GET_STREAM_KEY, note)
    assert inner.count == 2
    replayed: list = []

    async def collect(event) -> None:
        replayed.append(event.message)

    assert await store.replay_events_after(first, collect) == GET_STREAM_KEY
    assert [m.method for m in replayed] == ["notifications/tools/list_changed"]
