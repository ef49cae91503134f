"""End to end: `mcp-keygate serve` as a subprocess, a real MCP client over stdio, the simulator over HTTP.

Both handshakes are exercised: the 2026-07-28 discovery (mode "auto") and the 2025-11-25
initialize handshake that desktop clients still use (mode "legacy").
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx2
import pytest
from mcp import Client

from .conftest import REPO, fp, keys_used, server_params, sim_log, two_provider_config, write_toml

pytestmark = pytest.mark.anyio

RATE, QUOTA, GOOD = "sim-ratelimit-30s-e2e00001", "sim-quota-e2e00000002", "sim-ok-e2e0000000003"
BACKUP = "sim-ok-e2e0000backup"
ENV = {"PRIMARY_KEYS": f"{RATE},{QUOTA},{GOOD}", "BACKUP_KEY": BACKUP}


def write_config(tmp_path, sim, **overrides):
    data = two_provider_config(
        sim, ["${PRIMARY_KEYS}"], ["${BACKUP_KEY}"], backend="sqlite", path=str(tmp_path / "state.db")
    )
    data["providers"]["primary"]["strategy"] = "priority"
    data.update(overrides)
    return write_toml(tmp_path / "keygate.toml", data)


def rows_by_key(status) -> dict[str, dict]:
    return {row["key_id"]: row for row in status.structured_content["keys"]}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_rotation_status_and_no_calls_on_unusable_keys(sim, tmp_path, mode):
    config = write_config(tmp_path, sim)
    async with Client(server_params(config, ENV), mode=mode) as client:
        assert client.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        progress: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        result = await client.call_tool("complete", {"prompt": "hello"}, progress_callback=on_progress)
        assert not result.is_error, result.content
        data = result.structured_content
        assert [a["outcome"] for a in data["attempts"]] == ["rate_limited", "quota_exhausted", "ok"]
        assert progress[:2] == [
            f"{data['attempts'][0]['key_id']} rate-limited for 30 s, trying next key",
            f"{data['attempts'][1]['key_id']} out of quota, trying next key",
        ]
        assert data["model"] == "mini" and data["provider"] == "primary"

        status = await client.call_tool("key_status", {"provider": "primary"})
        rows = status.structured_content["keys"]
        assert [r["state"] for r in rows] == ["cooling", "exhausted", "ready"]
        assert rows[0]["model"] == "gpt-4.1-mini" and 25 <= rows[0]["ready_in_s"] <= 30
        assert rows[1]["model"] is None and rows[1]["reason"].startswith("429 insufficient_quota")
        assert rows[2]["key_id"] == data["key_id"]
        for row in rows:
            assert len(row["mask"].lstrip("…")) <= 4

        for i in range(5):
            more = await client.call_tool(
                "complete", {"prompt": f"again {i}", "conversation_id": data["conversation_id"]}
            )
            assert [a["outcome"] for a in more.structured_content["attempts"]] == ["ok"]
    used = keys_used(sim)
    assert used.count(fp(RATE)) == 1 and used.count(fp(QUOTA)) == 1 and used.count(fp(GOOD)) == 6
    assert len(sim_log(sim)[-1]["messages"]) == 11  # the whole conversation each time


async def test_fallback_to_another_provider_with_full_history_and_progress(sim, tmp_path):
    httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {GOOD: {"rpm": 1}}}).raise_for_status()
    config = write_config(tmp_path, sim)
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(server_params(config, ENV)) as client:
        first = await client.call_tool("complete", {"prompt": "What is 2+2?", "system": "Answer briefly."})
        cid = first.structured_content["conversation_id"]
        second = await client.call_tool(
            "complete", {"prompt": "And times 3?", "conversation_id": cid}, progress_callback=on_progress
        )
    data = second.structured_content
    assert data["model"] == "big" and data["provider"] == "backup"
    assert data["attempts"][-1] == {
        "model": "big",
        "key_id": data["key_id"],
        "outcome": "ok",
        "status_code": 200,
        "retry_after_s": None,
    }
    last = sim_log(sim)[-1]
    assert last["key"] == fp(BACKUP)
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]
    assert last["messages"][2]["content"] == first.structured_content["text"]
    # GOOD's headers said "0 left" after turn 1: it is avoided before it can answer 429.
    assert [a["outcome"] for a in data["attempts"]] == ["ok"]
    assert progress == ["no usable key for mini; falling back to big"]


async def test_state_and_conversation_survive_a_restart(sim, tmp_path):
    config = write_config(tmp_path, sim)
    async with Client(server_params(config, ENV)) as client:
        first = await client.call_tool("complete", {"prompt": "remember the word 'heron'"})
        cid = first.structured_content["conversation_id"]
    async with Client(server_params(config, ENV), mode="legacy") as client:
        rows = rows_by_key(await client.call_tool("key_status", {}))
        states = sorted(r["state"] for r in rows.values())
        assert states == ["cooling", "exhausted", "ready", "ready"]
        assert next(r for r in rows.values() if r["state"] == "cooling")["ready_in_s"] > 20
        again = await client.call_tool("complete", {"prompt": "which word?", "conversation_id": cid})
        assert not again.is_error
        assert [a["outcome"] for a in again.structured_content["attempts"]] == ["ok"]
    used = keys_used(sim)
    assert used.count(fp(RATE)) == 1 and used.count(fp(QUOTA)) == 1
    assert next(m["content"] for m in sim_log(sim)[-1]["messages"]) == "remember the word 'heron'"


async def test_bad_input_gives_clear_errors_and_writes_nothing(sim, tmp_path):
    config = write_config(tmp_path, sim)
    async with Client(server_params(config, ENV)) as client:
        cases = [
            ({}, "give exactly one"),
            ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "give exactly one"),
            ({"prompt": "a", "model": "gpt-9"}, "unknown model or route 'gpt-9'; known: big, default, mini"),
            ({"prompt": "a", "conversation_id": "c_0000000000000000"}, "does not exist"),
            ({"prompt": "a", "conversation_id": "x/../../y"}, "conversation_id must be"),
            ({"messages": [{"role": "robot", "content": "b"}]}, "role"),
            ({"prompt": "a", "temperature": 9}, "temperature"),
            ({"promt": "a"}, "unknown argument(s) 'promt' for complete; expected some of: conversation_id"),
        ]
        for args, expected in cases:
            result = await client.call_tool("complete", args)
            assert result.is_error, args
            assert expected in result.content[0].text, (args, result.content[0].text)
        bad_provider = await client.call_tool("key_status", {"provider": "nope"})
        assert bad_provider.is_error and "unknown provider 'nope'" in bad_provider.content[0].text
    assert sim_log(sim) == []
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM turns").fetchone() == (0,)


async def test_list_models_reports_readiness(sim, tmp_path):
    config = write_config(tmp_path, sim)
    env = {**ENV, "PRIMARY_KEYS": f"{RATE},{QUOTA}"}
    async with Client(server_params(config, env)) as client:
        await client.call_tool("complete", {"prompt": "hi"})
        models = (await client.call_tool("list_models", {})).structured_content
    by_name = {m["name"]: m for m in models["models"]}
    assert models["routes"] == {"default": ["mini", "big"]}
    assert by_name["mini"]["keys_total"] == 2 and by_name["mini"]["keys_ready"] == 0
    assert by_name["mini"]["available"] is False and 25 <= by_name["mini"]["ready_in_s"] <= 30
    assert by_name["big"]["available"] is True and by_name["big"]["upstream_model"] == "gpt-4.1"


def test_stdout_carries_only_protocol(sim, tmp_path):
    """Nothing but JSON-RPC on stdout, even at debug level with failing keys; logs go to stderr."""
    config = write_config(tmp_path, sim)
    params = server_params(config, ENV, log_level="DEBUG")
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "complete", "arguments": {"prompt": "hi"}},
        },
    ]
    proc = subprocess.Popen(
        [params.command, *params.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=params.env,
        cwd=REPO,
    )
    messages = []
    try:
        for request in requests:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            if "id" not in request:
                continue
            while True:
                line = proc.stdout.readline()
                assert line, "the server closed stdout early"
                message = json.loads(line)  # anything that is not JSON fails here
                messages.append(message)
                if message.get("id") == request["id"]:
                    break
        proc.stdin.close()
        proc.wait(timeout=30)
        rest, stderr = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
    messages += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["isError"] is False
    assert "attempt model=mini" in stderr
    for secret in (RATE, QUOTA, GOOD, BACKUP):
        assert secret not in json.dumps(messages) and secret not in stderr


def test_serve_refuses_a_broken_config_with_field_messages(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.p]\nkeys = ["${NOT_SET_ANYWHERE}"]\n[models.m]\nprovider = "q"\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_keygate", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "models.m.provider: unknown provider 'q' (known: p)" in proc.stderr
    assert proc.stdout == ""
