"""Presets as tools and prompts, team policies per token, per-token budgets across instances, and
usage accounting — through real MCP clients (stdio and streamable HTTP), the simulator and Redis."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_keygate.config import ConfigError, parse_config

from .conftest import fp, server_params, sim_log
from .redis_support import unique_prefix
from .servers import ALICE, BOB, ServerProcess, free_port, streamable
from .test_cli import run_cli

pytestmark = pytest.mark.anyio

PRIMARY, CLAUDE, CHEAP = "sim-quota-preset00001", "sim-ok-preset0claude2", "sim-ok-preset00cheap3"


def preset_config(sim, state: str, extra: str = "") -> str:
    """Two providers in a route (OpenAI-style first, Anthropic second), a cheap route, two presets."""
    return f"""
{state}

[providers.openai]
type = "openai"
base_url = "{sim.openai_base}"
keys = ["{PRIMARY}"]

[providers.claude]
type = "anthropic"
base_url = "{sim.url}"
keys = ["{CLAUDE}"]

[providers.cheap]
type = "openai"
base_url = "{sim.openai_base}"
keys = ["{CHEAP}"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[models.sonnet]
provider = "claude"
model = "claude-sonnet-5"
max_output_tokens = 1024

[models.mini]
provider = "cheap"
model = "gpt-4.1-nano"

[routes]
default = ["gpt", "sonnet"]
cheap = ["mini"]

[presets.summarize]
description = "Summarize a text in a few bullet points."
system = "You summarize precisely and never invent facts."
template = "Summarize the following text in {{bullets}} bullet points:\\n\\n{{text}}"
route = "default"
max_tokens = 300
temperature = 0.2
[presets.summarize.parameters]
text = {{ type = "str", description = "the text to summarize" }}
bullets = "int = 3"

[presets.translate]
description = "Translate a text."
template = "Translate into {{language}}:\\n\\n{{text}}"
route = "cheap"
[presets.translate.parameters]
text = "str"
language = 'str = "English"'
{extra}
"""


async def test_a_preset_is_a_tool_that_falls_back_across_providers_and_a_prompt(sim, tmp_path):
    config = tmp_path / "keygate.toml"
    config.write_text(preset_config(sim, f'[state]\npath = "{tmp_path / "state.db"}"'), encoding="utf-8")
    async with Client(server_params(config)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        schema = tools["summarize"].input_schema
        assert tools["summarize"].description == "Summarize a text in a few bullet points."
        assert schema["required"] == ["text"]
        assert schema["properties"]["bullets"] == {"default": 3, "title": "Bullets", "type": "integer"} | {
            "description": "a whole number (default 3)"
        }
        assert {"conversation_id", "max_wait_s"} <= set(schema["properties"])

        first = await client.call_tool("summarize", {"text": "Herons wade in shallow water.", "bullets": 2})
        assert not first.is_error, first.content
        data = first.structured_content
        assert data["model"] == "sonnet" and data["provider"] == "claude"
        assert [a["outcome"] for a in data["attempts"]] == ["quota_exhausted", "ok"]
        sent = sim_log(sim)[-1]
        assert sent["key"] == fp(CLAUDE) and sent["api"] == "anthropic"
        assert sent["system"] == "You summarize precisely and never invent facts."
        assert sent["messages"] == [
            {
                "role": "user",
                "content": "Summarize the following text in 2 bullet points:\n\nHerons wade in shallow water.",
            }
        ]
        assert sent["max_tokens"] == 300

        again = await client.call_tool("summarize", {"text": "Egrets too.", "conversation_id": data["conversation_id"]})
        assert not again.is_error
        assert len(sim_log(sim)[-1]["messages"]) == 3  # the conversation went on, with its history

        missing = await client.call_tool("summarize", {"bullets": 2})
        assert missing.is_error and "text" in missing.content[0].text
        wrong = await client.call_tool("translate", {"text": "hola", "langauge": "French"})
        assert wrong.is_error and "langauge" in wrong.content[0].text

        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert [(a.name, a.required) for a in prompts["translate"].arguments] == [("text", True), ("language", False)]
        rendered = await client.get_prompt("summarize", {"text": "A short note.", "bullets": "4"})
        assert rendered.messages[0].role == "user"
        assert rendered.messages[0].content.text == (
            "You summarize precisely and never invent facts.\n\n"
            "Summarize the following text in 4 bullet points:\n\nA short note."
        )
        french = await client.get_prompt("translate", {"text": "hello"})
        assert french.messages[0].content.text == "Translate into English:\n\nhello"


def test_preset_mistakes_are_reported_when_the_config_is_read(sim):
    base = {
        "providers": {"p": {"base_url": sim.openai_base, "keys": ["sim-ok-x0000001"]}},
        "models": {"mini": {"provider": "p"}},
    }
    # Template and parameter problems are found field by field…
    malformed = {
        "formatted": {"description": "d", "template": "{n:>5}", "parameters": {"n": "int"}},
        "attribute": {"description": "d", "template": "{text.upper}", "parameters": {"text": "str"}},
        "braces": {"description": "d", "template": "a } b"},
        "default": {"description": "d", "template": "{n}", "parameters": {"n": 'int = "five"'}},
        "typo": {"description": "d", "template": "{n}", "parameters": {"n": "integer"}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "presets": malformed})
    text = "\n".join(caught.value.problems)
    assert "presets.formatted.template: placeholder {n} may not carry a format or conversion" in text
    assert "presets.attribute.template: placeholder {text.upper} must be a plain parameter name" in text
    assert "presets.braces.template: malformed template" in text
    assert "presets.default.parameters.n: default" in text and "is not a valid int" in text
    assert "presets.typo.parameters.n: expected a type (str, int, float, bool)" in text
    # …and, once those are right, how presets fit the rest of the config.
    mismatched = {
        "complete": {"description": "d", "template": "hi"},
        "bad route": {"description": "d", "template": "{text}", "route": "nowhere", "parameters": {"text": "str"}},
        "undeclared": {"description": "d", "template": "Say {what} in {lang}", "parameters": {"what": "str"}},
        "unused": {"description": "d", "template": "hi", "parameters": {"extra": "str"}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "presets": mismatched})
    text = "\n".join(caught.value.problems)
    assert "presets.complete: 'complete' is a built-in tool" in text
    assert "presets.bad route: the name becomes a tool name" in text
    assert "presets.bad route.route: unknown route or model 'nowhere' (known: default, mini)" in text
    assert "presets.undeclared.template: placeholder {lang} is not a declared parameter" in text
    assert "presets.unused.parameters.extra: not used in the template" in text


def test_check_lists_presets_and_policies(sim, tmp_path):
    config = tmp_path / "keygate.toml"
    policy = '[policies.team]\ntokens = ["alice"]\nroutes = ["cheap"]\nrpm = 5\n'
    config.write_text(preset_config(sim, '[state]\nbackend = "memory"', policy), encoding="utf-8")
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "preset summarize(text: str, bullets: int = 3) -> default: tool and prompt" in proc.stdout
    assert "preset translate(text: str, language: str = 'English') -> cheap" in proc.stdout
    assert "policy team: tokens alice; budget 5 rpm per token" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        preset_config(sim, '[state]\nbackend = "memory"', '[policies.team]\ntokens = ["alice"]\nroutes = ["gold"]\n'),
        encoding="utf-8",
    )
    refused = run_cli("check", "--config", str(bad))
    assert refused.returncode == 1 and "policies.team.routes[0]: unknown route 'gold'" in refused.stderr


@pytest.fixture
def team_server(sim, tmp_path):
    policy = '[policies.team-cheap]\ntokens = ["alice"]\nroutes = ["cheap"]\n'
    config = tmp_path / "keygate.toml"
    state = f'[state]\npath = "{tmp_path / "state.db"}"\n[server]\nauth_tokens = {{ alice = "${{ALICE_TOKEN}}", bob = "${{BOB_TOKEN}}" }}'
    config.write_text(preset_config(sim, state, policy), encoding="utf-8")
    process = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    yield process, config
    process.stop()


async def test_a_token_restricted_to_one_route_is_refused_on_another(team_server):
    server, config = team_server
    async with streamable(server.url, ALICE) as alice:
        refused = await alice.call_tool("complete", {"prompt": "hi"})
        assert refused.is_error
        message = refused.content[0].text
        assert "token 'alice' may not use the route 'default' under policy 'team-cheap'" in message
        assert "it allows: cheap" in message
        direct = await alice.call_tool("complete", {"prompt": "hi", "model": "gpt"})
        assert direct.is_error and "may not use the model 'gpt'" in direct.content[0].text
        ok = await alice.call_tool("complete", {"prompt": "hi", "model": "cheap"})
        assert not ok.is_error and ok.structured_content["provider"] == "cheap"

        tools = {t.name for t in (await alice.list_tools()).tools}
        assert "translate" in tools and "summarize" not in tools  # summarize goes through a route she may not use
        hidden = await alice.call_tool("summarize", {"text": "x"})
        assert (
            hidden.is_error and "may not use the preset 'summarize' under policy 'team-cheap'" in hidden.content[0].text
        )
        translated = await alice.call_tool("translate", {"text": "hola"})
        assert not translated.is_error

        keys = (await alice.call_tool("key_status", {})).structured_content["keys"]
        assert {k["provider"] for k in keys} == {"cheap"}
        other = await alice.call_tool("key_status", {"provider": "openai"})
        assert other.is_error and "unknown provider 'openai'" in other.content[0].text
        models = (await alice.call_tool("list_models", {})).structured_content
        assert [m["name"] for m in models["models"]] == ["mini"] and list(models["routes"]) == ["cheap"]
        resource = json.loads((await alice.read_resource("keygate://keys")).contents[0].text)
        assert "keys" not in resource and "use the key_status tool" in resource["note"]
        usage = (await alice.call_tool("usage", {})).structured_content
        assert {(line["owner"], line["model"]) for line in usage["lines"]} == {("alice", "mini")}
        assert usage["total_requests"] == 2

    async with streamable(server.url, BOB) as bob:  # no policy names bob: everything is open to him
        result = await bob.call_tool("summarize", {"text": "hello"})
        assert not result.is_error and result.structured_content["model"] == "sonnet"
        assert len((await bob.call_tool("key_status", {})).structured_content["keys"]) == 3
        usage = (await bob.call_tool("usage", {})).structured_content
        assert {line["owner"] for line in usage["lines"]} == {"bob"}  # each token sees its own usage

    page = httpx2.get(f"{server.url}/status", headers={"Authorization": f"Bearer {ALICE}"})
    assert (
        page.status_code == 200 and "cheap:" in page.text and "openai:" not in page.text and "claude:" not in page.text
    )
    metrics = httpx2.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {BOB}"}).text
    assert 'keygate_tokens_total{caller="alice",direction="in"' in metrics
    assert 'keygate_tokens_total{caller="bob",direction="out"' in metrics

    table = run_cli("status", "--config", str(config), "--usage")
    assert table.returncode == 0, table.stderr
    assert "alice" in table.stdout and "bob" in table.stdout and "mini" in table.stdout and "sonnet" in table.stdout
    as_json = json.loads(run_cli("status", "--config", str(config), "--usage", "--json").stdout)
    assert as_json["total_requests"] == 3


async def test_a_per_token_budget_holds_across_two_instances_on_redis(sim, tmp_path, redis_url):
    state = (
        f'[state]\nbackend = "redis"\nurl = "{redis_url}"\nprefix = "{unique_prefix()}"\n'
        '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}" }'
    )
    policy = '[policies.metered]\ntokens = ["alice"]\nrpm = 5\n'
    config = tmp_path / "keygate.toml"
    config.write_text(preset_config(sim, state, policy), encoding="utf-8")
    servers = [ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE}) for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        answered: list[str] = []
        refused: list[str] = []

        async def one(url: str, i: int) -> None:
            async with streamable(url, ALICE) as session:
                result = await session.call_tool("complete", {"prompt": f"call {i}", "model": "cheap"})
            (refused if result.is_error else answered).append(result.content[0].text)

        before = len(sim_log(sim))
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, servers[i % 2].url, i)
    finally:
        for server in servers:
            server.stop()
    assert len(answered) == 5, refused
    assert len(refused) == 15
    assert all("token 'alice' is over its budget under policy 'metered' (5 rpm)" in m for m in refused)
    assert all("5 requests per minute used up" in m and "room again in" in m for m in refused), refused[0]
    assert len(sim_log(sim)) - before == 5  # refused calls never reached the upstream
