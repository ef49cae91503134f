"""The client's own model as the last resort (MCP sampling): asked only when no key of an opted-in
route can answer within the wait, with the whole conversation; its answer is stored like any
other; never for a route not opted in, a client without the capability, or an HTTP caller whose
policy does not allow it. Real clients (Python SDK) over stdio and streamable HTTP."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, ErrorData, TextContent

from .conftest import server_params, write_toml
from .servers import ALICE, BOB, ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

COOLING = "sim-ratelimit-30s-sample01"


def config(sim, tmp_path, *, sampling_routes: list[str], extra: dict | None = None):
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"base_url": sim.openai_base, "keys": [COOLING]}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
        "routes": {"default": ["mini"], "strict": ["mini"]},
        "sampling": {"routes": sampling_routes},
        **(extra or {}),
    }
    return write_toml(tmp_path / "keygate.toml", data)


class ClientModel:
    """A sampling callback that answers (or declines) and remembers what it was asked."""

    def __init__(self, decline: bool = False) -> None:
        self.asked: list[CreateMessageRequestParams] = []
        self.decline = decline

    async def __call__(self, context, params: CreateMessageRequestParams):
        self.asked.append(params)
        if self.decline:
            return ErrorData(code=-1, message="the user declined the sampling request")
        said = params.messages[-1].content.text
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"client says: {said}"), model="desk-model-1"
        )


async def test_the_clients_model_answers_when_no_key_can_and_the_conversation_goes_on(sim, tmp_path):
    model = ClientModel()
    path = config(sim, tmp_path, sampling_routes=["default"])
    async with Client(server_params(path), mode="legacy", sampling_callback=model) as client:
        first = await client.call_tool("complete", {"prompt": "first question", "system": "Be terse.", "max_wait_s": 0})
        assert not first.is_error, first.content
        data = first.structured_content
        assert data["text"] == "client says: first question"
        assert data["model"] == "client:desk-model-1" and data["provider"] == "client"
        assert [a["outcome"] for a in data["attempts"]] == ["rate_limited", "ok"]
        assert data["attempts"][-1]["key_id"] == "client"
        assert model.asked[0].system_prompt == "Be terse."

        again = await client.call_tool(
            "complete", {"prompt": "second question", "conversation_id": data["conversation_id"], "max_wait_s": 0}
        )
        assert not again.is_error
        asked = model.asked[-1]
        assert [(m.role, m.content.text) for m in asked.messages] == [
            ("user", "first question"),
            ("assistant", "client says: first question"),
            ("user", "second question"),
        ]
        stored = await client.call_tool("get_conversation", {"conversation_id": data["conversation_id"]})
        turns = stored.structured_content["turns"]
        assert [t.get("model") for t in turns if t["role"] == "assistant"] == ["client:desk-model-1"] * 2

        # A route that is not opted in fails as before, and the client is not asked.
        before = len(model.asked)
        refused = await client.call_tool("complete", {"prompt": "x", "model": "strict", "max_wait_s": 0})
        assert refused.is_error and "cooling" in refused.content[0].text
        assert len(model.asked) == before


async def test_a_declined_request_keeps_the_routes_explanation(sim, tmp_path):
    path = config(sim, tmp_path, sampling_routes=["default"])
    async with Client(server_params(path), mode="legacy", sampling_callback=ClientModel(decline=True)) as client:
        failed = await client.call_tool("complete", {"prompt": "x", "max_wait_s": 0})
    text = failed.content[0].text
    assert failed.is_error and "rate_limited" in text
    assert "client's own model was asked as the last resort and failed" in text and "declined" in text


async def test_a_client_without_sampling_is_never_asked(sim, tmp_path):
    path = config(sim, tmp_path, sampling_routes=["default"])
    async with Client(server_params(path), mode="legacy") as client:
        failed = await client.call_tool("complete", {"prompt": "x", "max_wait_s": 0})
    assert failed.is_error and "client's own model" not in failed.content[0].text


async def test_over_http_only_callers_whose_policy_allows_it(sim, tmp_path):
    extra = {
        "server": {"auth_tokens": {"alice": "${ALICE_TOKEN}", "bob": "${BOB_TOKEN}"}},
        "policies": {
            "may-sample": {"tokens": ["alice"], "sampling": True},
            "may-not": {"tokens": ["bob"]},
        },
    }
    path = config(sim, tmp_path, sampling_routes=["default"], extra=extra)
    server = ServerProcess(path, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    alice_model, bob_model = ClientModel(), ClientModel()
    try:
        async with (
            streamable(server.url, ALICE, sampling_callback=alice_model) as alice,
            streamable(server.url, BOB, sampling_callback=bob_model) as bob,
        ):
            answered = await alice.call_tool("complete", {"prompt": "alice asks", "max_wait_s": 0})
            assert not answered.is_error and answered.structured_content["text"] == "client says: alice asks"
            refused = await bob.call_tool("complete", {"prompt": "bob asks", "max_wait_s": 0})
            assert refused.is_error and bob_model.asked == []
    finally:
        _code, stderr = server.stop()
    assert "Traceback" not in stderr


class Oversized(ClientModel):
    def __init__(self, model: str, text: str) -> None:
        super().__init__()
        self.model, self.text = model, text

    async def __call__(self, context, params: CreateMessageRequestParams):
        self.asked.append(params)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=self.text), model=self.model)


async def test_a_clients_model_cannot_flood_the_store_or_the_metrics(sim, tmp_path):
    path = config(sim, tmp_path, sampling_routes=["default"], extra={"limits": {"max_prompt_chars": 1000}})
    named = Oversized("m" * 100_000 + "\x1b[31m", "fine")
    async with Client(server_params(path), mode="legacy", sampling_callback=named) as client:
        answered = await client.call_tool("complete", {"prompt": "x", "max_wait_s": 0})
        assert answered.structured_content["model"] == "client:" + "m" * 64
    flooding = Oversized("desk", "y" * 5000)
    async with Client(server_params(path), mode="legacy", sampling_callback=flooding) as client:
        refused = await client.call_tool("complete", {"prompt": "x", "max_wait_s": 0})
    assert refused.is_error and "5000 characters, over [limits] max_prompt_chars" in refused.content[0].text
