"""Secret hygiene: run realistic scenarios with random canary keys — including an upstream that
echoes part of the key in its 401 body, as OpenAI's does — then scan everything the program
produced for any 12-character run of any key."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.metrics import Metrics
from mcp_keygate.router import RouteFailed

from .conftest import server_params, write_toml
from .test_cli import run_cli

pytestmark = pytest.mark.anyio

RUN = 12


def canaries() -> dict[str, str]:
    """Keys the simulator treats by prefix, with a long random tail nobody else could print."""
    return {
        kind: f"sim-{kind}-{secrets.token_hex(20)}" for kind in ("ratelimit", "quota", "invalid", "ok", "overloaded")
    }


def leaks(text: str, keys: list[str]) -> list[str]:
    found = []
    for key in keys:
        for i in range(len(key) - RUN + 1):
            run = key[i : i + RUN]
            if run in text:
                found.append(run)
                break
    return found


async def test_no_key_reaches_any_output(sim, tmp_path):
    keys = canaries()
    env = {
        "PRIMARY": f"{keys['ratelimit']},{keys['quota']},{keys['invalid']}",
        "BACKUP": f"{keys['overloaded']},{keys['ok']}",
    }
    state = tmp_path / "state.db"
    data = {
        "state": {"backend": "sqlite", "path": str(state)},
        "providers": {
            "primary": {"base_url": sim.openai_base, "keys": ["${PRIMARY}"], "strategy": "priority"},
            "backup": {"base_url": sim.openai_base, "keys": ["${BACKUP}"], "strategy": "priority"},
        },
        "models": {
            "mini": {"provider": "primary", "model": "gpt-4.1-mini"},
            "big": {"provider": "backup", "model": "gpt-4.1"},
        },
        "routes": {"default": ["mini", "big"], "only-mini": ["mini"]},
    }
    config = write_toml(tmp_path / "keygate.toml", data)
    produced: list[str] = []

    # 1. The real server over stdio at DEBUG: tool results, errors, progress, logs.
    params = server_params(config, env, log_level="DEBUG")
    errlog = (tmp_path / "stderr.log").open("w")
    progress: list[str] = []

    async def on_progress(value, total, message):
        progress.append(message or "")

    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        for prompt in ("first", "second"):
            result = await client.call_tool("complete", {"prompt": prompt}, progress_callback=on_progress)
            produced.append(json.dumps(result.model_dump(mode="json")))
        failed = await client.call_tool("complete", {"prompt": "x", "model": "only-mini", "max_wait_s": 0})
        assert failed.is_error
        produced.append(failed.content[0].text)
        for tool in ("key_status", "list_models"):
            produced.append(json.dumps((await client.call_tool(tool, {})).model_dump(mode="json")))
        rows = (await client.call_tool("key_status", {})).structured_content["keys"]
    errlog.close()
    produced += progress
    assert {r["state"] for r in rows} >= {"cooling", "exhausted", "disabled", "ready"}
    assert all(len(r["mask"].removeprefix("…")) <= 4 for r in rows)

    # 2. The CLI: status as a table and as JSON, check.
    for args in (
        ["status", "--config", str(config)],
        ["status", "--config", str(config), "--json"],
        ["check", "--config", str(config)],
    ):
        proc = run_cli(*args, env=env)
        produced += [proc.stdout, proc.stderr]

    # 3. The state file (and its WAL), byte for byte.
    for path in state.parent.glob("state.db*"):
        produced.append(path.read_bytes().decode("latin-1"))

    # 4. Metrics, and the in-process error text, with the debug logging of this process.
    gate = Keygate(parse_config(data), env=env)
    metrics = Metrics(gate.pool)
    async with gate:
        gate.observe(metrics)
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="x", model="only-mini", max_wait_s=0))
        produced.append(str(info.value))
        produced.append((await metrics.render()).decode())

    # 5. The server's stderr at DEBUG.
    server_log = Path(tmp_path / "stderr.log").read_text()
    assert "DEBUG" in server_log and "attempt model=mini" in server_log
    produced.append(server_log)

    everything = "\n".join(produced)
    assert "invalid_api_key" in everything  # the 401 (whose body echoes the key) really happened
    assert leaks(everything, list(keys.values())) == []


async def test_scrubbing_reaches_reasons_made_from_upstream_bodies(sim):
    key = f"sim-invalid-{secrets.token_hex(20)}"
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"base_url": sim.openai_base, "keys": [key]}},
        "models": {"m": {"provider": "p"}},
    }
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as info:
            await gate.complete(CompleteRequest(prompt="x"))
        reason = (await gate.views.key_status()).keys[0].reason
    assert "Incorrect API key provided" in reason
    assert leaks(reason + str(info.value), [key]) == []
    # What is left of the upstream's echo is its own mask: at most the key's last 4 characters.
    echoed = reason.split("provided:")[1].split(".")[0]
    assert not any(key[i : i + 5] in echoed for i in range(len(key) - 4))


async def test_a_token_in_a_replaced_base_url_is_not_kept_after_a_reload(sim):
    """A `base_url` may carry a token in its path (some gateways put an account or route token
    there). Request URLs are parsed once and kept for speed; after a reload that rotates it, no
    parsed URL with the old token may stay in the process."""
    import gc

    import httpx2

    old, new = f"tok-{secrets.token_hex(12)}", f"tok-{secrets.token_hex(12)}"

    def config(token: str):
        return parse_config(
            {
                "state": {"backend": "memory"},
                "providers": {"p": {"base_url": f"{sim.url}/{token}/v1", "keys": ["sim-ok-pathtoken0001"]}},
                "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
            }
        )

    async with Keygate(config(old)) as gate:
        with pytest.raises(RouteFailed):  # the simulator has no such path: the URL is built all the same
            await gate.complete(CompleteRequest(prompt="hello", max_wait_s=0))
        assert any(isinstance(o, httpx2.URL) and old in str(o) for o in gc.get_objects())  # it was cached
        await gate.reload(config(new))
        with pytest.raises(RouteFailed):
            await gate.complete(CompleteRequest(prompt="hello again", max_wait_s=0))
        gc.collect()
        kept = [str(o) for o in gc.get_objects() if isinstance(o, httpx2.URL) and old in str(o)]
        assert kept == []
