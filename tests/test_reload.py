"""Live reload against a running server: a changed config file (stdio watches it), SIGHUP through
`mcp-keygate reload`, a broken config refused while the running one stays, key state kept for
keys still configured, calls in flight finishing on their config, and clients told that their
tool and prompt lists changed — on both protocol eras."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import httpx2
import pytest
from mcp import Client

from .conftest import REPO, server_params, write_toml
from .redis_support import unique_prefix
from .servers import ALICE, BOB, ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

RATE, GOOD, NEW = "sim-ratelimit-30s-reload01", "sim-ok-reload0000000002", "sim-ok-reload0000000new"


def config_data(sim, keys: list[str], presets: dict, state: dict | None = None) -> dict:
    return {
        "state": state or {"backend": "memory"},
        "providers": {"p": {"base_url": sim.openai_base, "keys": keys, "strategy": "priority"}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
        "presets": presets,
    }


SUMMARIZE = {"description": "Summarize a text.", "template": "Summarize: {text}", "parameters": {"text": "str"}}
TRANSLATE = {"description": "Translate a text.", "template": "Translate: {text}", "parameters": {"text": "str"}}


def rewrite(path, data: dict) -> None:
    """Replace the file the way editors do (a new file renamed over the old one)."""
    temporary = path.with_suffix(".new")
    write_toml(temporary, data)
    os.replace(temporary, path)


async def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await anyio.sleep(0.2)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_stdio_follows_its_config_file_keeping_key_state_and_telling_the_client(sim, tmp_path, backend, request):
    state = {"backend": "memory"}
    if backend == "redis":
        state = {"backend": "redis", "url": request.getfixturevalue("redis_url"), "prefix": unique_prefix()}
    path = write_toml(tmp_path / "keygate.toml", config_data(sim, [RATE, GOOD], {"summarize": SUMMARIZE}, state))
    changed: list[str] = []

    async def on_message(message) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            changed.append(method)

    async with Client(server_params(path), mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools.list_changed is True
        first = await client.call_tool("complete", {"prompt": "hi"})
        assert [a["outcome"] for a in first.structured_content["attempts"]] == ["rate_limited", "ok"]
        rate_id = first.structured_content["attempts"][0]["key_id"]

        rewrite(path, config_data(sim, [RATE, NEW], {"summarize": SUMMARIZE, "translate": TRANSLATE}, state))

        async def told() -> bool:
            return "notifications/tools/list_changed" in changed and "notifications/prompts/list_changed" in changed

        assert await eventually(told), changed
        assert {t.name for t in (await client.list_tools()).tools} >= {"summarize", "translate"}
        assert {p.name for p in (await client.list_prompts()).prompts} == {"summarize", "translate"}
        rows = {r["key_id"]: r for r in (await client.call_tool("key_status", {})).structured_content["keys"]}
        assert len(rows) == 2 and rows[rate_id]["state"] == "cooling"  # its state survived the reload
        new_id = next(k for k in rows if k != rate_id)
        assert rows[new_id]["state"] == "ready"
        again = await client.call_tool("translate", {"text": "hallo"})
        assert not again.is_error and again.structured_content["key_id"] == new_id


@pytest.fixture
def http_server(sim, tmp_path):
    state = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    path = write_toml(tmp_path / "keygate.toml", config_data(sim, [GOOD], {"summarize": SUMMARIZE}, state))
    process = ServerProcess(path, free_port(), {}, transport="streamable-http").wait_ready()
    process.config = path
    process.state = state
    yield process
    process.stop()


def reload_command(config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mcp_keygate", "reload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def test_reload_over_http_tells_both_protocol_eras(sim, http_server):
    legacy_heard: list[str] = []

    async def on_legacy(message) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            legacy_heard.append(method)

    async with (
        streamable(http_server.url, None, message_handler=on_legacy) as legacy,
        Client(f"{http_server.url}/mcp") as modern,
        modern.listen(tools_list_changed=True, prompts_list_changed=True) as events,
    ):
        assert {t.name for t in (await legacy.list_tools()).tools} >= {"summarize"}
        state = http_server.state
        write_toml(http_server.config, config_data(sim, [GOOD], {"translate": TRANSLATE}, state))
        done = reload_command(http_server.config)
        assert done.returncode == 0 and "reloaded: presets changed: summarize, translate" in done.stdout, done.stderr

        with anyio.fail_after(10):
            event = await events.__anext__()
        assert type(event).__name__ in ("ToolsListChanged", "PromptsListChanged")

        async def told() -> bool:
            return "notifications/tools/list_changed" in legacy_heard

        assert await eventually(told), legacy_heard
        await anyio.sleep(0.5)  # anything told twice would have arrived by now
        assert legacy_heard.count("notifications/tools/list_changed") == 1, legacy_heard
        assert legacy_heard.count("notifications/prompts/list_changed") == 1, legacy_heard
        names = {t.name for t in (await legacy.list_tools()).tools}
        assert "translate" in names and "summarize" not in names
        assert {t.name for t in (await modern.list_tools()).tools} == names
    assert "config reloaded (SIGHUP): presets changed: summarize, translate" in http_server.stderr()


async def test_a_broken_config_is_refused_and_the_running_one_stays(sim, http_server):
    http_server.config.write_text('[providers.p]\nbase_url = "http://x"\nkeys = ["${NOT_SET_ANYWHERE}"]\n')
    done = reload_command(http_server.config)
    assert done.returncode == 1 and "not reloading, the config has problems" in done.stderr
    # Straight at the server too (as a file watcher or a plain `kill -HUP` would).
    os.kill(http_server.proc.pid, __import__("signal").SIGHUP)

    def refused() -> bool:
        return "refused, the running config stays" in http_server.stderr()

    deadline = time.monotonic() + 10
    while not refused() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refused(), http_server.stderr()
    assert "NOT_SET_ANYWHERE" in http_server.stderr()  # the same message `check` gives
    async with streamable(http_server.url, None) as client:
        answer = await client.call_tool("summarize", {"text": "still here"})
        assert not answer.is_error
    assert httpx2.get(f"{http_server.url}/healthz").status_code == 200
    assert "Traceback" not in http_server.stderr()


async def test_a_call_in_flight_finishes_on_the_config_it_started_with(sim, http_server):
    httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {GOOD: {"latency_ms": 2500}}}).raise_for_status()
    async with streamable(http_server.url, None) as client:
        results: list = []

        async def slow_call() -> None:
            results.append(await client.call_tool("summarize", {"text": "slow"}))

        async with anyio.create_task_group() as group:
            group.start_soon(slow_call)
            await anyio.sleep(0.8)
            # The key the call is using and the preset it came through both go away.
            write_toml(http_server.config, config_data(sim, [NEW], {}, http_server.state))
            assert reload_command(http_server.config).returncode == 0
        assert not results[0].is_error, results[0].content
        assert results[0].structured_content["model"] == "mini"
        after = await client.call_tool("complete", {"prompt": "after"})
        rows = (await client.call_tool("key_status", {})).structured_content["keys"]
        assert [r["key_id"] for r in rows] == [after.structured_content["key_id"]]


@pytest.fixture
def guarded_server(sim, tmp_path):
    """Over HTTP with tokens: alice is governed by a policy (only the route `cheap`), bob is not."""
    state = {"backend": "sqlite", "path": str(tmp_path / "state.db")}
    data = config_data(sim, [GOOD], {}, state)
    data["routes"] = {"default": ["mini"], "cheap": ["mini"]}
    data["server"] = {"auth_tokens": {"alice": "${ALICE_TOKEN}", "bob": "${BOB_TOKEN}"}}
    data["policies"] = {"team": {"tokens": ["alice"], "routes": ["cheap"]}}
    path = write_toml(tmp_path / "keygate.toml", data)
    env = {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB}
    process = ServerProcess(path, free_port(), env, transport="streamable-http", extra_args=("--watch",)).wait_ready()
    process.config, process.data = path, data
    yield process
    process.stop()


def _alice_may_call_default(server) -> int:
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    return httpx2.post(
        f"{server.url}/v1/chat/completions", headers={"authorization": f"Bearer {ALICE}"}, json=body, timeout=30
    ).status_code


@pytest.mark.parametrize("change", ["misspelt policy token", "empty file"])
def test_a_reload_cannot_leave_a_token_ungoverned(guarded_server, change):
    assert _alice_may_call_default(guarded_server) == 403
    if change == "empty file":
        guarded_server.config.write_text("", encoding="utf-8")
    else:
        data = {**guarded_server.data, "policies": {"team": {"tokens": ["Alice"], "routes": ["cheap"]}}}
        rewrite(guarded_server.config, data)
    deadline = time.monotonic() + 15
    while "refused, the running config stays" not in guarded_server.stderr() and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = guarded_server.stderr()
    assert "refused, the running config stays" in logged, logged
    assert ("is not a configured token" if change != "empty file" else "nothing to serve") in logged
    assert _alice_may_call_default(guarded_server) == 403  # still governed
    # An empty file is refused here already; a misspelt token only by the server (this shell has
    # no tokens to compare with), which `reload` reports.
    done = reload_command(guarded_server.config)
    expected = "not reloading" if change == "empty file" else "refused, the running config stays"
    assert done.returncode == 1 and expected in done.stderr, done.stdout + done.stderr


def test_reload_never_signals_a_process_that_is_not_a_keygate_server(http_server, tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    state_dir = tmp_path  # the sqlite state is tmp_path / "state.db": pid files live beside it
    planted = [
        state_dir / f"state.db.{bystander.pid}.pid",  # a reused pid, as after a crash
        state_dir / "state.db.99999999.pid",  # a name and a content that disagree
    ]
    planted[0].write_text(f"{bystander.pid}\n", encoding="utf-8")
    planted[1].write_text(f"{bystander.pid}\n", encoding="utf-8")
    try:
        done = reload_command(http_server.config)
        assert done.returncode == 0 and done.stdout.count("server ") == 1, done.stdout + done.stderr
        time.sleep(0.5)
        assert bystander.poll() is None, "the bystander was signalled"
        assert not any(p.exists() for p in planted)
    finally:
        bystander.kill()
