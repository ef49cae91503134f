"""The corpus as data: the index in tests/fixtures agrees with it, the docs are generated from it, a
malformed entry is refused in one clear line, and the waits written in replies are used.

Regenerate the index after adding entries:
    python -c "import json; from mcp_keygate.simulator.corpus import load_corpus as l; c = l();
    print(json.dumps({p: sorted(n for n, e in c.items() if e.provider == p)
    for p in sorted({e.provider for e in c.values()})}, indent=2))" > tests/fixtures/provider_errors/index.json
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from mcp_keygate.outcomes import Outcome
from mcp_keygate.providers.anthropic import classify_anthropic_error
from mcp_keygate.providers.gemini import classify_gemini_error
from mcp_keygate.providers.openai import classify_openai_error
from mcp_keygate.resets import epoch_wait, regain_access_wait
from mcp_keygate.simulator import parse_scenario
from mcp_keygate.simulator.corpus import CorpusError, load_corpus, parse_entry
from mcp_keygate.simulator.corpus_docs import main as docs_main

from .conftest import REPO

CORPUS = load_corpus()
GOOD = json.loads(json.dumps(next(iter(json.loads((REPO / "mcp_keygate/simulator/corpus/openai.json").read_text())))))


def test_the_fixture_index_names_every_corpus_entry():
    index = json.loads((REPO / "tests/fixtures/provider_errors/index.json").read_text())
    assert {name for names in index.values() for name in names} == set(CORPUS)
    assert all(CORPUS[name].provider == provider for provider, names in index.items() for name in names)


def test_the_readme_table_and_the_errors_page_are_generated_from_the_corpus(capsys):
    assert docs_main(["--check", str(REPO)]) == 0, capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    assert all(entry.signal.replace("|", "\\|") in readme for entry in CORPUS.values())
    page = (REPO / "docs/provider-errors.md").read_text()
    assert all(f"`{name}`" in page for name in CORPUS)


def test_a_stale_table_is_caught(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    readme = (REPO / "README.md").read_text().replace("Groq 401 `invalid_api_key`", "Groq 401 something else")
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs/provider-errors.md").write_text((REPO / "docs/provider-errors.md").read_text())
    assert docs_main(["--check", str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip().endswith("run python -m mcp_keygate.simulator.corpus_docs")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"status": 200}, "status must be an HTTP error status"),
        ({"provider": "acme"}, "provider must be one of"),
        ({"expect": {**GOOD["expect"], "outcome": "fine"}}, "expect.outcome must be one of"),
        ({"expect": {**GOOD["expect"], "wait": "tomorrow"}}, "expect.wait rule must be one of"),
        ({"body_text": "x"}, "give exactly one of body and body_text"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_a_malformed_entry_is_one_clear_line(change, problem):
    with pytest.raises(CorpusError) as info:
        parse_entry({**GOOD, **change}, "openai.json[0]")
    message = str(info.value)
    assert message.startswith(f"openai.json[0] ({GOOD['name']}): ") and problem in message
    assert "\n" not in message


def test_a_broken_corpus_file_fails_in_one_line_from_the_command_line(tmp_path):
    (tmp_path / "bad.json").write_text('[{"name": "x"}]')
    code = (
        "import sys\nfrom mcp_keygate.simulator.corpus import CorpusError, load_corpus\n"
        f"try:\n    load_corpus({str(tmp_path)!r})\nexcept CorpusError as e:\n    print(e); sys.exit(1)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout.strip() == "bad.json[0] (x): signal is required text"
    assert "Traceback" not in run.stderr


def test_a_scenario_naming_an_unknown_entry_is_refused():
    with pytest.raises(ValueError, match=r"keys\.k\.replay: no corpus entry named 'nope'"):
        parse_scenario({"keys": {"k": {"replay": "nope"}}})


def test_the_simulator_refuses_a_bad_replay_scenario_in_one_line(sim):
    answer = httpx2.post(f"{sim.url}/_sim/reset", content=b'{"keys": {"k": {"replay": "nope"}}}')
    assert answer.status_code == 400 and "no corpus entry named 'nope'" in answer.json()["error"]


# --- waits written in replies ---------------------------------------------------------------------


def test_a_future_regain_access_date_is_the_wait():
    now = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    message = "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
    assert regain_access_wait(message, now) == pytest.approx(3 * 86400 + 15 * 3600)
    assert regain_access_wait(message, dt.datetime(2026, 12, 2, tzinfo=dt.UTC)) is None  # stale


def test_the_anthropic_spend_limit_message_parks_the_key_until_its_date():
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    text = f"You have reached your specified API usage limits. You will regain access on {when:%Y-%m-%d} at 00:00 UTC."
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": text}}
    verdict = classify_anthropic_error(400, httpx2.Headers({}), body)
    midnight = dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)
    expected = (midnight - dt.datetime.now(dt.UTC)).total_seconds()
    assert verdict.outcome is Outcome.QUOTA_EXHAUSTED and verdict.retry_after_s == pytest.approx(expected, abs=5)


def test_openrouter_free_day_uses_its_reset_stamp_when_it_is_ahead():
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
    metadata = {"headers": {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0"}}
    metadata["headers"]["X-RateLimit-Reset"] = str(int(reset.timestamp() * 1000))
    body = {"error": {"message": "Rate limit exceeded: free-models-per-day.", "code": 429, "metadata": metadata}}
    verdict = classify_openai_error(429, {}, body)
    assert verdict.outcome is Outcome.QUOTA_EXHAUSTED and verdict.retry_after_s == pytest.approx(5 * 3600, abs=5)
    assert epoch_wait("garbled") is None


def test_gemini_limit_zero_holds_only_that_model():
    entry = CORPUS["gemini-429-free-tier-limit-0"]
    verdict = classify_gemini_error(429, {}, entry.body)
    assert verdict.outcome is Outcome.RATE_LIMITED and verdict.model_only
    assert verdict.retry_after_s is not None and verdict.retry_after_s > 60  # not the "retry in 38s" hint


def test_the_corpus_ships_with_the_package():
    assert Path(str(REPO / "pyproject.toml")).read_text().count("simulator/corpus/*.json") == 1
