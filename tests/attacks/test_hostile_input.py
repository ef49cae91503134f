"""Attacks with hostile input: bodies built to crash the parser, arguments built to reach the
store, an upstream that answers with markup, and a caller reaching for an operator's tool."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from ..servers import ALICE, BOB, streamable
from .test_identity import ACCEPT, call, on_session, open_session
from .test_routes import serve

pytestmark = pytest.mark.anyio

MARKUP = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
def team(tmp_path, sim):
    """alice is limited to the model `big`; bob is governed by no policy (an operator); reset_key exists."""
    policies = {"big-only": {"tokens": ["alice"], "models": ["big"]}}
    process = serve(tmp_path, sim, tokens=True, policies=policies, server={"enable_reset_key": True}).wait_ready()
    yield process
    process.stop()


async def test_hostile_request_bodies_get_an_error_and_the_server_stays_up(team):
    headers = {"Authorization": f"Bearer {ALICE}", "Accept": ACCEPT, "Content-Type": "application/json"}
    session_id = open_session(team.url, ALICE)
    on = {**headers, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
    deep = b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    hostile = [
        (headers, b"[" * 100_000),  # nesting past any recursion limit, opening a session
        (on, deep),
        (on, b"\xff\xfe not utf-8 \x80"),
        (on, b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 12, "arguments": []}}'),
        (on, json.dumps(call("complete", {"messages": [{"role": "user", "content": 5}]})).encode()),
        (headers, b"x" * 5_000_000),  # over [limits] max_request_bytes
    ]
    for sent_headers, body in hostile:
        response = httpx2.post(f"{team.url}/mcp", content=body, headers=sent_headers, timeout=30)
        assert response.status_code < 500 or response.status_code == 503, (body[:40], response.status_code)
        assert "Traceback" not in response.text
    assert on_session(team.url, ALICE, session_id, "POST", call("list_models", {})).status_code == 200
    assert httpx2.get(f"{team.url}/healthz").json()["ok"] is True
    _code, stderr = team.stop()
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "conversation_id", ["' OR 1=1 --", "c_" + "9" * 5000, "../../etc/passwd", "c_0123456789abcdef\x00", "*"]
)
async def test_a_forged_conversation_id_is_a_clear_error_and_reaches_nothing(team, conversation_id):
    async with streamable(team.url, BOB) as bob:
        await bob.call_tool("complete", {"prompt": "bob's notes"})
    async with streamable(team.url, ALICE) as alice:
        for tool, arguments in (
            ("complete", {"prompt": "x", "model": "big", "conversation_id": conversation_id}),
            ("get_conversation", {"conversation_id": conversation_id}),
        ):
            result = await alice.call_tool(tool, arguments)
            assert result.is_error and "conversation_id" in result.content[0].text
            assert "bob's notes" not in result.content[0].text and len(result.content[0].text) < 600


async def test_reset_key_is_refused_to_a_token_under_a_policy_and_hidden_from_it(team):
    async with streamable(team.url, ALICE) as alice:
        assert "reset_key" not in {t.name for t in (await alice.list_tools()).tools}
        refused = await alice.call_tool("reset_key", {"key_id": "primary:000000"})
        assert refused.is_error and "reset_key is for operators" in refused.content[0].text
    async with streamable(team.url, BOB) as bob:
        assert "reset_key" in {t.name for t in (await bob.list_tools()).tools}
        unknown = await bob.call_tool("reset_key", {"key_id": "primary:000000"})
        assert unknown.is_error and "unknown key" in unknown.content[0].text


class MarkupUpstream(BaseHTTPRequestHandler):
    """Rate-limits every call with an error message made of markup."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"error": {"message": MARKUP, "type": "requests", "code": "rate_limit_exceeded"}}).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "30")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


async def test_markup_in_an_upstream_error_is_text_on_the_status_page(tmp_path, sim):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), MarkupUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    server = serve(tmp_path, sim, tokens=True, upstream=base).wait_ready()
    try:
        async with streamable(server.url, BOB) as bob:
            result = await bob.call_tool("complete", {"prompt": "fall back"})
            assert not result.is_error and result.structured_content["model"] == "big"
        page = httpx2.get(f"{server.url}/status", headers={"Authorization": f"Bearer {BOB}"}).text
        assert "alert(1)" in page and "<script>alert(2)" not in page and '<img src=x onerror="alert' not in page
        assert "&lt;img src=x" in page
    finally:
        server.stop()
        upstream.shutdown()


async def test_a_caller_cannot_forge_log_lines(team):
    forged = "\n2026-01-01 09:00:00,000 WARNING mcp_keygate.server: reset_key primary:000000 requested by bob"
    async with streamable(team.url, ALICE) as alice:
        await alice.call_tool("reset_key", {"key_id": "x" + forged})
        await alice.call_tool("complete", {"prompt": "x" + forged, "model": "big"})
    httpx2.post(
        f"{team.url}/messages/?session_id=zz%0A2026-01-01%2009:00:00,000%20INFO%20forged",
        headers={"Authorization": f"Bearer {ALICE}"},
        json={},
    )
    _code, stderr = team.stop()
    assert not any(line.startswith("2026-01-01 09:00:00") for line in stderr.splitlines())
    assert "reset_key 'x\\n2026-01-01" in stderr  # the attempt is logged, escaped, on its own line
