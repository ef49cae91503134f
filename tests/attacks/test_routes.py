"""Attacks on the routes around MCP: /status and /metrics, the bind address, slow clients, and
sessions opened until nobody else can connect."""

from __future__ import annotations

import json
import socket
import time

import anyio
import httpx2
import pytest

from ..conftest import two_provider_config, write_toml
from ..servers import ALICE, BOB, ServerProcess, free_port, streamable
from .test_identity import ACCEPT, INIT, call, on_session, open_session

pytestmark = pytest.mark.anyio


def serve(
    tmp_path, sim, *, tokens: bool, server: dict | None = None, policies: dict | None = None, upstream=None, **kw
):
    """A real server: model `mini` (provider `primary`, or `upstream` when given) falls back to `big`."""
    data = two_provider_config(
        sim, ["sim-ok-route00001"], ["sim-ok-route00002"], backend="sqlite", path=str(tmp_path / "s.db")
    )
    if upstream is not None:
        data["providers"]["primary"]["base_url"] = upstream
    data["server"] = dict(server or {})
    if tokens:
        data["server"]["auth_tokens"] = {"alice": "${ALICE_TOKEN}", "bob": "${BOB_TOKEN}"}
    if policies:
        data["policies"] = policies
    config = write_toml(tmp_path / "keygate.toml", data)
    return ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}, **kw)


@pytest.fixture
def open_server(tmp_path, sim):
    """A loopback server without tokens: only the Host/Origin check stands between it and a web page."""
    process = serve(tmp_path, sim, tokens=False).wait_ready()
    yield process
    process.stop()


@pytest.mark.parametrize("path", ["/status", "/status?fragment=1", "/metrics", "/mcp", "/sse"])
async def test_a_rebinding_host_or_origin_gets_nothing_from_any_route(open_server, path):
    method = "POST" if path == "/mcp" else "GET"
    for evil in (
        {"Host": "attacker.example"},
        {"Host": "attacker.example:8931"},
        {"Origin": "http://attacker.example"},
    ):
        response = httpx2.request(method, f"{open_server.url}{path}", headers={"Accept": ACCEPT, **evil}, json=INIT)
        assert response.status_code in (400, 403, 421), (path, evil, response.status_code)
        assert "key" not in response.text.lower() and "keygate_" not in response.text
    assert httpx2.get(f"{open_server.url}/healthz", headers={"Host": "attacker.example"}).status_code == 200


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "no-such-host.invalid"])
def test_a_bind_that_is_not_provably_loopback_needs_a_token(tmp_path, sim, host):
    process = serve(tmp_path, sim, tokens=False, host=host)
    code = process.proc.wait(timeout=20)
    _code, stderr = process.stop()
    assert code == 2 and "refusing to listen on" in stderr and "KEYGATE_AUTH_TOKEN" in stderr
    assert "Traceback" not in stderr


@pytest.fixture
def team(tmp_path, sim):
    """alice is limited to the model `big`; bob is governed by no policy (an operator)."""
    policies = {"big-only": {"tokens": ["alice"], "models": ["big"]}}
    process = serve(tmp_path, sim, tokens=True, policies=policies).wait_ready()
    yield process
    process.stop()


async def test_the_status_page_shows_a_token_nothing_outside_its_policy(team, sim):
    httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {"sim-ok-route00001": {"behavior": "ratelimit"}}})
    async with streamable(team.url, BOB) as bob:  # mini is rate-limited: bob's call falls back mini → big
        result = await bob.call_tool("complete", {"prompt": "fall back please"})
        assert result.structured_content["model"] == "big"
    mine = httpx2.get(f"{team.url}/status?fragment=1", headers={"Authorization": f"Bearer {ALICE}"})
    assert mine.status_code == 200
    assert "mini" not in mine.text and "primary:" not in mine.text
    operator = httpx2.get(f"{team.url}/status?fragment=1", headers={"Authorization": f"Bearer {BOB}"})
    assert "<td>mini</td><td>big</td>" in operator.text


async def test_metrics_are_for_operators_only(team):
    async with streamable(team.url, BOB) as bob:
        await bob.call_tool("complete", {"prompt": "count me"})
    governed = httpx2.get(f"{team.url}/metrics", headers={"Authorization": f"Bearer {ALICE}"})
    assert governed.status_code == 403 and "operator" in governed.json()["message"]
    assert "keygate_" not in governed.text
    operator = httpx2.get(f"{team.url}/metrics", headers={"Authorization": f"Bearer {BOB}"})
    assert operator.status_code == 200 and 'caller="bob"' in operator.text


async def test_operator_tokens_name_the_only_metrics_readers(tmp_path, sim):
    process = serve(tmp_path, sim, tokens=True, server={"operator_tokens": ["alice"]}).wait_ready()
    try:
        assert httpx2.get(f"{process.url}/metrics", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200
        assert httpx2.get(f"{process.url}/metrics", headers={"Authorization": f"Bearer {BOB}"}).status_code == 403
        assert httpx2.get(f"{process.url}/metrics").status_code == 401
    finally:
        process.stop()


@pytest.fixture
def capped(tmp_path, sim):
    process = serve(tmp_path, sim, tokens=True, server={"max_sessions_per_token": 2}).wait_ready()
    yield process
    process.stop()


async def test_one_token_opening_sessions_closes_its_own_oldest_never_anothers(capped):
    bobs = open_session(capped.url, BOB)
    first, second = open_session(capped.url, ALICE), open_session(capped.url, ALICE)
    third = open_session(capped.url, ALICE)  # over alice's cap of 2: her oldest idle session goes
    assert on_session(capped.url, ALICE, first, "POST", call("list_models", {})).status_code == 404
    for alive in (second, third):
        assert on_session(capped.url, ALICE, alive, "POST", call("list_models", {})).status_code == 200
    assert on_session(capped.url, BOB, bobs, "POST", call("list_models", {})).status_code == 200
    for _ in range(20):  # a flood of sessions by alice never grows past her cap nor touches bob's
        open_session(capped.url, ALICE)
    assert on_session(capped.url, BOB, bobs, "POST", call("list_models", {})).status_code == 200


async def test_when_every_session_is_busy_a_new_one_is_refused_with_429(capped, sim):
    httpx2.post(f"{sim.url}/_sim/reset", json={"defaults": {"latency_ms": 3000}}).raise_for_status()
    sessions = [open_session(capped.url, ALICE), open_session(capped.url, ALICE)]
    results: list[int] = []

    async def slow_call(session_id: str) -> None:
        body = call("complete", {"prompt": "slow"})
        headers = {"Authorization": f"Bearer {ALICE}", "Accept": ACCEPT, "mcp-session-id": session_id}
        async with httpx2.AsyncClient(timeout=30) as http:
            results.append((await http.post(f"{capped.url}/mcp", json=body, headers=headers)).status_code)

    async with anyio.create_task_group() as tg:
        for session_id in sessions:
            tg.start_soon(slow_call, session_id)
        await anyio.sleep(1.0)
        refused = httpx2.post(
            f"{capped.url}/mcp", json=INIT, headers={"Authorization": f"Bearer {ALICE}", "Accept": ACCEPT}
        )
        assert refused.status_code == 429 and "max_sessions_per_token" in refused.json()["message"]
        assert open_session(capped.url, BOB)  # another token is not affected
    assert results == [200, 200]


@pytest.fixture
def strict(tmp_path, sim):
    process = serve(tmp_path, sim, tokens=True, server={"header_timeout_s": 1.5, "body_timeout_s": 1.5}).wait_ready()
    yield process
    process.stop()


def test_a_client_trickling_its_headers_is_disconnected(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        for i in range(20):  # one header byte every 0.5 s would keep uvicorn's own timer alive forever
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % i)
                time.sleep(0.5)
                if sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    closed = True
                    break
            except BlockingIOError:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - started < 6


def test_a_client_trickling_its_body_gets_408(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\n"
        sock.sendall(head.encode() + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{")
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 8:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 6


@pytest.mark.parametrize("header", ["mcp-protocol-version", "mcp-session-id"])
async def test_a_repeated_session_header_cannot_slip_past_the_session_cap(capped, header):
    session_id = open_session(capped.url, ALICE)
    values = ["2025-11-25", "2026-07-28"] if header == "mcp-protocol-version" else [session_id, "f" * 32]
    headers = [("authorization", f"Bearer {ALICE}"), ("accept", ACCEPT), *((header, v) for v in values)]
    for method in ("POST", "DELETE"):
        response = httpx2.request(method, f"{capped.url}/mcp", headers=headers, json=INIT, timeout=5)
        assert response.status_code == 400 and f"more than one {header}" in response.json()["message"]
    assert on_session(capped.url, ALICE, session_id, "POST", call("list_models", {})).status_code == 200


async def test_sessions_held_open_by_a_listening_stream_still_count(capped):
    """A session whose client listens on GET is busy, not forgotten: the cap still holds."""
    async with httpx2.AsyncClient(timeout=10) as http:
        streams = []
        for _ in range(2):
            session_id = open_session(capped.url, ALICE)
            headers = {"Authorization": f"Bearer {ALICE}", "Accept": "text/event-stream", "mcp-session-id": session_id}
            headers["mcp-protocol-version"] = "2025-11-25"
            stream = http.stream("GET", f"{capped.url}/mcp", headers=headers)
            response = await stream.__aenter__()
            assert response.status_code == 200
            streams.append(stream)
        refused = httpx2.post(
            f"{capped.url}/mcp", json=INIT, headers={"Authorization": f"Bearer {ALICE}", "Accept": ACCEPT}
        )
        assert refused.status_code == 429
        for stream in streams:
            await stream.__aexit__(None, None, None)


def test_a_caller_without_a_token_cannot_make_the_server_hold_a_body(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3900000\r\n\r\n" + b"x" * 1000)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
        assert time.monotonic() - started < 1.0  # at once, not after the body deadline


def test_a_declared_oversized_body_is_refused_before_it_is_read(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 999999999\r\n\r\n"
        sock.sendall(head.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("method", ["DELETE", "GET"])
def test_a_body_trickled_on_any_method_gets_408(strict, method):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        head = (
            f"{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 50\r\n\r\n"
        )
        sock.sendall(head.encode() + b"{")
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert time.monotonic() - started < 6


async def test_head_or_post_on_the_sse_route_is_405_without_a_traceback(team):
    for method in ("HEAD", "POST", "PUT"):
        response = httpx2.request(method, f"{team.url}/sse", headers={"Authorization": f"Bearer {BOB}"}, timeout=5)
        assert response.status_code == 405
    _code, stderr = team.stop()
    assert "Traceback" not in stderr and "Exception in ASGI application" not in stderr


@pytest.fixture
def patient(tmp_path, sim):
    """A server whose header deadline is far away: what cuts a client off here is the size cap."""
    process = serve(tmp_path, sim, tokens=True, server={"header_timeout_s": 60}).wait_ready()
    yield process
    process.stop()


@pytest.mark.parametrize("where", ["header", "request line"])
def test_an_endless_request_head_is_refused_at_16_kb(patient, where):
    """One endless header (or URL) must not pile up in the server until its deadline (60 s here):
    the server answers 400 and closes. (How much the client gets into kernel buffers before that
    depends on the machine's load, so it is not what is checked.)"""
    start = b"GET /healthz?" if where == "request line" else b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    closed_by_server = False
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        try:
            sock.sendall(start)
            for _ in range(512):  # up to 4 MB
                sock.sendall(b"a" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            closed_by_server = True
        except TimeoutError:
            pass  # buffers full: the server stopped reading (it closes, or it is stuck)
        if not closed_by_server:
            try:
                answer = sock.recv(200)  # a server still reading would leave this waiting 10 s
                closed_by_server = answer == b"" or answer.startswith(b"HTTP/1.1 400")
            except ConnectionResetError:
                closed_by_server = True
            except TimeoutError:
                pass
    assert closed_by_server
    assert httpx2.get(f"{patient.url}/healthz").status_code == 200


def test_a_large_body_behind_a_small_head_is_not_mistaken_for_a_large_head(patient):
    """The head cap counts only the head, even when the body arrives in the same packet."""
    body = json.dumps(INIT).encode() + b" " * 200_000
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALICE}\r\nAccept: {ACCEPT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", patient.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 200"), answer
