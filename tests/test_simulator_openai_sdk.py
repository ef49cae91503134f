"""The simulator speaks OpenAI faithfully: the official `openai` SDK parses its answers and errors."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")


def client(sim, key: str):
    return openai.OpenAI(api_key=key, base_url=sim.openai_base, max_retries=0)


def test_sdk_parses_a_completion_and_its_rate_limit_headers(sim):
    raw = client(sim, "sim-ok-sdk000000001").chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("[gpt-4.1-mini] I received 1 message(s)")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert int(raw.headers["x-ratelimit-remaining-requests"]) >= 0
    assert raw.headers["x-ratelimit-reset-tokens"].endswith("s")


def test_sdk_streams_with_usage(sim):
    stream = client(sim, "sim-ok-sdk000000002").chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Tell me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[gpt-4.1] I received 1 message(s)")
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


@pytest.mark.parametrize(
    ("key", "error", "code"),
    [
        ("sim-ratelimit-sdk00001", "RateLimitError", "rate_limit_exceeded"),
        ("sim-quota-sdk00000001", "RateLimitError", "insufficient_quota"),
        ("sim-invalid-sdk0000001", "AuthenticationError", "invalid_api_key"),
        ("sim-overloaded-sdk00001", "InternalServerError", "server_is_overloaded"),
    ],
)
def test_sdk_raises_the_right_exception_for_each_magic_key(sim, key, error, code):
    with pytest.raises(getattr(openai, error)) as info:
        client(sim, key).chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == code
    if code == "rate_limit_exceeded":
        assert info.value.response.headers["retry-after"] == "30"


def test_sdk_sees_context_overflow_as_bad_request(sim):
    import httpx2

    httpx2.post(f"{sim.url}/_sim/reset", json={"models": {"tiny": {"context_window": 10}}}).raise_for_status()
    with pytest.raises(openai.BadRequestError) as info:
        client(sim, "sim-ok-sdk000000003").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 100}]
        )
    assert info.value.code == "context_length_exceeded"
