"""Retry-after parsing and the OpenAI-compatible classifier, on the reference's fixture bodies."""

from __future__ import annotations

import email.utils
import time

import pytest

from mcp_keygate.outcomes import (
    Outcome,
    parse_go_duration,
    parse_retry_after_headers,
    parse_wait_phrase,
    retry_after_from,
)
from mcp_keygate.providers.openai import classify_openai_error


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("2m59.56s", 179.56),
        ("9m38.016s", 578.016),
        ("1h2m3s", 3723.0),
        ("500us", 0.0005),
    ],
)
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5", "1x", "s"])
def test_not_go_durations(text):
    assert parse_go_duration(text) is None


def test_retry_after_ms_wins_over_seconds():
    assert parse_retry_after_headers({"retry-after-ms": "1500", "retry-after": "9"}) == pytest.approx(1.5)


def test_retry_after_seconds_and_float():
    assert parse_retry_after_headers({"retry-after": "30"}) == 30.0
    assert parse_retry_after_headers({"retry-after": "0.5"}) == 0.5


def test_retry_after_http_date():
    now = time.time()
    header = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after_headers({"retry-after": header}, now=now) == pytest.approx(120, abs=1.5)


def test_retry_after_garbage_is_none():
    assert parse_retry_after_headers({"retry-after": "soon"}) is None
    assert parse_retry_after_headers({}) is None


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 644ms. Visit …", 0.644),
        ("Please try again in 9m38.016s.", 578.016),
        ("You exceeded your current quota … Please retry in 37.2s.", 37.2),
        ("Please retry in 45.578569677s", 45.578569677),
        ("Requests to the ChatCompletions_Create Operation … Please retry after 6 seconds.", 6.0),
        ("Please retry after 86400 seconds.", 86400.0),
        ("try again in 2 minutes", 120.0),
        ("nothing to see", None),
    ],
)
def test_wait_phrases(message, seconds):
    got = parse_wait_phrase(message)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_headers_beat_body():
    assert retry_after_from({"retry-after": "3"}, "Please try again in 644ms") == 3.0
    assert retry_after_from({}, "Please try again in 644ms") == pytest.approx(0.644)


# --- the reference's fixture bodies ------------------------------------------------------------

TPM_429 = {
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-X on tokens per min (TPM): Limit 30000, "
        "Used 29937, Requested 385. Please try again in 644ms. Visit https://platform.openai.com/account/rate-limits",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
QUOTA_429 = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
OLD_QUOTA_429 = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": None}}
INVALID_401 = {
    "error": {
        "message": "Incorrect API key provided: sk-…abcd. You can find your API key at …",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
CONTEXT_400 = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 8227 "
        "tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
OVERLOAD_503 = {
    "error": {"message": "…", "type": "service_unavailable_error", "param": None, "code": "server_is_overloaded"}
}
MISTRAL_429 = {
    "object": "error",
    "message": "Rate limit exceeded",
    "type": "rate_limited",
    "param": None,
    "code": "1300",
}
GROQ_TPD_429 = {
    "error": {
        "message": "Rate limit reached for model `llama-3.3-70b-versatile` in organization org_x on tokens per day "
        "(TPD): Limit 100000, Used 99920, Requested 1117. Please try again in 9m38.016s.",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
}
AZURE_429 = {
    "error": {"code": "429", "message": "Requests … have exceeded call rate limit. Please retry after 6 seconds."}
}
AZURE_DAY_429 = {"error": {"code": "429", "message": "… quota exceeded. Please retry after 86400 seconds."}}
DEEPSEEK_402 = {
    "error": {
        "message": "Insufficient Balance",
        "type": "unknown_error",
        "param": None,
        "code": "invalid_request_error",
    }
}
OPENROUTER_402 = {"error": {"code": 402, "message": "Insufficient credits", "metadata": {}}}


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "wait"),
    [
        (429, {"retry-after": "1"}, TPM_429, Outcome.RATE_LIMITED, 1.0),
        (429, {}, TPM_429, Outcome.RATE_LIMITED, 0.644),
        (429, {}, QUOTA_429, Outcome.QUOTA_EXHAUSTED, None),
        (429, {"retry-after": "20"}, QUOTA_429, Outcome.QUOTA_EXHAUSTED, None),
        (429, {}, OLD_QUOTA_429, Outcome.QUOTA_EXHAUSTED, None),
        (401, {}, INVALID_401, Outcome.AUTH_FAILED, None),
        (
            403,
            {},
            {
                "error": {
                    "message": "Country, region, or territory not supported",
                    "code": "unsupported_country_region_territory",
                }
            },
            Outcome.AUTH_FAILED,
            None,
        ),
        (400, {}, CONTEXT_400, Outcome.CONTEXT_TOO_LONG, None),
        (503, {}, OVERLOAD_503, Outcome.OVERLOADED, None),
        (
            500,
            {},
            {"error": {"message": "The server had an error", "type": "server_error"}},
            Outcome.UPSTREAM_ERROR,
            None,
        ),
        (502, {}, None, Outcome.UPSTREAM_ERROR, None),
        (429, {}, MISTRAL_429, Outcome.RATE_LIMITED, None),
        (429, {}, GROQ_TPD_429, Outcome.QUOTA_EXHAUSTED, 578.016),
        (498, {}, {"error": {"message": "capacity exceeded", "code": "capacity_exceeded"}}, Outcome.OVERLOADED, None),
        (413, {}, {"error": {"message": "Request too large"}}, Outcome.CONTEXT_TOO_LONG, None),
        (429, {}, AZURE_429, Outcome.RATE_LIMITED, 6.0),
        (429, {}, AZURE_DAY_429, Outcome.QUOTA_EXHAUSTED, 86400.0),
        (402, {}, DEEPSEEK_402, Outcome.QUOTA_EXHAUSTED, None),
        (402, {}, OPENROUTER_402, Outcome.QUOTA_EXHAUSTED, None),
        (402, {"Retry-After": "5"}, OPENROUTER_402, Outcome.RATE_LIMITED, 5.0),
        (
            400,
            {},
            {"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error"}},
            Outcome.BAD_REQUEST,
            None,
        ),
        (
            429,
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
            {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
            Outcome.RATE_LIMITED,
            360.0,
        ),
    ],
)
def test_classifier_on_reference_bodies(status, headers, body, outcome, wait):
    import httpx2

    verdict = classify_openai_error(status, httpx2.Headers(headers), body)
    assert verdict.outcome is outcome
    assert verdict.status_code == status
    if wait is None:
        assert verdict.retry_after_s is None or outcome not in (Outcome.QUOTA_EXHAUSTED, Outcome.AUTH_FAILED)
    else:
        assert verdict.retry_after_s == pytest.approx(wait)


def test_classifier_survives_odd_bodies():
    for body in (None, "text", [], {"error": "plain"}, {"error": 5}, {"message": None}):
        verdict = classify_openai_error(429, {}, body)
        assert verdict.outcome is Outcome.RATE_LIMITED


def test_reason_is_one_printable_line():
    body = {"error": {"message": "bad\x1b[31m red\nline" + "x" * 500, "code": "x"}}
    reason = classify_openai_error(400, {}, body).reason
    assert "\x1b" not in reason and "\n" not in reason and len(reason) < 220
