"""`mcp-keygate models PROVIDER` and `check --online`, run as a user would against the simulator's
model lists (OpenAI-compatible, Anthropic and Gemini shapes) over real HTTP: a misspelt model is
found before any call, a refused key is named by its id, and no key is ever printed."""

from __future__ import annotations

import json

import httpx2

from .conftest import write_toml
from .test_cli import run_cli

GOOD, BAD = "sim-ok-models-0001", "sim-invalid-models-0002"


def _config(tmp_path, sim, *, model: str = "gpt-4.1-mini", keys: list[str] | None = None):
    data = {
        "state": {"backend": "memory"},
        "providers": {
            "oa": {"type": "openai", "base_url": sim.openai_base, "keys": keys or [GOOD]},
            "an": {"type": "anthropic", "base_url": sim.url, "keys": [GOOD]},
            "ge": {"type": "gemini", "base_url": sim.url, "keys": [GOOD]},
        },
        "models": {
            "mini": {"provider": "oa", "model": model},
            "haiku": {"provider": "an", "model": "claude-haiku-4-5"},
            "flash": {"provider": "ge", "model": "gemini-2.5-flash"},
        },
        "routes": {"default": ["mini", "haiku", "flash"]},
    }
    return write_toml(tmp_path / "keygate.toml", data)


def test_models_lists_what_each_api_offers(tmp_path, sim):
    path = _config(tmp_path, sim)
    for provider, expected in (("oa", "gpt-4.1-mini"), ("an", "claude-haiku-4-5"), ("ge", "gemini-2.5-flash")):
        run = run_cli("models", provider, "--config", str(path), "--json")
        assert run.returncode == 0, run.stderr
        rows = json.loads(run.stdout)
        assert len(rows) == 1 and expected in rows[0]["models"] and rows[0]["error"] is None
        assert GOOD not in run.stdout and GOOD not in run.stderr
    paths = [e["path"] for e in httpx2.get(f"{sim.url}/_sim/log").json()["requests"]]
    assert paths == []  # listing models sends no completion


def test_models_names_a_refused_key_by_id_only(tmp_path, sim):
    path = _config(tmp_path, sim, keys=[GOOD, BAD])
    run = run_cli("models", "oa", "--config", str(path))
    assert run.returncode == 1
    assert "auth_failed: 401 invalid_api_key" in run.stdout and "1 of 2 keys" in run.stdout
    assert BAD not in run.stdout + run.stderr and GOOD not in run.stdout + run.stderr


def test_models_for_an_unknown_provider_is_one_line(tmp_path, sim):
    run = run_cli("models", "nope", "--config", str(_config(tmp_path, sim)))
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0
    assert "no provider 'nope' in the config (providers: an, ge, oa)" in run.stderr


def test_check_online_finds_a_misspelt_model_before_any_call(tmp_path, sim):
    good = run_cli("check", "--online", "--config", str(_config(tmp_path, sim)))
    assert good.returncode == 0, good.stderr
    bad = run_cli("check", "--online", "--config", str(_config(tmp_path, sim, model="gpt-4.1-mnii")))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "mcp-keygate: models.mini.model = 'gpt-4.1-mnii': provider oa (key "
        + bad.stderr.split("(key ")[1].split(")")[0]
        + ") does not list it"
    ]
    assert "Traceback" not in bad.stderr and GOOD not in bad.stderr
    offline = run_cli("check", "--config", str(_config(tmp_path, sim, model="gpt-4.1-mnii")))
    assert offline.returncode == 0  # without --online nothing is asked
