"""Network and upstream faults, driven by the simulator over real HTTP: each is classified, none
disables a key, none returns a truncated answer, and the call ends with a complete answer from
another key or model, or with a clear error."""

from __future__ import annotations

import socket
import time

import anyio
import httpx2
import pytest

from mcp_keygate.config import parse_config
from mcp_keygate.gateway import CallTimedOut, Keygate
from mcp_keygate.keys import ApiKey
from mcp_keygate.messages import Message
from mcp_keygate.outcomes import Outcome
from mcp_keygate.providers import CallParams, OpenAIProvider, send_attempt
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
        result = await gate.complete(prompt="Say it all.", system="s")
        elapsed = time.monotonic() - started
        rows = (await gate.key_status()).keys
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
            await gate.complete(prompt="hi", max_wait_s=0)
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
        result = await gate.complete(prompt="hi")
        dead_row = (await gate.key_status("dead")).keys[0]
    assert [a.outcome for a in result.attempts] == ["upstream_error", "ok"] and result.model == "m"
    assert dead_row.state == "ready"


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
            await gate.complete(prompt="hi")
        assert await gate.store.list_conversations() == []
        assert gate.in_flight == 0


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
                await gate.complete(prompt="hi", max_wait_s=0)
    assert len(hits) == 1  # one attempt; the 307 was not followed
    assert sim_log(sim) == []  # the redirect target never saw the key
