"""MCP logging to clients: `logging/setLevel` on the session wires, the per-request opt-in on
2026-07-28, and a call's notices (keys set aside, fallbacks, waits) reaching only the client that
made the call — over stdio and streamable HTTP, with real SDK clients and the simulator."""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp_types import LoggingMessageNotificationParams

from .conftest import server_params, write_toml
from .servers import ALICE, BOB, ServerProcess, free_port, streamable

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:The logging capability is deprecated")]

BUSY, GOOD = "sim-overloaded-log0000001", "sim-ok-log000000000002"
RETRY = "retrying on another key"


def overloaded_first(sim, tmp_path, extra: str = "") -> object:
    """A provider whose first key (priority) is overloaded on every call: each call sets it aside
    once, with a warning, and answers on the second key."""
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"base_url": sim.openai_base, "keys": [BUSY, GOOD], "strategy": "priority"}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
    }
    path = write_toml(tmp_path / "keygate.toml", data)
    if extra:
        path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


class Heard:
    """What a client's logging callback received."""

    def __init__(self) -> None:
        self.messages: list[LoggingMessageNotificationParams] = []

    async def __call__(self, params: LoggingMessageNotificationParams) -> None:
        self.messages.append(params)

    def take(self) -> list[tuple[str, str]]:
        taken = [(m.level, str(m.data)) for m in self.messages]
        self.messages.clear()
        return taken


async def test_set_level_over_stdio_decides_what_a_call_tells_the_client(sim, tmp_path):
    heard = Heard()
    async with Client(server_params(overloaded_first(sim, tmp_path)), mode="legacy", logging_callback=heard) as client:
        assert client.server_capabilities.logging is not None
        # Before any setLevel: warnings and worse (a key set aside), not the chatter below them.
        result = await client.call_tool("complete", {"prompt": "one"})
        assert not result.is_error, result.content
        said = heard.take()
        assert len(said) == 1 and said[0][0] == "warning" and RETRY in said[0][1], said
        assert BUSY not in said[0][1] and BUSY[:12] not in said[0][1]

        await client.set_logging_level("error")
        await client.call_tool("complete", {"prompt": "two"})
        assert heard.take() == []

        await client.set_logging_level("debug")
        await client.call_tool("complete", {"prompt": "three"})
        assert [level for level, text in heard.take() if RETRY in text] == ["warning"]


async def test_a_clients_log_messages_never_reach_another_client(sim, tmp_path):
    tokens = '\n[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}" }\n'
    config = overloaded_first(sim, tmp_path, tokens)
    server = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    alice_heard, bob_heard, alice_again = Heard(), Heard(), Heard()
    try:
        async with (
            streamable(server.url, ALICE, logging_callback=alice_heard) as alice,
            streamable(server.url, ALICE, logging_callback=alice_again) as alice_second_session,
            streamable(server.url, BOB, logging_callback=bob_heard) as bob,
        ):
            await alice.set_logging_level("debug")
            await alice_second_session.set_logging_level("debug")
            for i in range(3):
                assert not (await bob.call_tool("complete", {"prompt": f"bob {i}"})).is_error
            assert alice_heard.take() == [] and alice_again.take() == []
            assert [level for level, _ in bob_heard.take()] == ["warning"] * 3

            assert not (await alice.call_tool("complete", {"prompt": "alice"})).is_error
            assert any(RETRY in text for _, text in alice_heard.take())
            assert alice_again.take() == [] and bob_heard.take() == []
    finally:
        server.stop()


@pytest.mark.parametrize("opt_in", [None, "warning"])
async def test_on_2026_07_28_a_request_opts_in_to_log_messages(sim, tmp_path, opt_in):
    server = ServerProcess(overloaded_first(sim, tmp_path), free_port(), {}).wait_ready()
    heard = Heard()
    try:
        async with streamable(server.url, None, modern=True, logging_callback=heard, log_level=opt_in) as client:
            assert not (await client.call_tool("complete", {"prompt": "hi"})).is_error
        said = heard.take()
        if opt_in is None:
            assert said == []
        else:
            assert len(said) == 1 and said[0][0] == "warning" and RETRY in said[0][1]
    finally:
        server.stop()


async def test_an_unknown_level_is_invalid_params_and_changes_nothing(sim, tmp_path):
    server = ServerProcess(overloaded_first(sim, tmp_path), free_port(), {}).wait_ready()
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        headers = {"accept": "application/json, text/event-stream"}
        opened = httpx2.post(f"{server.url}/mcp", json=init, headers=headers, timeout=10)
        session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        bad = {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "loud"}}
        answer = httpx2.post(f"{server.url}/mcp", json=bad, headers=session, timeout=10)
        body = answer.text
        assert '"code":-32602' in body.replace(" ", ""), body
        assert "level: expected one of debug, info" in body and "loud" in body
    finally:
        _code, stderr = server.stop()
    assert "Traceback" not in stderr


async def test_a_token_cannot_set_another_sessions_level_through_another_transport(sim, tmp_path):
    tokens = '\n[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}" }\n'
    config = overloaded_first(sim, tmp_path, tokens)
    server = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    accept = {"accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    try:
        alice = {**accept, "authorization": f"Bearer {ALICE}"}
        opened = httpx2.post(f"{server.url}/mcp", json=init, headers=alice, timeout=10)
        alice |= {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        httpx2.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=alice)
        level = {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "error"}}
        httpx2.post(f"{server.url}/mcp", json=level, headers=alice, timeout=10)
        # bob, on an SSE session of his own, names alice's streamable session in a header.
        bob_headers = {"Authorization": f"Bearer {BOB}", "mcp-session-id": alice["mcp-session-id"]}
        async with (
            sse_client(f"{server.url}/sse", headers=bob_headers) as (read, write, *_),
            ClientSession(read, write) as bob,
        ):
            await bob.initialize()
            await bob.set_logging_level("debug")
        call = {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "complete", "arguments": {"prompt": "a"}},
        }
        answer = httpx2.post(f"{server.url}/mcp", json=call, headers=alice, timeout=30).text
        assert '"id":4' in answer.replace(" ", "")
        assert "notifications/message" not in answer  # alice is still at error: bob set only his own connection
    finally:
        server.stop()
