"""Adapters in isolation: Anthropic and Gemini classification on the reference's bodies, translation
round trips, stream decoders, presets, and context fitting."""

from __future__ import annotations

import itertools
import json

import httpx2
import pytest

from mcp_keygate.config import config_from_env, parse_config
from mcp_keygate.context import TokenEstimator, fit_history
from mcp_keygate.keys import ApiKey
from mcp_keygate.messages import Message
from mcp_keygate.outcomes import Outcome
from mcp_keygate.providers import CallParams, build_provider
from mcp_keygate.providers.anthropic import AnthropicProvider, AnthropicStream, classify_anthropic_error
from mcp_keygate.providers.base import MalformedResponse, StreamFailed
from mcp_keygate.providers.gemini import GeminiProvider, GeminiStream, classify_gemini_error
from mcp_keygate.providers.openai import OpenAIStream
from mcp_keygate.providers.turns import CONTINUATION, alternating

# --- Anthropic classification ------------------------------------------------------------------


def anth(kind: str, message: str, **extra) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message, **extra}}


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome"),
    [
        (
            429,
            {"retry-after": "12"},
            anth("rate_limit_error", "This request would exceed the rate limit … 20,000 input tokens per minute."),
            Outcome.RATE_LIMITED,
        ),
        (
            400,
            {},
            anth(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            ),
            Outcome.QUOTA_EXHAUSTED,
        ),
        (
            429,
            {},
            anth(
                "rate_limit_error",
                "You have reached your specified API usage limits.",
                details={"error_code": "enforced_spend_limit_reached"},
            ),
            Outcome.QUOTA_EXHAUSTED,
        ),
        (
            400,
            {},
            anth("invalid_request_error", "You have reached your specified workspace spend limit."),
            Outcome.QUOTA_EXHAUSTED,
        ),
        (402, {}, anth("billing_error", "Payment required"), Outcome.QUOTA_EXHAUSTED),
        (401, {}, anth("authentication_error", "invalid x-api-key"), Outcome.AUTH_FAILED),
        (403, {}, anth("permission_error", "Your API key does not have permission"), Outcome.AUTH_FAILED),
        (
            400,
            {},
            anth("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
            Outcome.CONTEXT_TOO_LONG,
        ),
        (529, {}, anth("overloaded_error", "Overloaded"), Outcome.OVERLOADED),
        (500, {}, anth("api_error", "Internal server error"), Outcome.UPSTREAM_ERROR),
        (504, {}, anth("timeout_error", "Request timed out"), Outcome.TIMEOUT),
        (
            400,
            {},
            anth("invalid_request_error", "temperature: Input should be less than or equal to 1"),
            Outcome.BAD_REQUEST,
        ),
        (404, {}, anth("not_found_error", "model: claude-x"), Outcome.MODEL_NOT_FOUND),
    ],
)
def test_anthropic_classification(status, headers, body, outcome):
    verdict = classify_anthropic_error(status, httpx2.Headers(headers), body)
    assert verdict.outcome is outcome
    if outcome is Outcome.RATE_LIMITED:
        assert verdict.retry_after_s == 12


def test_anthropic_spend_limit_parks_until_the_first_of_next_month():
    body = anth("rate_limit_error", "limit", details={"error_code": "enforced_spend_limit_reached"})
    verdict = classify_anthropic_error(429, {}, body)
    assert 0 < verdict.retry_after_s <= 31 * 86400


# --- Gemini classification ---------------------------------------------------------------------


def gem_429(quota_id: str | None, delay: str | None = "37s", message: str = "You exceeded your current quota") -> dict:
    details = []
    if quota_id:
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]})
    if delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}


def test_gemini_per_minute_cools_for_the_retry_delay():
    verdict = classify_gemini_error(429, {}, gem_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"))
    assert verdict.outcome is Outcome.RATE_LIMITED and verdict.retry_after_s == 37


def test_gemini_per_day_is_exhausted_despite_a_short_retry_delay():
    body = gem_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "26s")
    verdict = classify_gemini_error(429, {}, body)
    assert verdict.outcome is Outcome.QUOTA_EXHAUSTED
    assert verdict.retry_after_s is None or verdict.retry_after_s > 60


def test_gemini_several_violations_any_per_day_wins():
    body = gem_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    body["error"]["details"][0]["violations"].append({"quotaId": "GenerateContentInputTokensPerModelPerDay-FreeTier"})
    assert classify_gemini_error(429, {}, body).outcome is Outcome.QUOTA_EXHAUSTED


def test_gemini_429_without_details_reads_the_message():
    body = gem_429(None, None, "Resource exhausted. Please retry in 45.578569677s.")
    verdict = classify_gemini_error(429, {}, body)
    assert verdict.outcome is Outcome.RATE_LIMITED and verdict.retry_after_s == pytest.approx(45.578569677)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                        }
                    ],
                }
            },
            Outcome.AUTH_FAILED,
        ),
        (
            403,
            {
                "error": {
                    "code": 403,
                    "message": "Permission denied: Consumer has been suspended.",
                    "status": "PERMISSION_DENIED",
                }
            },
            Outcome.AUTH_FAILED,
        ),
        (402, {"error": {"code": 402, "message": "Your prepayment credits are depleted."}}, Outcome.QUOTA_EXHAUSTED),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "User location is not supported / billing not enabled",
                    "status": "FAILED_PRECONDITION",
                }
            },
            Outcome.QUOTA_EXHAUSTED,
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
                    "status": "INVALID_ARGUMENT",
                }
            },
            Outcome.CONTEXT_TOO_LONG,
        ),
        (
            503,
            {
                "error": {
                    "code": 503,
                    "message": "The model is overloaded. Please try again later.",
                    "status": "UNAVAILABLE",
                }
            },
            Outcome.OVERLOADED,
        ),
        (
            500,
            {"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}},
            Outcome.UPSTREAM_ERROR,
        ),
        (504, {"error": {"code": 504, "message": "Deadline exceeded", "status": "DEADLINE_EXCEEDED"}}, Outcome.TIMEOUT),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "Invalid value at 'generation_config.temperature'",
                    "status": "INVALID_ARGUMENT",
                }
            },
            Outcome.BAD_REQUEST,
        ),
    ],
)
def test_gemini_classification(status, body, outcome):
    assert classify_gemini_error(status, {}, body).outcome is outcome


# --- translation -------------------------------------------------------------------------------

HISTORY = [
    Message("system", "You are terse."),
    Message("assistant", "Earlier greeting."),
    Message("assistant", ""),
    Message("user", "first"),
    Message("user", "second"),
    Message("assistant", "answer"),
    Message("system", "Also be kind."),
    Message("user", "third"),
]
KEY = ApiKey.create("p", "sim-ok-translate-0001", 0)


def body_of(request: httpx2.Request) -> dict:
    return json.loads(request.content)


def test_alternating_merges_drops_empties_and_starts_with_user():
    shaped = alternating([m for m in HISTORY if m.role != "system"])
    assert [m.role for m in shaped] == ["user", "assistant", "user", "assistant", "user"]
    assert shaped[0].content == CONTINUATION
    assert shaped[2].content == "first\n\nsecond"


def test_anthropic_request_shape_and_round_trip():
    with httpx2.Client() as client:
        request = AnthropicProvider("a", "http://x").build_request(
            client, KEY, "claude-haiku-4-5", HISTORY, CallParams(max_tokens=None, temperature=1.5)
        )
    body = body_of(request)
    assert request.url.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY.secret and request.headers["anthropic-version"] == "2023-06-01"
    assert body["system"] == "You are terse.\n\nAlso be kind."
    assert body["max_tokens"] == 4096 and body["temperature"] == 1.0
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    said = "\n\n".join(m["content"] for m in body["messages"])
    for message in HISTORY:
        if message.role != "system":
            assert message.content in said  # nothing the user or model said is lost


def test_gemini_request_shape_and_round_trip():
    with httpx2.Client() as client:
        request = GeminiProvider("g", "http://x").build_request(
            client, KEY, "gemini-2.5-flash", HISTORY, CallParams(max_tokens=64, temperature=0.2, stream=True)
        )
    body = body_of(request)
    assert request.url.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.url.params["alt"] == "sse" and request.headers["x-goog-api-key"] == KEY.secret
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse.\n\nAlso be kind."}]}
    assert body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.2}
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]
    back = [Message("assistant" if c["role"] == "model" else "user", c["parts"][0]["text"]) for c in body["contents"]]
    assert back == alternating([m for m in HISTORY if m.role != "system"])


def test_openai_request_keeps_the_history_as_is():
    with httpx2.Client() as client:
        provider = build_provider("o", parse_config({"providers": {"o": {"type": "openai"}}}).providers["o"])
        request = provider.build_request(client, KEY, "gpt-4.1", HISTORY[:2], CallParams(max_tokens=5, stream=True))
    body = body_of(request)
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "assistant", "content": "Earlier greeting."},
    ]
    assert body["max_completion_tokens"] == 5 and body["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {KEY.secret}"


@pytest.mark.parametrize(
    ("table", "url", "header"),
    [
        (
            {"type": "azure", "base_url": "https://res.openai.azure.com", "api_version": "2024-10-21"},
            "https://res.openai.azure.com/openai/deployments/dep1/chat/completions?api-version=2024-10-21",
            "api-key",
        ),
        (
            {"type": "azure", "base_url": "https://res.openai.azure.com"},
            "https://res.openai.azure.com/openai/v1/chat/completions",
            "api-key",
        ),
        ({"type": "groq"}, "https://api.groq.com/openai/v1/chat/completions", "authorization"),
        ({"type": "deepseek"}, "https://api.deepseek.com/chat/completions", "authorization"),
        ({"type": "mistral"}, "https://api.mistral.ai/v1/chat/completions", "authorization"),
        ({"type": "openrouter"}, "https://openrouter.ai/api/v1/chat/completions", "authorization"),
        ({"type": "ollama"}, "http://localhost:11434/v1/chat/completions", None),
    ],
)
def test_presets_need_no_base_url(table, url, header):
    config = parse_config({"providers": {"p": table}})
    keys = config.resolve_keys({})
    provider = build_provider("p", config.providers["p"])
    key = keys["p"][0] if keys["p"] else KEY
    with httpx2.Client() as client:
        request = provider.build_request(client, key, "dep1", [Message("user", "hi")], CallParams(stream=True))
    assert str(request.url) == url
    if header:
        assert header in request.headers
    else:
        assert "authorization" not in request.headers and key.secret == ""
    if table["type"] == "mistral":
        assert "stream_options" not in body_of(request)


def test_azure_requires_a_base_url():
    from mcp_keygate.config import ConfigError

    with pytest.raises(ConfigError, match="base_url is required for type 'azure'"):
        parse_config({"providers": {"az": {"type": "azure", "keys": []}}})


def test_zero_config_covers_every_preset():
    env = {
        "OPENAI_API_KEY": "sk-o",
        "ANTHROPIC_API_KEYS": "a1,a2",
        "GOOGLE_API_KEY": "g1",
        "GROQ_API_KEY": "q1",
        "MISTRAL_API_KEY": "m1",
        "DEEPSEEK_API_KEY": "d1",
        "OPENROUTER_API_KEY": "r1",
    }
    config = config_from_env(env)
    assert set(config.providers) == {"openai", "anthropic", "gemini", "groq", "mistral", "deepseek", "openrouter"}
    route = config.route("default")
    assert route[:3] == ["gpt-4.1-mini", "claude-sonnet-5", "gemini-2.5-flash"]
    assert len(config.resolve_keys(env)["anthropic"]) == 2


# --- stream decoders ---------------------------------------------------------------------------


def test_openai_stream_needs_a_finish_reason():
    decoder = OpenAIStream()
    decoder.feed(None, json.dumps({"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}))
    with pytest.raises(MalformedResponse):
        decoder.finish()
    decoder.feed(None, json.dumps({"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]}))
    decoder.feed(None, json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    decoder.feed(None, "[DONE]")
    done = decoder.finish()
    assert done.text == "Hello" and done.usage.input_tokens == 3


def test_openai_stream_error_chunks_fail_the_attempt():
    with pytest.raises(StreamFailed) as info:
        OpenAIStream().feed(None, json.dumps({"error": {"message": "boom", "type": "server_error"}}))
    assert info.value.verdict.outcome is Outcome.UPSTREAM_ERROR
    with pytest.raises(StreamFailed):
        OpenAIStream().feed(None, json.dumps({"choices": [{"delta": {}, "finish_reason": "error"}]}))


def test_anthropic_stream_needs_message_stop_and_maps_error_events():
    decoder = AnthropicStream()
    decoder.feed(
        "message_start", json.dumps({"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 9}}})
    )
    decoder.feed(
        "content_block_delta",
        json.dumps({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
    )
    decoder.feed(
        "message_delta",
        json.dumps({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1}}),
    )
    with pytest.raises(MalformedResponse):
        decoder.finish()
    decoder.feed("message_stop", json.dumps({"type": "message_stop"}))
    done = decoder.finish()
    assert (done.text, done.finish_reason, done.usage.input_tokens, done.usage.output_tokens) == ("Hi", "length", 9, 1)
    with pytest.raises(StreamFailed) as info:
        AnthropicStream().feed(
            "error", json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        )
    assert info.value.verdict.outcome is Outcome.OVERLOADED


def test_gemini_stream_needs_a_final_finish_reason():
    decoder = GeminiStream()
    decoder.feed(None, json.dumps({"candidates": [{"content": {"parts": [{"text": "Hi "}]}}]}))
    with pytest.raises(MalformedResponse):
        decoder.finish()
    decoder.feed(
        None,
        json.dumps(
            {
                "candidates": [{"content": {"parts": [{"text": "there"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
            }
        ),
    )
    assert decoder.finish().text == "Hi there"
    with pytest.raises(StreamFailed) as info:
        GeminiStream().feed(
            None, json.dumps({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
        )
    assert info.value.verdict.outcome is Outcome.OVERLOADED


# --- context fitting ---------------------------------------------------------------------------


def test_fit_drops_oldest_turns_but_keeps_system_and_newest_user_turn():
    messages = [Message("system", "s" * 40)]
    for i in range(10):
        messages += [Message("user", f"q{i} " + "x" * 200), Message("assistant", f"a{i} " + "y" * 200)]
    messages.append(Message("user", "newest " + "z" * 100))
    estimator = TokenEstimator()
    fitted, dropped = fit_history(messages, 400, estimator, "m")
    assert dropped > 0 and estimator.estimate("m", fitted) <= 400
    assert fitted[0] == messages[0] and fitted[-1] == messages[-1]
    assert fitted[1:-1] == messages[1 + dropped : -1]


def test_fit_sends_the_essentials_even_when_they_alone_overflow():
    messages = [Message("system", "s"), Message("user", "old"), Message("user", "x" * 10_000)]
    fitted, dropped = fit_history(messages, 10, TokenEstimator(), "m")
    assert fitted == [messages[0], messages[2]] and dropped == 1


def test_calibration_tracks_the_providers_count():
    estimator = TokenEstimator()
    messages = [Message("user", "x" * 400)]
    before = estimator.estimate("m", messages)
    for _ in range(10):
        estimator.calibrate("m", messages, before * 2)
    assert estimator.estimate("m", messages) == pytest.approx(before * 2, rel=0.05)
    assert estimator.estimate("other", messages) == before
