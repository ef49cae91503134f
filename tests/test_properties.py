"""Property tests: parsers and classifiers never crash on anything, translation keeps every word in
order, config validation only ever says ConfigError, scrubbing leaves no run of a key."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_keygate.config import ConfigError, parse_config
from mcp_keygate.keys.secret import scrub
from mcp_keygate.messages import Message
from mcp_keygate.outcomes import Outcome, parse_go_duration, parse_retry_after_headers, parse_wait_phrase
from mcp_keygate.providers.anthropic import classify_anthropic_error
from mcp_keygate.providers.gemini import classify_gemini_error
from mcp_keygate.providers.openai import classify_openai_error
from mcp_keygate.providers.turns import CONTINUATION, alternating

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
error_like = st.fixed_dictionaries(
    {},
    optional={
        "error": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "message": json_values,
                    "type": json_values,
                    "code": json_values,
                    "status": json_values,
                    "details": st.lists(
                        st.dictionaries(
                            st.sampled_from(["@type", "violations", "retryDelay", "reason", "quotaId"]), json_values
                        ),
                        max_size=3,
                    ),
                },
            ),
        ),
        "type": json_values,
        "message": json_values,
    },
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "retry-after-ms", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"]),
    st.text(max_size=30),
)


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_duration_and_phrase_parsers_never_crash(text):
    for value in (parse_go_duration(text), parse_wait_phrase(text)):
        assert value is None or value >= 0


@settings(max_examples=300)
@given(headers)
def test_retry_after_headers_never_crash(hdrs):
    value = parse_retry_after_headers(hdrs)
    assert value is None or value >= 0


@settings(max_examples=400)
@given(st.integers(min_value=300, max_value=599), headers, st.one_of(error_like, json_values))
def test_classifiers_never_crash_on_any_body(status, hdrs, body):
    for classify in (classify_openai_error, classify_anthropic_error, classify_gemini_error):
        verdict = classify(status, hdrs, body)
        assert isinstance(verdict.outcome, Outcome) and verdict.outcome is not Outcome.OK
        assert "\n" not in verdict.reason and "\x1b" not in verdict.reason
        json.dumps(verdict.reason)


messages = st.lists(
    st.builds(
        Message,
        st.sampled_from(["user", "assistant"]),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(messages)
def test_alternating_keeps_every_word_in_order(history):
    shaped = alternating(history)
    assert all(m.content.strip() for m in shaped)
    assert all(a.role != b.role for a, b in itertools.pairwise(shaped))
    if shaped:
        assert shaped[0].role == "user"
    said = [m.content for m in history if m.content.strip()]
    flat = "\n\n".join(m.content for m in shaped if m.content != CONTINUATION)
    assert flat == "\n\n".join(said)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["state", "providers", "models", "routes", "server", "limits", "junk"]), json_values, max_size=5
    )
)
def test_config_validation_only_ever_raises_config_error(data):
    try:
        parse_config(data)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@settings(max_examples=300)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=60),
    st.text(max_size=40),
    st.integers(0, 30),
)
def test_scrub_leaves_no_eight_character_run_of_the_key(secret, noise, cut):
    text = f"{noise} key {secret} and part {secret[cut:]} {noise}"
    cleaned = scrub(text, [secret])
    assert not any(secret[i : i + 8] in cleaned for i in range(len(secret) - 7))


def test_a_reason_stored_before_reasons_were_cleaned_loads_as_one_printable_line():
    from mcp_keygate.keys.state import Hold

    hold = Hold.from_dict({"state": "exhausted", "until": None, "reason": "401: bad \ud800key\u2028next \u202eline"})
    assert hold.reason == "401: bad  key next  line"
    hold.reason.encode("utf-8")  # a lone surrogate would raise here (and in every view)


header_names = st.sampled_from(
    ["Retry-After", "retry-after", "RETRY-AFTER", "x-ratelimit-remaining-requests", "X-RateLimit-Reset-Tokens"]
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@given(st.lists(st.tuples(header_names, header_values), max_size=6), header_names)
def test_the_header_view_reads_exactly_what_httpx2_headers_read(pairs, asked):
    """Classifiers read a reply's headers through `HeaderView` (a dict, for speed): any mix of
    case and repeated headers must read the same as through httpx2's own `Headers`."""
    import httpx2

    from mcp_keygate.providers.base import HeaderView

    headers = httpx2.Headers(pairs)
    view = HeaderView(headers)
    assert view.get(asked) == headers.get(asked)
    assert (asked in view) == (asked in headers)
    assert {name.lower() for name in view} == {name.lower() for name in headers}
    for kind in (classify_openai_error, classify_anthropic_error, classify_gemini_error):
        assert kind(429, view, {}) == kind(429, headers, {})
