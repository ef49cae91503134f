"""Looking back: MCP resources (keygate://…), list_conversations / get_conversation, and the
operator-only reset_key tool — through the SDK's in-process client, the simulator over HTTP."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.server import build_server

from .conftest import two_provider_config

pytestmark = pytest.mark.anyio


def server_for(sim, primary: list[str], backup: list[str], **server_settings):
    data = two_provider_config(sim, primary, backup)
    data["providers"]["primary"]["strategy"] = "priority"
    if server_settings:
        data["server"] = server_settings
    return build_server(Keygate(parse_config(data)))


async def test_resources_and_conversation_tools_show_who_answered(sim):
    server = server_for(sim, ["sim-ratelimit-res00001", "sim-ok-res0000002"], ["sim-ok-res0000003"])
    async with Client(server) as client:
        first = (await client.call_tool("complete", {"prompt": "one", "system": "brief"})).structured_content
        cid = first["conversation_id"]
        await client.call_tool("complete", {"prompt": "two", "conversation_id": cid, "model": "big"})
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"keygate://keys", "keygate://models", "keygate://conversations"}
        keys = json.loads((await client.read_resource("keygate://keys")).contents[0].text)["keys"]
        assert [k["state"] for k in keys if k["provider"] == "primary"] == ["cooling", "ready"]
        models = json.loads((await client.read_resource("keygate://models")).contents[0].text)
        assert models["routes"] == {"default": ["mini", "big"]}
        listed = json.loads((await client.read_resource("keygate://conversations")).contents[0].text)
        assert [c["conversation_id"] for c in listed["conversations"]] == [cid]
        history = json.loads((await client.read_resource(f"keygate://conversations/{cid}")).contents[0].text)
        tool = (await client.call_tool("get_conversation", {"conversation_id": cid})).structured_content
        assert history == tool
        assert [(t["role"], t["model"]) for t in history["turns"]] == [
            ("system", None),
            ("user", None),
            ("assistant", "mini"),
            ("user", None),
            ("assistant", "big"),
        ]
        assert history["turns"][4]["provider"] == "backup" and history["turns"][2]["key_id"] == first["key_id"]
        summaries = (await client.call_tool("list_conversations", {"limit": 5})).structured_content
        assert summaries["conversations"][0] == {**summaries["conversations"][0], "conversation_id": cid, "turns": 5}
        missing = await client.call_tool("get_conversation", {"conversation_id": "c_nope"})
        assert missing.is_error and "does not exist" in missing.content[0].text
        assert "list_conversations shows" in missing.content[0].text and "omit" not in missing.content[0].text


async def test_reset_key_is_offered_only_when_enabled(sim):
    plain = server_for(sim, ["sim-ratelimit-res00010"], ["sim-ok-res0000011"])
    async with Client(plain) as client:
        assert "reset_key" not in {t.name for t in (await client.list_tools()).tools}
    guarded = server_for(
        sim, ["sim-ratelimit-res00020", "sim-ok-res0000021"], ["sim-ok-res0000022"], enable_reset_key=True
    )
    async with Client(guarded) as client:
        await client.call_tool("complete", {"prompt": "cool one key"})
        rows = (await client.call_tool("key_status", {"provider": "primary"})).structured_content["keys"]
        cooling = rows[0]["key_id"]
        assert rows[0]["state"] == "cooling"
        reset = await client.call_tool("reset_key", {"key_id": cooling})
        assert reset.structured_content == {"key_id": cooling, "state": "ready"}
        rows = (await client.call_tool("key_status", {"provider": "primary"})).structured_content["keys"]
        assert [r["state"] for r in rows] == ["ready", "ready"]
        unknown = await client.call_tool("reset_key", {"key_id": "primary:000000"})
        assert unknown.is_error and "unknown key 'primary:000000'" in unknown.content[0].text


async def test_prompt_and_resource_errors_are_invalid_params_naming_the_argument(sim):
    from mcp import MCPError

    data = two_provider_config(sim, ["sim-ok-res0000031"], [])
    data["presets"] = {
        "summarize": {
            "description": "d",
            "template": "Sum {text} in {bullets}",
            "parameters": {"text": "str", "bullets": "int = 3"},
        }
    }
    server = build_server(Keygate(parse_config(data)))
    async with Client(server) as client:
        for name, arguments, said in (
            ("nope", {}, "Unknown prompt: 'nope'"),
            ("summarize", {}, "summarize: argument 'text' is required"),
            (
                "summarize",
                {"text": "x", "bullets": "many"},
                "summarize: argument 'bullets': expected a whole number, got 'many'",
            ),
        ):
            with pytest.raises(MCPError) as refused:
                await client.get_prompt(name, arguments)
            assert refused.value.error.code == -32602 and refused.value.error.message.startswith(said)
        with pytest.raises(MCPError) as missing:
            await client.read_resource("keygate://conversations/c_nope")
        assert missing.value.error.code == -32602 and "does not exist" in missing.value.error.message


async def test_every_tool_has_a_title_honest_hints_and_described_parameters(sim):
    server = server_for(sim, ["sim-ok-res0000041"], [], enable_reset_key=True)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    read_only = {"list_models", "key_status", "usage", "list_conversations", "get_conversation"}
    for name, tool in tools.items():
        assert tool.title, name
        hints = tool.annotations
        assert hints is not None, name
        assert hints.read_only_hint is (name in read_only), name
        for parameter, schema in (tool.input_schema or {}).get("properties", {}).items():
            assert schema.get("description"), (name, parameter)
    assert tools["reset_key"].annotations.destructive_hint and tools["reset_key"].annotations.idempotent_hint
    assert tools["complete"].annotations.open_world_hint and not tools["complete"].annotations.destructive_hint
