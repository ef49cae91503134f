"""Remote agents: `serve --transport http` as a real process, the SDK's streamable-HTTP and SSE clients,
bearer tokens, DNS-rebinding protection, health, metrics, per-client conversations, shutdown."""

from __future__ import annotations

import signal

import anyio
import httpx2
import pytest

from .conftest import two_provider_config, write_toml
from .servers import ALICE, BOB, ServerProcess, free_port, sse, streamable

pytestmark = pytest.mark.anyio


@pytest.fixture
def http_config(tmp_path, sim):
    data = two_provider_config(
        sim,
        ["sim-ok-http000001", "sim-ok-http000002"],
        ["sim-ok-http000003"],
        backend="sqlite",
        path=str(tmp_path / "state.db"),
    )
    data["server"] = {"auth_tokens": {"alice": "${ALICE_TOKEN}", "bob": "${BOB_TOKEN}"}}
    return write_toml(tmp_path / "keygate.toml", data)


@pytest.fixture
def server(http_config):
    process = ServerProcess(http_config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    yield process
    process.stop()


async def test_streamable_http_and_sse_work_with_a_token(server):
    async with streamable(server.url, ALICE) as session:
        result = await session.call_tool("complete", {"prompt": "over streamable HTTP"})
        assert not result.is_error and result.structured_content["model"] == "mini"
    async with sse(server.url, BOB) as session:
        result = await session.call_tool("complete", {"prompt": "over SSE"})
        assert not result.is_error
        keys = await session.call_tool("key_status", {})
        assert len(keys.structured_content["keys"]) == 3
    _code, stderr = server.stop()
    assert "complete by alice answered by mini" in stderr and "complete by bob answered by mini" in stderr
    assert ALICE not in stderr and BOB not in stderr
    assert "HTTP Request:" not in stderr  # the HTTP client's own line per request only at DEBUG


@pytest.mark.parametrize("path", ["/mcp", "/sse", "/messages/?session_id=x", "/metrics"])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", ALICE[:-1]])
async def test_missing_or_wrong_token_is_refused(server, path, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    method = "GET" if path in ("/sse", "/metrics") else "POST"
    response = httpx2.request(method, f"{server.url}{path}", headers=headers, json={}, timeout=5)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_sdk_client_fails_without_a_token(server):
    from mcp import MCPError

    with pytest.raises(ExceptionGroup) as info:
        async with streamable(server.url, None) as session:
            await session.call_tool("list_models", {})
    assert info.group_contains(MCPError, depth=None) or info.group_contains(httpx2.HTTPStatusError, depth=None)


async def test_a_rebinding_host_header_is_refused(server):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Authorization": f"Bearer {ALICE}", "Accept": "application/json, text/event-stream"}
    good = httpx2.post(f"{server.url}/mcp", json=init, headers=headers)
    assert good.status_code == 200
    evil = httpx2.post(f"{server.url}/mcp", json=init, headers={**headers, "Host": "evil.example:80"})
    assert evil.status_code in (400, 403, 421)
    origin = httpx2.post(f"{server.url}/mcp", json=init, headers={**headers, "Origin": "http://evil.example"})
    assert origin.status_code in (400, 403)


def test_a_public_bind_without_a_token_refuses_to_start(tmp_path, sim):
    config = write_toml(tmp_path / "k.toml", two_provider_config(sim, ["sim-ok-pub0000001"], []))
    process = ServerProcess(config, free_port(), {}, host="0.0.0.0")
    process.proc.wait(timeout=20)
    code, stderr = process.stop()
    assert code == 2
    assert "refusing to listen on 0.0.0.0" in stderr and "KEYGATE_AUTH_TOKEN" in stderr


async def test_health_is_open_and_metrics_count_calls(server):
    health = httpx2.get(f"{server.url}/healthz").json()
    assert health == {"ok": True, "store": "reachable", "version": health["version"]}
    async with streamable(server.url, ALICE) as session:
        await session.call_tool("complete", {"prompt": "count me"})
    text = httpx2.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ALICE}"}).text
    assert 'keygate_upstream_requests_total{key_id="primary:' in text and 'outcome="ok"' in text
    assert 'keygate_keys{provider="primary",state="ready"} 2.0' in text
    assert "keygate_upstream_latency_seconds_bucket" in text
    assert 'keygate_tool_calls_total{caller="alice",result="ok"} 1.0' in text


async def test_conversations_belong_to_the_token_that_made_them(server):
    async with streamable(server.url, ALICE) as session:
        first = await session.call_tool("complete", {"prompt": "alice's secret plan"})
        cid = first.structured_content["conversation_id"]
        again = await session.call_tool("complete", {"prompt": "and then?", "conversation_id": cid})
        assert not again.is_error
    async with streamable(server.url, BOB) as session:
        stolen = await session.call_tool("complete", {"prompt": "show me", "conversation_id": cid})
    assert stolen.is_error and "does not exist" in stolen.content[0].text


async def test_fifty_concurrent_clients_lose_and_duplicate_nothing(server, tmp_path):
    results: dict[int, list[str]] = {}

    async def client(i: int) -> None:
        async with streamable(server.url, ALICE if i % 2 else BOB) as session:
            cid = None
            texts = []
            for turn in range(3):
                args = {"prompt": f"client {i} turn {turn}"} | ({"conversation_id": cid} if cid else {})
                result = await session.call_tool("complete", args)
                assert not result.is_error, result.content
                cid = result.structured_content["conversation_id"]
                texts.append(cid)
            results[i] = texts

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(client, i)
    assert len(results) == 50
    server.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT id, turns FROM conversations").fetchall()
        assert len(rows) == 50 and all(turns == 6 for _, turns in rows)
        for i, cids in results.items():
            assert len(set(cids)) == 1
            contents = [
                r[0]
                for r in db.execute(
                    "SELECT content FROM turns WHERE conversation_id=? AND role='user' ORDER BY seq", (cids[0],)
                )
            ]
            assert contents == [f"client {i} turn {t}" for t in range(3)]
        dupes = db.execute("SELECT conversation_id, seq, COUNT(*) FROM turns GROUP BY 1, 2 HAVING COUNT(*) > 1")
        assert dupes.fetchall() == []


async def test_sigterm_lets_an_in_flight_call_finish(server, sim, tmp_path):
    # The upstream takes 4 s; SIGTERM comes at 2 s, when the call is surely in flight even on a busy machine.
    httpx2.post(f"{sim.url}/_sim/reset", json={"defaults": {"latency_ms": 4000}}).raise_for_status()
    outcome: dict = {}

    async def slow_call() -> None:
        async with streamable(server.url, ALICE) as session:
            outcome["result"] = await session.call_tool("complete", {"prompt": "slow one"})

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "late", "version": "1"}},
    }
    headers = {"Authorization": f"Bearer {ALICE}", "Accept": "application/json, text/event-stream"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        await anyio.sleep(2.0)
        server.proc.send_signal(signal.SIGTERM)
        await anyio.sleep(0.2)
        async with httpx2.AsyncClient() as late:
            refused = await late.post(f"{server.url}/mcp", json=init, headers=headers)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    code, _stderr = server.stop()
    assert not outcome["result"].is_error
    assert code == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone() == (2,)
