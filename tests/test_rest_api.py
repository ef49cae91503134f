"""The REST face against a running server, with the official `openai` SDK as the client:
chat completions plain and streamed, conversation continuity, `/v1/models`, presets as REST
endpoints — and the attacks: wrong tokens, policies, refused fields, bad bodies, keys that fail."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from .conftest import sim_log
from .servers import ALICE, BOB, ServerProcess, free_port, streamable
from .test_presets_policies import CHEAP, preset_config

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def team(sim_server, tmp_path_factory):
    """alice may only use the route `cheap` (and so the preset translate); bob is unrestricted."""
    tmp_path = tmp_path_factory.mktemp("rest")
    policy = '[policies.team-cheap]\ntokens = ["alice"]\nroutes = ["cheap"]\nrpm = 100\n'
    tokens = '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}" }'
    config = tmp_path / "keygate.toml"
    state = f'[state]\npath = "{tmp_path / "s.db"}"\n{tokens}'
    config.write_text(preset_config(sim_server, state, policy), encoding="utf-8")
    process = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}).wait_ready()
    yield process
    _code, stderr = process.stop()
    assert "Traceback" not in stderr
    assert ALICE not in stderr and BOB not in stderr


def client(server, token: str = BOB) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=30)


def test_chat_completions_answer_and_continue_a_conversation(sim, team):
    raw = client(team).chat.completions.with_raw_response.create(
        model="cheap", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    )
    first = raw.parse()
    assert first.choices[0].message.content.endswith('You said: "Hello"')
    assert first.choices[0].finish_reason == "stop" and first.model == "mini"
    assert (
        first.usage.prompt_tokens > 0
        and first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    )
    conversation = raw.headers["x-keygate-conversation"]
    assert raw.headers["x-keygate-key-id"] and CHEAP not in json.dumps(dict(raw.headers))

    again = client(team).chat.completions.create(
        model="cheap",
        messages=[{"role": "user", "content": [{"type": "text", "text": "And again"}]}],
        extra_headers={"x-keygate-conversation": conversation},
    )
    assert again.choices[0].message.content.endswith('You said: "And again"')
    sent = sim_log(sim)[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]  # the whole conversation went up


def test_a_streamed_completion_arrives_in_chunks_with_usage(team):
    stream = client(team).chat.completions.create(
        model="cheap",
        messages=[{"role": "user", "content": "stream " + "words " * 300}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said" in text
    assert chunks[0].choices[0].delta.role == "assistant" and len(chunks) >= 4  # role, text, finish, usage
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_models_lists_only_what_the_token_may_call(team):
    everything = {m.id for m in client(team, BOB).models.list()}
    assert {"default", "cheap", "gpt", "sonnet", "mini"} <= everything
    assert {m.id for m in client(team, ALICE).models.list()} == {"cheap"}


def test_policies_and_tokens_hold_on_the_rest_face(team):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(team, ALICE).chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert "may not use the route 'default'" in str(refused.value)
    with pytest.raises(openai.AuthenticationError):
        client(team, "not-a-token-at-all-0000").chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "hi"}]
        )
    # Two Authorization headers: refused before anything else, as on /mcp.
    headers = [("authorization", f"Bearer {ALICE}"), ("authorization", f"Bearer {BOB}")]
    response = httpx2.post(f"{team.url}/v1/chat/completions", headers=headers, json={}, timeout=10)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"model": "cheap", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools: tool calling",
        ),
        ({"model": "cheap", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n: only one choice"),
        ({"model": "cheap", "messages": [{"role": "user", "content": "x"}], "bogus": 1}, "bogus: unknown field"),
        ({"model": "cheap", "messages": []}, "messages: required"),
        ({"model": "cheap", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role: expected system"),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, "model: unknown model or route 'nope'"),
        (
            {"model": "cheap", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens: must be at least 1",
        ),
        (
            {"model": "cheap", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature: expected a number",
        ),
    ],
)
def test_bad_requests_get_one_line_naming_the_field(team, body, expected):
    response = httpx2.post(
        f"{team.url}/v1/chat/completions", headers={"authorization": f"Bearer {BOB}"}, json=body, timeout=10
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert expected in error["message"] and error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_is_one_line(team):
    response = httpx2.post(
        f"{team.url}/v1/chat/completions", headers={"authorization": f"Bearer {BOB}"}, content=b"{not json", timeout=10
    )
    assert response.status_code == 400 and "not JSON" in response.json()["error"]["message"]


def test_presets_are_rest_endpoints_with_their_schemas_and_policies(team):
    auth = {"authorization": f"Bearer {ALICE}"}
    listed = httpx2.get(f"{team.url}/v1/presets", headers=auth, timeout=10).json()["data"]
    assert [p["name"] for p in listed] == ["translate"]  # summarize's route is not alice's
    schema = listed[0]["parameters"]
    assert schema["required"] == ["text"] and {"language", "conversation_id", "max_wait_s"} <= set(schema["properties"])

    answered = httpx2.post(f"{team.url}/v1/presets/translate", headers=auth, json={"text": "Hallo"}, timeout=30)
    assert answered.status_code == 200, answered.text
    assert "Translate into English" in answered.json()["text"] and answered.json()["model"] == "mini"

    cases = [
        ("translate", {"language": "French"}, 400, "missing required argument(s) 'text'"),
        ("translate", {"text": "x", "colour": "red"}, 400, "unknown argument(s) 'colour'"),
        ("translate", {"text": 5}, 400, "text"),
        ("nothing-here", {"text": "x"}, 404, "unknown preset"),
        ("complete", {"prompt": "x"}, 404, "unknown preset"),
        ("summarize", {"text": "x"}, 403, "may not use the preset 'summarize'"),
    ]
    for name, body, status, expected in cases:
        response = httpx2.post(f"{team.url}/v1/presets/{name}", headers=auth, json=body, timeout=30)
        assert response.status_code == status and expected in response.json()["error"]["message"], (name, response.text)


async def test_rest_calls_are_accounted_like_mcp_calls(team):
    client(team, ALICE).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "count me"}])
    async with streamable(team.url, ALICE) as session:
        usage = (await session.call_tool("usage", {})).structured_content
    assert {line["owner"] for line in usage["lines"]} == {"alice"}
    metrics = httpx2.get(f"{team.url}/metrics", headers={"authorization": f"Bearer {BOB}"}, timeout=10).text
    assert 'keygate_tool_calls_total{caller="alice",result="ok"}' in metrics


def test_failed_routes_are_openai_errors_plain_and_streamed(sim, tmp_path):
    data = (
        f'[state]\nbackend = "memory"\n[providers.p]\nbase_url = "{sim.openai_base}"\n'
        'keys = ["sim-ratelimit-30s-rest0001"]\n[models.mini]\nprovider = "p"\nmodel = "gpt-4.1-mini"\n'
    )
    (tmp_path / "k.toml").write_text(data, encoding="utf-8")
    server = ServerProcess(tmp_path / "k.toml", free_port(), {}).wait_ready()
    try:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            api.chat.completions.create(
                model="mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-keygate-max-wait": "0"}
            )
        assert "rate-limited" in str(limited.value) or "rate_limited" in str(limited.value)
        assert 25 <= int(limited.value.response.headers["retry-after"]) <= 31
        with pytest.raises(openai.APIError) as streamed:
            list(
                api.chat.completions.create(
                    model="mini",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    extra_headers={"x-keygate-max-wait": "0"},
                )
            )
        assert "ready" in str(streamed.value)
    finally:
        _code, stderr = server.stop()
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model":"cheap","messages":[{"role":["user"],"content":"x"}]}', "messages[0].role: expected system"),
        (b'{"model":"cheap","messages":[{"role":{"a":1},"content":"x"}]}', "messages[0].role: expected system"),
        (b'{"model":"cheap","messages":[{"role":"user","content":"\\ud800"}]}', "not valid Unicode"),
        (b'{"model":"cheap","messages":[{"role":"user","content":"x"}],"temperature":NaN}', "NaN and Infinity"),
        (b'{"model":"cheap","messages":[{"role":"user","content":"x"}],"temperature":Infinity}', "NaN and Infinity"),
        (
            b'{"model":"cheap","messages":[{"role":"user","content":"x"}],"temperature":-5}',
            "temperature: expected 0 to 2",
        ),
        (b'{"model":"cheap","messages":[{"role":"user","content":"x"}],"stream":true,"temperature":9}', "temperature"),
    ],
)
def test_malformed_bodies_are_400s_never_500s(team, raw, expected):
    headers = {"authorization": f"Bearer {BOB}", "content-type": "application/json"}
    response = httpx2.post(f"{team.url}/v1/chat/completions", headers=headers, content=raw, timeout=10)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]["message"]


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "601", "soon"])
def test_a_max_wait_header_outside_0_to_600_is_refused(team, wait):
    body = {"model": "cheap", "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {BOB}", "x-keygate-max-wait": wait}
    response = httpx2.post(f"{team.url}/v1/chat/completions", headers=headers, json=body, timeout=10)
    assert response.status_code == 400 and "x-keygate-max-wait" in response.json()["error"]["message"]


def test_a_preset_body_with_a_lone_surrogate_is_a_400(team):
    headers = {"authorization": f"Bearer {ALICE}", "content-type": "application/json"}
    response = httpx2.post(
        f"{team.url}/v1/presets/translate", headers=headers, content=b'{"text":"\\udc00"}', timeout=10
    )
    assert response.status_code == 400 and "text: not valid Unicode" in response.json()["error"]["message"]


async def test_a_hidden_preset_tells_nothing_of_its_parameters(team):
    auth = {"authorization": f"Bearer {ALICE}"}
    for body in ({}, {"zzz": 1}, {"text": 5}):
        response = httpx2.post(f"{team.url}/v1/presets/summarize", headers=auth, json=body, timeout=10)
        message = response.json()["error"]["message"]
        assert response.status_code == 403 and "may not use the preset 'summarize'" in message
        assert "text" not in message.replace("summarize", "") and "bullets" not in message
    async with streamable(team.url, ALICE) as alice:
        for arguments in ({}, {"zzz": 1}, {"text": 5}):
            refused = await alice.call_tool("summarize", arguments)
            text = refused.content[0].text
            assert refused.is_error and "may not use the preset 'summarize'" in text
            assert "bullets" not in text and "expected some of" not in text


def test_streamed_refusals_keep_their_status_and_guard_errors_their_shape(team):
    with pytest.raises(openai.PermissionDeniedError):
        list(
            client(team, ALICE).chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    with pytest.raises(openai.BadRequestError):
        list(
            client(team).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}], stream=True)
        )
    with pytest.raises(openai.NotFoundError):
        list(
            client(team).chat.completions.create(
                model="cheap",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                extra_headers={"x-keygate-conversation": "c_0123456789abcdef"},
            )
        )
    with pytest.raises(openai.AuthenticationError) as denied:
        client(team, "wrong-token-wrong-token").models.list()
    assert denied.value.body["type"] == "authentication_error" and denied.value.message
