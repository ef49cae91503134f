"""Attacks on identity: a token must get exactly what its policy allows, on every protocol era,
and never another token's session, stream, conversations or the stdio owner's rights."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest

from ..servers import ALICE, BOB, ServerProcess, free_port, streamable
from ..test_presets_policies import preset_config

pytestmark = pytest.mark.anyio

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "evil", "version": "1"}},
}
ACCEPT = "application/json, text/event-stream"


@pytest.fixture
def team(sim, tmp_path):
    """alice may only use the route `cheap` (and so the preset translate); bob is unrestricted."""
    policy = '[policies.team-cheap]\ntokens = ["alice"]\nroutes = ["cheap"]\nrpm = 100\n'
    tokens = '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}" }'
    config = tmp_path / "keygate.toml"
    config.write_text(preset_config(sim, f'[state]\npath = "{tmp_path / "s.db"}"\n{tokens}', policy), encoding="utf-8")
    process = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    yield process
    process.stop()


def call(name: str, arguments: dict, request_id: int = 2) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@pytest.mark.parametrize("order", ["junk first", "token first", "two valid tokens"])
async def test_a_second_authorization_header_is_refused_with_400(team, order):
    first, second = {
        "junk first": ("Bearer junk", f"Bearer {ALICE}"),
        "token first": (f"Bearer {ALICE}", "Bearer junk"),
        "two valid tokens": (f"Bearer {ALICE}", f"Bearer {BOB}"),
    }[order]
    headers = [("authorization", first), ("authorization", second), ("accept", ACCEPT)]
    for path, method in (("/mcp", "POST"), ("/sse", "GET"), ("/status", "GET"), ("/metrics", "GET")):
        response = httpx2.request(method, f"{team.url}{path}", headers=headers, json=INIT, timeout=5)
        assert response.status_code == 400, (path, response.text)
        assert "more than one Authorization header" in response.json()["message"]


@pytest.mark.parametrize("modern", [False, True], ids=["2025-11-25", "2026-07-28"])
async def test_a_restricted_token_gets_only_its_policy_on_every_protocol_era(team, modern):
    async with streamable(team.url, ALICE, modern=modern) as alice:
        refused = await alice.call_tool("complete", {"prompt": "hi", "model": "default"})
        assert refused.is_error and "may not use the route 'default'" in refused.content[0].text
        hidden = await alice.call_tool("summarize", {"text": "x"})
        assert hidden.is_error and "may not use the preset 'summarize'" in hidden.content[0].text
        tools = {t.name for t in (await alice.list_tools()).tools}
        assert "summarize" not in tools and "translate" in tools
        prompts = {p.name for p in (await alice.list_prompts()).prompts}
        assert "summarize" not in prompts
        ok = await alice.call_tool("complete", {"prompt": "hi", "model": "cheap"})
        assert not ok.is_error
        usage = (await alice.call_tool("usage", {})).structured_content
        assert {line["owner"] for line in usage["lines"]} == {"alice"}


async def test_a_token_never_sees_another_tokens_conversations(team):
    async with streamable(team.url, BOB) as bob:
        secret = await bob.call_tool("complete", {"prompt": "bob's secret plan"})
        cid = secret.structured_content["conversation_id"]
    async with streamable(team.url, ALICE) as alice:
        listed = (await alice.call_tool("list_conversations", {})).structured_content["conversations"]
        assert cid not in [c["conversation_id"] for c in listed]
        stolen = await alice.call_tool("get_conversation", {"conversation_id": cid})
        assert stolen.is_error and "does not exist" in stolen.content[0].text
        resource = await alice.read_resource("keygate://conversations")
        assert "secret plan" not in resource.contents[0].text


def open_session(url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
    response = httpx2.post(f"{url}/mcp", json=INIT, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    httpx2.post(f"{url}/mcp", json=note, headers={**headers, "mcp-session-id": session_id}, timeout=10)
    return session_id


def on_session(url: str, token: str, session_id: str, method: str = "POST", body: dict | None = None):
    headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT, "mcp-session-id": session_id}
    headers["mcp-protocol-version"] = "2025-11-25"
    if method == "GET":
        with httpx2.stream("GET", f"{url}/mcp", headers=headers, timeout=5) as response:
            return response.status_code
    return httpx2.request(method, f"{url}/mcp", headers=headers, json=body, timeout=10)


async def test_another_token_cannot_use_delete_or_listen_to_a_streamable_session(team):
    session_id = open_session(team.url, ALICE)
    assert on_session(team.url, BOB, session_id, "DELETE").status_code == 404
    assert on_session(team.url, BOB, session_id, "GET") == 404
    hijack = on_session(team.url, BOB, session_id, "POST", call("complete", {"prompt": "as alice?", "model": "cheap"}))
    assert hijack.status_code == 404
    mine = on_session(team.url, ALICE, session_id, "POST", call("list_models", {}))
    assert mine.status_code == 200 and "cheap" in mine.text
    assert on_session(team.url, ALICE, session_id, "DELETE").status_code == 200


async def test_another_token_cannot_inject_into_an_sse_session(team):
    async with httpx2.AsyncClient(timeout=10) as http:
        headers = {"Authorization": f"Bearer {ALICE}"}
        async with http.stream("GET", f"{team.url}/sse", headers=headers) as stream:
            lines = stream.aiter_lines()
            endpoint = ""
            async for line in lines:
                if line.startswith("data: /messages/"):
                    endpoint = line.removeprefix("data: ")
                    break
            assert "session_id=" in endpoint
            injected = await http.post(
                f"{team.url}{endpoint}", headers={"Authorization": f"Bearer {BOB}"}, json=INIT, timeout=5
            )
            assert injected.status_code == 404
            accepted = await http.post(f"{team.url}{endpoint}", headers=headers, json=INIT, timeout=5)
            assert accepted.status_code == 202
            with anyio.fail_after(5):
                async for line in lines:
                    if line.startswith("data: {"):
                        answer = json.loads(line.removeprefix("data: "))
                        break
            assert answer["id"] == 1 and "protocolVersion" in answer["result"]  # only alice's own call came back


async def test_session_ids_never_reach_the_log(team):
    session_id = open_session(team.url, ALICE)
    on_session(team.url, BOB, session_id, "DELETE")
    on_session(team.url, ALICE, session_id, "POST", call("list_models", {}))
    _code, stderr = team.stop()
    assert session_id not in stderr
    assert ALICE not in stderr and BOB not in stderr


@pytest.mark.parametrize("name", ["local", "bad name", "x\ninjected"])
def test_a_reserved_or_unprintable_token_name_is_refused_at_check_and_serve(sim, tmp_path, name):
    config = tmp_path / "keygate.toml"
    config.write_text(
        preset_config(sim, f'[server]\nauth_tokens = {{ {json.dumps(name)} = "${{ALICE_TOKEN}}" }}'), encoding="utf-8"
    )
    process = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE})
    code = process.proc.wait(timeout=20)
    _code, stderr = process.stop()
    assert code != 0 and "Traceback" not in stderr
    assert "server.auth_tokens" in stderr
    assert "reserved" in stderr if name == "local" else "must be 1-64 letters" in stderr


@pytest.mark.parametrize("modern", [False, True], ids=["2025-11-25", "2026-07-28"])
async def test_a_hidden_prompt_cannot_be_fetched_by_name(team, modern):
    from mcp import MCPError

    async with streamable(team.url, ALICE, modern=modern) as alice:
        with pytest.raises(MCPError) as refused:
            await alice.get_prompt("summarize", {"text": "x"})
        assert refused.value.error.code == -32602 and "Unknown prompt" in refused.value.error.message
        allowed = await alice.get_prompt("translate", {"text": "hola"})
        assert "hola" in allowed.messages[0].content.text
    async with streamable(team.url, BOB, modern=modern) as bob:  # no policy: every prompt
        shown = await bob.get_prompt("summarize", {"text": "x"})
        assert "never invent facts" in shown.messages[0].content.text


def test_a_policy_naming_a_token_that_does_not_exist_is_refused(sim, tmp_path):
    """A typo ("alcie") would leave alice ungoverned — and so an operator."""
    policy = '[policies.team]\ntokens = ["alcie"]\nroutes = ["cheap"]\n'
    tokens = '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}" }'
    config = tmp_path / "keygate.toml"
    config.write_text(preset_config(sim, tokens, policy), encoding="utf-8")
    process = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE})
    code = process.proc.wait(timeout=20)
    _code, stderr = process.stop()
    assert code == 2 and "policies.team.tokens: 'alcie' is not a configured token" in stderr
    assert "Traceback" not in stderr
