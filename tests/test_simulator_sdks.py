"""The simulator speaks Anthropic and Gemini faithfully: the official SDKs parse its answers and errors."""

from __future__ import annotations

import pytest

anthropic = pytest.importorskip("anthropic")
genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402

MODEL = "claude-haiku-4-5"


def claude(sim, key: str):
    return anthropic.Anthropic(api_key=key, base_url=sim.url, max_retries=0)


def gemini(sim, key: str):
    options = genai_types.HttpOptions(base_url=sim.url, retry_options=genai_types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=key, http_options=options)


def test_anthropic_sdk_parses_a_message_sent_with_its_2026_headers(sim):
    from .conftest import sim_log

    message = claude(sim, "sim-ok-anth0000001").messages.create(
        model=MODEL, max_tokens=200, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text.startswith(f"[{MODEL}] I received 1 message(s), system prompt: yes")
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    entry = sim_log(sim)[-1]
    assert entry["anthropic_version"] >= "2026"  # the SDK's own version header, accepted with a Bearer key


def test_anthropic_sdk_streams(sim):
    with claude(sim, "sim-ok-anth0000002").messages.stream(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Tell me a long story"}]
    ) as stream:
        text = stream.get_final_text()
        final = stream.get_final_message()
    assert len(text.split(" ")) == 5 and final.stop_reason == "max_tokens"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("key", "error", "status"),
    [
        ("sim-ratelimit-anth001", "RateLimitError", 429),
        ("sim-quota-anth0000001", "BadRequestError", 400),
        ("sim-spendlimit-anth001", "EnforcedSpendLimitReachedError", 429),
        ("sim-invalid-anth00001", "AuthenticationError", 401),
        ("sim-overloaded-anth001", "OverloadedError", 529),
    ],
)
def test_anthropic_sdk_raises_the_right_exception(sim, key, error, status):
    with pytest.raises(getattr(anthropic, error)) as info:
        claude(sim, key).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    if status == 429 and error == "RateLimitError":
        assert info.value.response.headers["retry-after"] == "30"


def test_anthropic_sdk_sees_a_mid_stream_error(sim):
    stream = claude(sim, "sim-streamerror-anth01").messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"), stream as events:
        events.get_final_text()


def test_gemini_sdk_parses_content_and_streams(sim):
    client = gemini(sim, "sim-ok-gem00000001")
    config = genai_types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=100)
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hello", config=config)
    assert response.text.startswith("[gemini-2.5-flash] I received 1 message(s), system prompt: yes")
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert response.usage_metadata.prompt_token_count > 0
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello"))
    assert "".join(c.text or "" for c in chunks) == response.text.replace("system prompt: yes", "system prompt: no")
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP


@pytest.mark.parametrize(
    ("key", "error", "status"),
    [
        ("sim-ratelimit-gem0001", "ClientError", "RESOURCE_EXHAUSTED"),
        ("sim-quota-gem00000001", "ClientError", "RESOURCE_EXHAUSTED"),
        ("sim-invalid-gem000001", "ClientError", "INVALID_ARGUMENT"),
        ("sim-overloaded-gem0001", "ServerError", "UNAVAILABLE"),
    ],
)
def test_gemini_sdk_raises_the_right_exception(sim, key, error, status):
    client = gemini(sim, key)
    with pytest.raises(getattr(genai_errors, error)) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.status == status
    if key.startswith("sim-quota"):
        details = info.value.details["error"]["details"]
        assert "PerDay" in details[0]["violations"][0]["quotaId"]
