"""Both upstream clients — httpx2's own transport and the aiohttp-backed one — behind the same
httpx2 API, against real HTTP: plain and streamed answers, each fault classified the same way,
replies bounded as they are decoded, and a cancelled call closing its upstream connection."""

from __future__ import annotations

import asyncio
import json
import socket

import anyio
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate

from .test_faults import EXPECTED, UPSTREAM, config_for

pytestmark = pytest.mark.anyio
CLIENTS = ["httpx2", "aiohttp"]


def with_client(data: dict, client: str) -> dict:
    return {**data, "server": {"upstream_client": client}}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_answers_and_faults_are_the_same_through_either_client(sim, client, stream):
    for fault in ("hang", "slowdrip", "reset", "html502", "streamcut", "gzipbomb", "huge", "longline"):
        broken, good = f"sim-{fault}-openai-{client}", f"sim-ok-openai-{client}-after"
        data = with_client(config_for(sim, "openai", [broken, good], stream=stream), client)
        async with Keygate(parse_config(data)) as gate:
            result = await gate.complete(CompleteRequest(prompt="Say it all.", system="s"))
        assert result.attempts[0].outcome in EXPECTED[fault], (fault, result.attempts[0])
        assert result.attempts[-1].outcome == "ok"
        assert (
            result.text
            == f'[{UPSTREAM["openai"]}] I received 1 message(s), system prompt: yes. You said: "Say it all."'
        )


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_refused_connection_is_unreachable_with_either_client(sim, client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    data = with_client(config_for(sim, "openai", [], stream=False), client)
    data["providers"] = {
        "dead": {"type": "openai", "base_url": f"http://127.0.0.1:{dead_port}/v1", "keys": ["k-dead-1"]}
    }
    data["models"] = {"gone": {"provider": "dead", "model": "x"}}
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(Exception) as info:
            await gate.complete(CompleteRequest(prompt="hi"))
    assert [a.outcome for a in info.value.attempts] == ["unreachable"]
    assert "connection refused" in str(info.value)


class Stalling:
    """An upstream that answers headers and one stream event, then waits; it notes when the client
    closes the connection."""

    def __init__(self) -> None:
        self.got_request = anyio.Event()
        self.closed_by_client = anyio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        event = b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        self.got_request.set()
        while await reader.read(1024):  # the request body's leftovers, then EOF when the client closes
            pass
        self.closed_by_client.set()
        writer.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_cancelled_call_closes_its_upstream_connection(client):
    upstream = Stalling()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "keys": ["k-stall-01"]}},
        "models": {"m": {"provider": "p", "model": "gpt-4.1-mini"}},
        "server": {"upstream_client": client},
    }
    try:
        async with Keygate(parse_config(data)) as gate:
            async with anyio.create_task_group() as tg:
                tg.start_soon(gate.complete, CompleteRequest(prompt="hi"))
                with anyio.fail_after(20):
                    await upstream.got_request.wait()
                tg.cancel_scope.cancel()  # the MCP client gave up on the call
            with anyio.fail_after(20):
                await upstream.closed_by_client.wait()  # while the gateway (and its pool) is still up
            assert upstream.closed_by_client.is_set()
    finally:
        server.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_response_closed_before_its_end_closes_its_connection(client):
    """What the providers rely on when a call is cancelled mid-answer: `aclose()` on a response not
    read to its end drops the connection (it is never handed back to the pool half-read)."""
    import httpx2

    from mcp_keygate.upstream_aiohttp import AiohttpTransport

    upstream = Stalling()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport() if client == "aiohttp" else None
    try:
        async with httpx2.AsyncClient(transport=transport) as http:
            request = http.build_request("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json={"stream": True})
            response = await http.send(request, stream=True)
            async for _ in response.aiter_raw():
                break  # one event of a stream that goes on
            await response.aclose()
            with anyio.fail_after(20):
                await upstream.closed_by_client.wait()  # while `response` (and the client) are still alive
            assert response.is_closed and upstream.closed_by_client.is_set()
    finally:
        server.close()


class LongHeader:
    """An upstream answering with one 9,000-byte header line (over aiohttp's 8 KB default)."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        await reader.readexactly(length)
        body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"long header ok"},"finish_reason":"stop"}]}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-big: "
            + b"b" * 9000
            + b"\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_long_response_header_line_is_read_by_either_client(client):
    upstream = await asyncio.start_server(LongHeader().serve, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    data = {
        "state": {"backend": "memory"},
        "server": {"upstream_client": client},
        "providers": {
            "long": {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "keys": ["k-long-1"], "stream": False}
        },
        "models": {"m": {"provider": "long", "model": "x"}},
    }
    try:
        async with Keygate(parse_config(data)) as gate:
            result = await gate.complete(CompleteRequest(prompt="hi"))
    finally:
        upstream.close()
    assert result.text == "long header ok"


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_key_no_http_library_can_send_fails_over_to_the_next_key(sim, client):
    """A control character inside a key (or a configured header) is refused by the HTTP library:
    that attempt fails like a network error and the call goes on to the next key."""
    broken, good = "sim-ok-broken\nkey-1", f"sim-ok-openai-{client}-good"
    data = with_client(config_for(sim, "openai", [broken, good], stream=False), client)
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="hi"))
    assert [a.outcome for a in result.attempts] == ["upstream_error", "ok"]
    assert "broken" not in json.dumps(result.model_dump())
