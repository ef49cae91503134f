"""Config validation: every mistake names its field; env references; zero-config."""

from __future__ import annotations

import tomllib

import pytest

from mcp_keygate.config import ConfigError, config_from_env, load_config, load_config_file, parse_config

GOOD = {
    "providers": {"openai": {"type": "openai", "keys": ["${KEY_A}", "${KEY_B}"]}},
    "models": {"mini": {"provider": "openai", "model": "gpt-4.1-mini"}},
    "routes": {"default": ["mini"]},
}


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_good_config_resolves_env_keys():
    config = parse_config(GOOD)
    keys = config.resolve_keys({"KEY_A": "sk-aaaaaaaaaaaa", "KEY_B": "sk-bbbbbbbbbbbb"})
    assert [k.index for k in keys["openai"]] == [0, 1]
    assert all(k.key_id.startswith("openai:") for k in keys["openai"])
    assert config.warnings() == []


def test_comma_separated_env_gives_several_keys_and_duplicates_collapse():
    config = parse_config(GOOD)
    keys = config.resolve_keys({"KEY_A": "k1-xxxxxxxx, k2-yyyyyyyy", "KEY_B": "k1-xxxxxxxx"})
    assert len(keys["openai"]) == 2


def test_missing_env_var_names_field_and_variable():
    config = parse_config(GOOD)
    with pytest.raises(ConfigError) as info:
        config.resolve_keys({"KEY_A": "x"})
    assert info.value.problems == [
        "providers.openai.keys[1]: environment variable KEY_B is not set (export it, or remove the reference)"
    ]


def test_unknown_field_is_named():
    data = {**GOOD, "providers": {"openai": {"type": "openai", "keys": [], "stratgy": "priority"}}}
    assert problems_of(data) == ["providers.openai.stratgy: unknown field; did you mean 'strategy'?"]
    assert problems_of({**GOOD, "provider": {}}) == ["provider: unknown field; did you mean 'providers'?"]
    far = {**GOOD, "providers": {"openai": {"type": "openai", "keys": [], "zzz": 1}}}
    assert problems_of(far) == ["providers.openai.zzz: unknown field (check the spelling against the config reference)"]


def test_a_number_written_as_text_is_refused_not_guessed():
    assert problems_of({**GOOD, "server": {"port": "8931"}}) == [
        "server.port: Input should be a valid integer (got '8931')"
    ]


def test_bad_enum_value_is_named_with_expected_values():
    data = {**GOOD, "providers": {"openai": {"type": "openai", "keys": [], "strategy": "fast"}}}
    (problem,) = problems_of(data)
    assert problem.startswith("providers.openai.strategy:")
    assert "'balanced', 'priority' or 'round_robin'" in problem and "'fast'" in problem


def test_route_naming_unknown_model_and_model_naming_unknown_provider():
    data = {
        "providers": {"openai": {"keys": []}},
        "models": {"mini": {"provider": "opnai"}},
        "routes": {"default": ["mini", "maxi"]},
    }
    problems = problems_of(data)
    assert "models.mini.provider: unknown provider 'opnai' (known: openai)" in problems
    assert "routes.default[1]: unknown model 'maxi' (known: mini)" in problems


def test_literal_key_is_warned_about():
    data = {**GOOD, "providers": {"openai": {"keys": ["sk-literal-key-in-file"]}}}
    config = parse_config(data)
    (warning,) = config.warnings()
    assert warning.startswith("providers.openai.keys[0]: a literal key")
    assert "sk-literal" not in warning


def test_routes_default_to_every_model():
    config = parse_config({"providers": {"p": {}}, "models": {"a": {"provider": "p"}, "b": {"provider": "p"}}})
    assert config.route("default") == ["a", "b"]
    assert config.route("a") == ["a"]
    assert config.route("nope") is None


def test_malformed_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[providers.openai\nkeys = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "not valid TOML" in info.value.problems[0]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config_file(tmp_path / "nope.toml")


def test_zero_config_from_env():
    config = config_from_env({"OPENAI_API_KEYS": "sk-one-xxxxxxxx,sk-two-yyyyyyyy"})
    assert list(config.providers) == ["openai"]
    assert config.route("default") == ["gpt-4.1-mini", "gpt-4.1"]
    keys = config.resolve_keys({"OPENAI_API_KEYS": "sk-one-xxxxxxxx,sk-two-yyyyyyyy"})
    assert len(keys["openai"]) == 2


def test_zero_config_without_keys_is_empty():
    assert config_from_env({}).providers == {}


def test_config_path_precedence(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('[providers.x]\nkeys = []\n[models.m]\nprovider = "x"\n', encoding="utf-8")
    assert list(load_config(None, {"KEYGATE_CONFIG": str(path)}).models) == ["m"]
    assert list(load_config(None, {"OPENAI_API_KEY": "sk-x"}).providers) == ["openai"]


def test_public_names_load_on_first_use():
    import mcp_keygate

    for name in mcp_keygate.__all__:
        assert getattr(mcp_keygate, name) is not None
    with pytest.raises(AttributeError):
        mcp_keygate.nothing_here  # noqa: B018


def test_the_example_config_and_the_readme_examples_are_valid():
    """The config a newcomer copies must work as written."""
    import re
    import tomllib

    from mcp_keygate.config import load_config_file, parse_config

    from .conftest import REPO

    example = load_config_file(REPO / "keygate.example.toml")
    env = {"OPENAI_KEY_A": "a", "OPENAI_KEY_B": "b", "ANTHROPIC_API_KEYS": "c,d", "GEMINI_API_KEYS": "e"}
    assert sum(len(k) for k in example.resolve_keys(env).values()) == 5
    assert set(example.presets) == {"summarize", "translate"}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    presets = next(b for b in blocks if "presets" in b and "summarize" in b["presets"])
    policies = next(b for b in blocks if "support-team" in b.get("policies", {}))
    base = tomllib.loads((REPO / "keygate.example.toml").read_text(encoding="utf-8"))
    config = parse_config({**base, "presets": presets["presets"], "policies": policies["policies"]})
    assert config.presets["summarize"].parameters["audience"].default == "a busy engineer"
    assert config.policies["support-team"].budget().rpm == 60


def test_env_references_expand_in_every_string_field_and_urls_are_checked():
    from mcp_keygate.config import ConfigError, parse_config

    data = {
        "state": {"backend": "redis", "url": "${REDIS_URL}"},
        "providers": {"p": {"base_url": "${OPENAI_BASE}", "keys": ["${KEY}"], "headers": {"X-Team": "${TEAM}"}}},
        "models": {"m": {"provider": "p"}},
    }
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0", "OPENAI_BASE": "http://127.0.0.1:9/v1", "TEAM": "blue"}
    config = parse_config(data, env=env)
    assert config.providers["p"].base_url == "http://127.0.0.1:9/v1" and config.state.url == env["REDIS_URL"]
    assert config.providers["p"].headers == {"X-Team": "blue"}
    assert config.providers["p"].keys == ["${KEY}"]  # keys are expanded only when used, never kept in the config
    with pytest.raises(ConfigError) as missing:
        parse_config(data, env={})
    assert "providers.p.base_url: environment variable OPENAI_BASE is not set" in str(missing.value)
    assert "state.url: environment variable REDIS_URL is not set" in str(missing.value)
    with pytest.raises(ConfigError) as scheme:
        parse_config(data, env={**env, "OPENAI_BASE": "127.0.0.1:9/v1", "REDIS_URL": "localhost:6379"})
    assert "providers.p.base_url: must start with http:// or https:// (got '127.0.0.1:9/v1')" in str(scheme.value)
    assert "state.url: must start with redis://" in str(scheme.value)


def test_a_placeholder_left_by_install_is_not_a_key():
    from mcp_keygate.config import ConfigError, parse_config

    config = parse_config({"providers": {"p": {"keys": ["${OPENAI_KEY_A}"]}}, "models": {"m": {"provider": "p"}}})
    with pytest.raises(ConfigError) as info:
        config.resolve_keys({"OPENAI_KEY_A": "<set OPENAI_KEY_A>"})
    assert "still holds the placeholder '<set OPENAI_KEY_A>' that install wrote" in str(info.value)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_infinite_or_nan_numbers_are_refused_with_the_field_named(value):
    with pytest.raises(ConfigError) as refused:
        parse_config(tomllib.loads(f"[server]\nresume_buffer_mb = {value}\n"))
    assert "server.resume_buffer_mb" in str(refused.value)


def test_a_credential_in_base_url_is_refused_without_repeating_it():
    """`user:pass@host` in a base_url would send Basic auth in place of the key (httpx2) or fail every
    call (aiohttp): refused at load, in one line that names the field and never prints the secret."""
    secret = "proxy-" + "s3cr3t" * 4
    data = {
        "providers": {"p": {"base_url": f"https://user:{secret}@proxy.example/v1", "keys": ["${K}"]}},
        "models": {"m": {"provider": "p"}},
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(data, env={"K": "sk-test-0000000000"})
    assert "providers.p.base_url: must not hold a user name or password" in str(refused.value)
    assert secret not in str(refused.value) and "proxy.example" not in str(refused.value)
