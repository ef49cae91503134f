"""Structured answers: `response_schema` asked of each provider in its own terms (OpenAI
response_format json_schema, Anthropic a forced tool, Gemini responseSchema), the answer parsed and
validated, and an answer that does not fit never returned — next key once, then next model. Through
real MCP clients over stdio and streamable HTTP, against the simulator, whose checks of each wire
format the official SDKs confirm."""

from __future__ import annotations

import json

import pytest
from mcp import Client
from pydantic import BaseModel

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import ConfigError, parse_config
from mcp_keygate.errors import InvalidRequest
from mcp_keygate.gateway import Keygate
from mcp_keygate.router import RouteFailed
from mcp_keygate.structured import gemini_schema, strict_ok

from .conftest import fp, server_params, sim_log
from .servers import ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

REVIEW = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["approve", "request_changes"]},
        "issues": {"type": "array", "items": {"type": "string"}},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["verdict", "issues", "score"],
    "additionalProperties": False,
}
EXPECTED = {"verdict": "approve", "issues": ["sim answer"], "score": 1}
OPEN = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}}}


class Review(BaseModel):
    verdict: str
    score: int


# --- the simulator checks each API's structured-output request as the API does (official SDKs) ---


def test_openai_sdk_parse_gets_a_structured_answer_and_strict_rules_are_enforced(sim):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sim-ok-struct000001", base_url=sim.openai_base, max_retries=0)
    parsed = client.chat.completions.parse(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Review this"}], response_format=Review
    )
    assert parsed.choices[0].message.parsed == Review(verdict="sim answer", score=1)
    sent = sim_log(sim)[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    with pytest.raises(openai.BadRequestError) as refused:  # strict mode needs closed objects
        client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": OPEN, "strict": True}},
        )
    assert "'additionalProperties' is required to be supplied and to be false" in str(refused.value)


def test_anthropic_sdk_gets_the_forced_tool_call_whole_and_streamed(sim):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(api_key="sim-ok-struct000002", base_url=sim.url, max_retries=0)
    tool = {"name": "answer", "description": "the answer", "input_schema": REVIEW}
    kwargs = {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Review this"}],
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "answer"},
    }
    message = client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use" and message.content[0].type == "tool_use"
    assert message.content[0].input == EXPECTED
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == EXPECTED
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(**{**kwargs, "tool_choice": {"type": "tool", "name": "other"}})
    assert "Tool 'other' not found" in str(refused.value)


def test_gemini_sdk_parses_a_response_schema_answer_and_unknown_schema_fields_are_refused(sim):
    genai = pytest.importorskip("google.genai")
    from google.genai import errors as genai_errors
    from google.genai import types

    options = types.HttpOptions(base_url=sim.url, retry_options=types.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key="sim-ok-struct000003", http_options=options)
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=Review)
    reply = client.models.generate_content(model="gemini-2.5-flash", contents="Review this", config=config)
    assert reply.parsed == Review(verdict="sim answer", score=1)
    raw = {
        "response_mime_type": "application/json",
        "response_schema": {"type": "OBJECT", "additionalProperties": False},
    }
    with pytest.raises(genai_errors.ClientError) as refused:
        client.models.generate_content(model="gemini-2.5-flash", contents="x", config=raw)
    assert 'Unknown name "additionalProperties"' in str(refused.value)


# --- keygate: translation per provider, validation, fallback ---


def three(sim, keys: dict[str, list[str]], routes: dict[str, list[str]] | None = None) -> dict:
    bases = {"openai": sim.openai_base, "anthropic": sim.url, "gemini": sim.url}
    return {
        "state": {"backend": "memory"},
        "providers": {p: {"type": p, "base_url": bases[p], "keys": keys.get(p, [])} for p in bases},
        "models": {
            "gpt": {"provider": "openai", "model": "gpt-4.1-mini"},
            "claude": {"provider": "anthropic", "model": "claude-haiku-4-5"},
            "gemini": {"provider": "gemini", "model": "gemini-2.5-flash"},
        },
        "routes": routes or {"default": ["gpt", "claude", "gemini"]},
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_each_provider_is_asked_in_its_own_terms_and_the_answer_is_validated(sim, stream):
    keys = {"openai": ["sim-ok-st-gpt0001"], "anthropic": ["sim-ok-st-claude1"], "gemini": ["sim-ok-st-gemini1"]}
    data = three(sim, keys)
    for provider in data["providers"].values():
        provider["stream"] = stream
    async with Keygate(parse_config(data)) as gate:
        answers = {
            name: await gate.complete(CompleteRequest(prompt="Review my patch", model=name, response_schema=REVIEW))
            for name in ("gpt", "claude", "gemini")
        }
    for name, result in answers.items():
        assert result.json_answer == EXPECTED, name
        assert json.loads(result.text) == EXPECTED
    openai_call, claude_call, gemini_call = [e for e in sim_log(sim) if e["outcome"] == "ok"]
    assert openai_call["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": REVIEW, "strict": True},
    }
    assert claude_call["tool_choice"] == {"type": "tool", "name": "answer"}
    assert claude_call["tools"][0]["input_schema"] == REVIEW
    config = gemini_call["generation_config"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["type"] == "OBJECT" and "additionalProperties" not in config["responseSchema"]
    assert config["responseSchema"]["properties"]["score"] == {"type": "INTEGER", "minimum": 1, "maximum": 10}


async def test_a_schema_that_is_not_an_object_is_wrapped_for_anthropic_and_unwrapped(sim):
    tags = {"type": "array", "items": {"type": "string"}, "minItems": 2}
    async with Keygate(parse_config(three(sim, {"anthropic": ["sim-ok-st-claude2"]}))) as gate:
        result = await gate.complete(CompleteRequest(prompt="Tags?", model="claude", response_schema=tags))
    assert result.json_answer == ["sim answer", "sim answer"]
    sent = sim_log(sim)[-1]["tools"][0]["input_schema"]
    assert sent == {"type": "object", "properties": {"value": tags}, "required": ["value"]}


def test_strict_only_where_openai_allows_it_and_gemini_gets_its_subset():
    assert strict_ok(REVIEW) and not strict_ok(OPEN) and not strict_ok({"type": "array"})
    converted = gemini_schema({**OPEN, "$schema": "x", "additionalProperties": True})
    assert converted == {
        "type": "OBJECT",
        "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER", "nullable": True}},
    }


async def test_an_answer_that_violates_the_schema_tries_the_next_key_once_then_the_next_model(sim):
    """Attack: the model answers valid JSON of the wrong shape. It is never returned as valid."""
    bad1, bad2, good = "sim-badjson-st-gpt1", "sim-badjson-st-gpt2", "sim-ok-st-claude3"
    data = three(sim, {"openai": [bad1, bad2], "anthropic": [good]}, {"default": ["gpt", "claude"]})
    data["providers"]["openai"]["strategy"] = "priority"
    async with Keygate(parse_config(data)) as gate:
        result = await gate.complete(CompleteRequest(prompt="Review", response_schema=REVIEW))
        plain = await gate.complete(CompleteRequest(prompt="No schema here", model="gpt"))
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("gpt", "invalid_output"),
        ("gpt", "invalid_output"),
        ("claude", "ok"),
    ]
    assert result.model == "claude" and result.json_answer == EXPECTED
    assert [e["key"] for e in sim_log(sim)[:3]] == [fp(bad1), fp(bad2), fp(good)]
    assert plain.json_answer is None and plain.text.startswith("[gpt-4.1-mini]")  # plain answers are normal


async def test_when_no_answer_fits_the_call_fails_with_what_each_answer_got_wrong(sim):
    data = three(
        sim, {"openai": ["sim-badjson-st-gpt3"], "gemini": ["sim-badjson-st-gem1"]}, {"default": ["gpt", "gemini"]}
    )
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as failed:
            await gate.complete(CompleteRequest(prompt="Review", response_schema=REVIEW, max_wait_s=0))
        states = {row.key_id: row.state for row in (await gate.views.key_status()).keys}
    text = str(failed.value)
    assert "gpt with key openai:" in text and "invalid_output" in text
    assert "the answer does not fit response_schema at" in text
    assert "No answer fitted response_schema" in text
    assert len(sim_log(sim)) == 2  # one attempt per model: a key's wrong answer says nothing about its state
    assert set(states.values()) == {"ready"}


async def test_a_wrong_schema_is_one_clear_line_and_sends_nothing(sim):
    async with Keygate(parse_config(three(sim, {"openai": ["sim-ok-st-gpt0009"]}))) as gate:
        with pytest.raises(InvalidRequest) as wrong:
            await gate.complete(CompleteRequest(prompt="x", model="gpt", response_schema={"type": "objekt"}))
        with pytest.raises(InvalidRequest) as ref:
            await gate.complete(CompleteRequest(prompt="x", model="gpt", response_schema={"$ref": "#/$defs/a"}))
    assert str(wrong.value).startswith("response_schema: not a valid JSON Schema at type:")
    assert "$ref is not supported" in str(ref.value)
    assert sim_log(sim) == []


async def test_structured_answers_over_stdio_and_a_preset_that_declares_a_schema_over_http(sim, tmp_path):
    schema = json.dumps(REVIEW)
    config = tmp_path / "keygate.toml"
    config.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"

[providers.openai]
type = "openai"
base_url = "{sim.openai_base}"
keys = ["sim-ok-st-gpt0010"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[presets.review]
description = "Review a patch; answers a verdict, issues and a score."
template = "Review this patch:\\n{{patch}}"
response_schema = '{schema}'
[presets.review.parameters]
patch = "str"
""",
        encoding="utf-8",
    )
    async with Client(server_params(config)) as client:
        result = await client.call_tool("complete", {"prompt": "Review", "response_schema": REVIEW})
        wrong = await client.call_tool("complete", {"prompt": "Review", "response_schema": {"type": 7}})
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert not result.is_error and result.structured_content["json"] == EXPECTED
    assert wrong.is_error and "response_schema: not a valid JSON Schema at type: 7" in wrong.content[0].text
    assert "json" in listed["complete"].output_schema["properties"]

    server = ServerProcess(config, free_port(), {})
    try:
        server.wait_ready()
        async with streamable(server.url, None) as session:
            preset = await session.call_tool("review", {"patch": "- a\n+ b"})
            direct = await session.call_tool("complete", {"prompt": "Review", "response_schema": REVIEW})
    finally:
        server.stop()
    assert not preset.is_error and preset.structured_content["json"] == EXPECTED
    assert direct.structured_content["json"] == EXPECTED
    assert sim_log(sim)[-2]["response_format"]["json_schema"]["schema"] == REVIEW


def test_a_preset_schema_is_checked_with_the_config(sim):
    base = three(sim, {"openai": ["k"]})
    preset = {"description": "d", "template": "t", "route": "gpt"}
    with pytest.raises(ConfigError) as wrong:
        parse_config({**base, "presets": {"p": {**preset, "response_schema": "{not json"}}})
    assert "presets.p.response_schema: Value error, not JSON" in str(wrong.value) or "not JSON" in str(wrong.value)
    with pytest.raises(ConfigError) as bad:
        parse_config({**base, "presets": {"p": {**preset, "response_schema": {"type": "objekt"}}}})
    assert "presets.p.response_schema" in str(bad.value) and "not a valid JSON Schema" in str(bad.value)
    ok = parse_config({**base, "presets": {"p": {**preset, "response_schema": REVIEW}}})
    assert ok.presets["p"].response_schema == REVIEW


def test_the_readme_preset_schema_is_valid_config(sim):
    import re
    import tomllib

    from .conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    review = next(b for b in blocks if "review" in b.get("presets", {}))
    config = parse_config(
        {**three(sim, {"openai": ["k"]}), "presets": {"review": {**review["presets"]["review"], "route": "gpt"}}}
    )
    assert config.presets["review"].response_schema["required"] == ["verdict"]
