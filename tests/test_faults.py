"""Network and upstream faults, driven by the simulator over real HTTP: each is classified, none
disables a key, none returns a truncated answer, and the call ends with a complete answer from
another key or model, or with a clear error."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
import zlib

import anyio
import httpx2
import pytest

from mcp_keygate.calls import CallTimedOut
from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.keys import ApiKey
from mcp_keygate.messages import Message
from mcp_keygate.outcomes import Outcome
from mcp_keygate.providers import CallParams, OpenAIProvider, send_attempt
from mcp_keygate.providers.base import iter_sse
from mcp_keygate.router import RouteFailed

from .conftest import sim_log

pytestmark = pytest.mark.anyio

API_BASE = {"openai": "openai_base", "anthropic": "url", "gemini": "url"}
UPSTREAM = {"openai": "gpt-4.1-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
EXPECTED = {
    "hang": {"timeout"},
    "slowdrip": {"timeout"},
    "reset": {"upstream_error"},
    "html502": {"upstream_error"},
    "html504": {"upstream_error", "timeout"},
    "empty200": {"upstream_error"},
    "malformed": {"upstream_error"},
    "huge": {"upstream_error"},
    "streamcut": {"upstream_error"},
    "streamerror": {"upstream_error", "overloaded"},
    "longline": {"upstream_error"},
    "gzipbomb": {"upstream_error"},
}


def config_for(sim, api: str, keys: list[str], *, stream: bool, timeout_s: float = 1.5, **extra) -> dict:
    return {
        "state": {"backend": "memory"},
        "providers": {
            "p": {
                "type": api,
                "base_url": getattr(sim, API_BASE[api]),
                "keys": keys,
                "strategy": "priority",
                "stream": stream,
                "timeout_s": timeout_s,
            },
        },
        "models": {"m": {"provider": "p", "model": UPSTREAM[api]}},
        **extra,
    }


CASES = [(api, fault, stream) for fault in EXPECTED for stream in (False, True) for api in ("openai",)] + [
    (api, fault, stream)
    for api in ("anthropic", "gemini")
    for fault in ("reset", "html502", "malformed", "empty200", "streamcut")
    for stream in (False, True)
]


@pytest.mark.parametrize(("api", "fault", "stream"), CASES)
async def test_each_fault_is_classified_and_the_answer_comes_whole_from_the_next_key(sim, api, fault, stream):
    broken, good = f"sim-{fault}-{api}-f01", f"sim-ok-{api}-after-fault"
    async with Keygate(parse_config(config_for(sim, api, [broken, good], stream=stream))) as gate:
        started = time.monotonic()
        result = await gate.complete(CompleteRequest(prompt="Say it all.", system="s"))
        elapsed = time.monotonic() - started
        rows = (await gate.views.key_status()).keys
    first, last = result.attempts[0], result.attempts[-1]
    assert first.outcome in EXPECTED[fault], (fault, first)
    assert last.outcome == "ok" and result.key_id == gate.keys["p"][1].key_id
    assert result.text == f'[{UPSTREAM[api]}] I received 1 message(s), system prompt: yes. You said: "Say it all."'
    assert all(row.state == "ready" for row in rows)  # a network fault never disables or cools a key
    assert elapsed < 10  # hangs and slow drips end at the 1.5 s attempt deadline


async def test_when_every_key_fails_the_call_ends_with_a_clear_error(sim):
    data = config_for(sim, "openai", ["sim-html502-only-one", "sim-reset-only-two"], stream=True)
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="hi", max_wait_s=0))
    message = str(info.value)
    assert "upstream_error" in message and "502" in message
    assert "<html>" not in message  # the proxy's page is summarised, not pasted


async def test_connection_refused_moves_to_the_next_model(sim):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here once the socket closes
    data = config_for(sim, "openai", ["sim-ok-dead0000001"], stream=False)
    data["providers"]["dead"] = {
        "type": "openai",
        "base_url": f"http://127.0.0.1:{dead_port}/v1",
        "keys": ["k-dead-0001"],
    }
    data["models"] = {"gone": {"provider": "dead", "model": "x"}, "m": {"provider": "p", "model": "gpt-4.1"}}
    data["routes"] = {"default": ["gone", "m"]}
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="hi"))
        dead_row = (await gate.views.key_status("dead")).keys[0]
    assert [a.outcome for a in result.attempts] == ["unreachable", "ok"] and result.model == "m"
    assert dead_row.state == "ready"


async def test_an_unreachable_upstream_fails_at_once_naming_the_url_not_after_max_wait(sim):
    """A refused connection is not a busy upstream: one attempt, no 20-second retry loop, and a message
    that names the setting to fix."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    url = f"http://127.0.0.1:{dead_port}/v1"
    data = config_for(sim, "openai", [], stream=False)
    data["providers"] = {"dead": {"type": "openai", "base_url": url, "keys": ["k-dead-0001", "k-dead-0002"]}}
    data["models"] = {"gone": {"provider": "dead", "model": "x"}}
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="hi"))  # the default max_wait_s of 20 s
        assert [a.outcome for a in info.value.attempts] == ["unreachable"]  # one key tried, not each
        assert f"providers.dead.base_url = {url}: connection refused" in str(info.value)
        assert "check the base_url" in str(info.value)
        with pytest.raises(RouteFailed) as again:  # held back: no new connection attempt for a while
            await gate.complete(CompleteRequest(prompt="hi"))
        assert again.value.attempts == [] and "connection refused" in str(again.value)


def test_an_unreachable_provider_is_held_back_longer_each_time():
    from mcp_keygate.backoff import Backoffs

    backoffs = Backoffs()
    waits = [backoffs.mark_unreachable("p", "connection refused", 100.0) for _ in range(8)]
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    assert backoffs.unreachable("p", 159.0) is not None and backoffs.unreachable("p", 161.0) is None
    backoffs.mark_reachable("p")
    assert backoffs.mark_unreachable("p", "connection refused", 200.0) == 2


async def test_a_connect_timeout_is_a_timeout_not_a_key_problem():
    """Narrow unit test: loopback cannot black-hole a connect, so the transport raises it."""

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectTimeout("connect timed out", request=request)

    provider = OpenAIProvider("p", "https://api.example.invalid/v1")
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(refuse)) as client:
        attempt = await send_attempt(
            provider, client, ApiKey.create("p", "sk-test-000000000000", 0), "m", [Message("user", "hi")], CallParams()
        )
    assert attempt.verdict.outcome is Outcome.TIMEOUT and attempt.completion is None


async def test_the_whole_call_has_a_deadline(sim):
    data = config_for(sim, "openai", ["sim-hang-call-deadline"], stream=False, timeout_s=30)
    data["limits"] = {"call_timeout_s": 1.0}
    async with Keygate(parse_config(data)) as gate:
        with anyio.fail_after(10), pytest.raises(CallTimedOut, match="call_timeout_s = 1 s"):
            await gate.complete(CompleteRequest(prompt="hi"))
        assert await gate.store.list_conversations() == []
        assert gate.calls.in_flight.count == 0


async def test_redirects_are_not_followed_with_the_key(sim):
    """A malicious or misconfigured upstream cannot bounce the key to another host."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    from mcp_keygate.simulator.runner import SimulatorThread

    hits: list[str] = []

    async def bounce(request):
        hits.append(request.headers.get("authorization", ""))
        return RedirectResponse(f"{sim.openai_base}/chat/completions", status_code=307)

    with SimulatorThread() as evil:
        evil.app.router.routes.insert(0, Route("/v1/chat/completions", bounce, methods=["POST"]))
        assert isinstance(evil.app, Starlette)
        data = config_for(evil, "openai", ["sim-ok-redirect-01"], stream=False)
        async with Keygate(parse_config(data)) as gate:
            with pytest.raises(RouteFailed, match="redirect"):
                await gate.complete(CompleteRequest(prompt="hi", max_wait_s=0))
    assert len(hits) == 1  # one attempt; the 307 was not followed
    assert sim_log(sim) == []  # the redirect target never saw the key


async def attempt_at(base_url: str, key: str, *, stream: bool, max_bytes: int = 1_000_000):
    provider = OpenAIProvider("p", base_url)
    async with httpx2.AsyncClient(timeout=10) as client:
        return await send_attempt(
            provider,
            client,
            ApiKey.create("p", key, 0),
            "gpt-4.1-mini",
            [Message("user", "Say it all.")],
            CallParams(stream=stream),
            deadline_s=30,
            max_bytes=max_bytes,
        )


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fault", ["longline", "gzipbomb"])
async def test_a_reply_past_max_bytes_is_refused_before_it_is_held(sim, fault, stream):
    """A line that never ends (256 MiB) and a gzip bomb (1 MB inflating to 1 GiB) are cut off at
    `max_bytes` of decoded body: the process never holds much more than that (the simulator serving them
    runs in this process too, so its buffers count as well)."""
    tracemalloc.start()
    try:
        attempt = await attempt_at(sim.openai_base, f"sim-{fault}-unit-0001", stream=stream)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert attempt.verdict.outcome is Outcome.UPSTREAM_ERROR and attempt.completion is None
    assert attempt.verdict.reason == f"the {'stream' if stream else 'reply'} exceeded 1000000 bytes"
    assert peak < 8_000_000, f"{peak:,} bytes traced"


TEXT = "héllo wörld — 狐 🦊 ok"


def openai_body(stream: bool) -> bytes:
    """A complete OpenAI reply; the stream ends its lines with CRLF, CR and LF, and has comments."""
    if not stream:
        reply = {"model": "m", "choices": [{"message": {"content": TEXT}, "finish_reason": "stop"}]}
        return json.dumps(reply, ensure_ascii=False).encode()
    first = json.dumps({"model": "m", "choices": [{"delta": {"content": TEXT[:8]}}]}, ensure_ascii=False)
    last = json.dumps({"choices": [{"delta": {"content": TEXT[8:]}, "finish_reason": "stop"}]}, ensure_ascii=False)
    return f": keep-alive\r\ndata: {first}\r\n\r\n: ping\rdata: {last}\r\rdata: [DONE]\n\n".encode()


ENCODE = {
    "identity": lambda body: body,
    "gzip": lambda body: zlib.compress(body, wbits=31),
    "deflate": zlib.compress,
    "rawdeflate": lambda body: zlib.compress(body, wbits=-15),  # `deflate` without the zlib wrapper
    "gzipjunk": lambda body: zlib.compress(body, wbits=31) + b"\0" * 100,  # padding after the gzip trailer
    "badgzip": lambda body: b"this is not gzip at all",
    "br": lambda body: b"\x8b\x03\x80hello\x03",
}


@pytest.fixture
def odd_upstream():
    """An OpenAI upstream on loopback that encodes its answer as the key says and sends it 3 bytes at a
    time, so compressed blocks, line ends and UTF-8 characters are split across network reads."""
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from mcp_keygate.simulator.runner import SimulatorThread

    seen: list[str] = []

    async def answer(request):
        seen.append(request.headers.get("accept-encoding", ""))
        stream = bool((await request.json()).get("stream"))
        encoding = request.headers["authorization"].split("-")[1]
        body = ENCODE[encoding](openai_body(stream))

        async def pieces():
            for i in range(0, len(body), 3):
                yield body[i : i + 3]
                await anyio.sleep(0.002)

        header = {"rawdeflate": "deflate", "badgzip": "gzip", "gzipjunk": "gzip"}.get(encoding, encoding)
        headers = {"content-encoding": header} if encoding != "identity" else {}
        media = "text/event-stream" if stream else "application/json"
        return StreamingResponse(pieces(), headers=headers, media_type=media)

    with SimulatorThread() as upstream:
        upstream.app.router.routes.insert(0, Route("/v1/chat/completions", answer, methods=["POST"]))
        upstream.seen = seen
        yield upstream


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "rawdeflate", "gzipjunk"])
async def test_compressed_and_oddly_split_replies_still_parse(odd_upstream, encoding, stream):
    attempt = await attempt_at(odd_upstream.openai_base, f"k-{encoding}-000000001", stream=stream)
    assert attempt.verdict.outcome is Outcome.OK, attempt.verdict
    assert attempt.completion is not None and attempt.completion.text == TEXT
    assert odd_upstream.seen == ["gzip, deflate"]  # only what can be inflated within bounds is asked for


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("encoding", "reason"), [("badgzip", "the reply is not valid gzip"), ("br", "unsupported content-encoding 'br'")]
)
async def test_an_undecodable_or_unknown_encoding_is_an_upstream_error(odd_upstream, encoding, reason, stream):
    attempt = await attempt_at(odd_upstream.openai_base, f"k-{encoding}-000000001", stream=stream)
    assert attempt.verdict.outcome is Outcome.UPSTREAM_ERROR and attempt.completion is None
    assert attempt.verdict.reason.startswith(reason), attempt.verdict.reason


async def test_sse_lines_split_anywhere_decode_the_same():
    """Narrow unit test: every two-piece split of a stream (CRLF, CR, LF, a BOM, multi-byte characters)."""
    raw = "\ufeffevent: a\r\ndata: 狐\r\ndata: é🦊\r\n\r\n: c\rdata: x\r\rdata: y\n\ndata: tail".encode()
    expected = [("a", "狐\né🦊"), (None, "x"), (None, "y"), (None, "tail")]

    async def pieces(cut: int):
        yield raw[:cut]
        yield raw[cut:]

    for cut in range(len(raw) + 1):
        response = httpx2.Response(200, content=pieces(cut))
        assert [event async for event in iter_sse(response, 1000)] == expected, cut
