"""A newcomer's ordinary mistakes end in one line naming the fix — never a traceback, never a wait."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import REPO, two_provider_config, write_toml
from .redis_support import _free_port


def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))}
    return subprocess.run(
        [sys.executable, "-m", "mcp_keygate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mcp-keygate:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def config_with(tmp_path, sim):
    def build(**state) -> str:
        data = two_provider_config(sim, ["sim-ok-first00001"], ["sim-ok-first00002"], **state)
        return str(write_toml(tmp_path / "keygate.toml", data))

    return build


def test_a_state_file_that_cannot_be_opened_is_one_line_over_stdio(tmp_path, config_with):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = config_with(backend="sqlite", path=str(blocker / "state.db"))
    result = run("serve", "--config", config, stdin="")
    assert result.returncode == 1 and "cannot open the state file" in one_line(result)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_redis_with_nothing_listening_is_one_line_for_serve(config_with, transport):
    config = config_with(backend="redis", url=f"redis://127.0.0.1:{_free_port()}/0")
    result = run("serve", "--config", config, "--transport", transport, "--port", str(_free_port()))
    assert result.returncode == 1
    assert "cannot use Redis at redis://127.0.0.1:" in one_line(result)


def test_check_reaches_redis_unless_offline(config_with):
    config = config_with(backend="redis", url=f"redis://127.0.0.1:{_free_port()}/0")
    refused = run("check", "--config", config)
    assert refused.returncode == 1 and "cannot use Redis" in one_line(refused)
    offline = run("check", "--config", config, "--offline")
    assert offline.returncode == 0 and offline.stdout.startswith("OK:")


def test_a_port_in_use_is_one_line_naming_the_flag(config_with):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--config", config_with(backend="memory"), "--transport", "http", "--port", str(port))
    assert result.returncode == 2
    message = one_line(result)
    assert f"port {port} on 127.0.0.1 is already in use" in message and "--port" in message


def test_check_with_nothing_to_serve_says_the_two_ways_to_fix_it(tmp_path):
    result = run("check", env={"HOME": str(tmp_path)})
    assert result.returncode == 1
    message = one_line(result)
    assert "nothing to serve" in message and "OPENAI_API_KEY" in message and "--config" in message


def test_status_piped_into_head_says_nothing_on_stderr(config_with, tmp_path):
    config = config_with(backend="sqlite", path=str(tmp_path / "state.db"))
    assert run("check", "--config", config).returncode == 0
    serve = run("serve", "--config", config, stdin="")  # stdin closes at once: the state file is made
    assert serve.returncode == 0, serve.stderr
    command = f'"{sys.executable}" -m mcp_keygate status --config "{config}" --json --watch 0.05 | head -c 1'
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    piped = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert piped.stdout == "{" and piped.stderr == ""


def test_bare_mcp_keygate_prints_help():
    result = run()
    assert result.returncode == 0 and "serve" in result.stdout and "usage:" in result.stdout


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"prompt": "x", "max_tokens": "lots"}, "max_tokens: expected a whole number (or leave it out), got 'lots'"),
        ({"prompt": "x", "temperature": 7}, "temperature: must be at most 2, got 7"),
        ({"prompt": 5}, "prompt: expected text (or leave it out), got 5"),
        (
            {"messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role: expected one of 'system', 'user', 'assistant'",
        ),
        ({"prompt": "x", "max_wait_s": -1}, "max_wait_s: must be at least 0, got -1"),
        ({"promt": "x"}, "unknown argument(s) 'promt' for complete"),
    ],
)
async def test_a_wrong_tool_argument_is_one_line_naming_the_field(sim, arguments, said):
    from mcp import Client

    from mcp_keygate.config import parse_config
    from mcp_keygate.gateway import Keygate
    from mcp_keygate.server import build_server

    server = build_server(Keygate(parse_config(two_provider_config(sim, ["sim-ok-args00001"], []))))
    async with Client(server) as client:
        result = await client.call_tool("complete", arguments)
    text = result.content[0].text
    assert result.is_error and text.startswith(said), text
    assert "pydantic" not in text and "http" not in text and "\n" not in text


def test_status_shows_the_keys_of_the_config_in_use_and_all_with_all(tmp_path, sim):
    state = str(tmp_path / "shared-state.db")
    first = two_provider_config(sim, ["sim-ok-scope00001", "sim-ok-scope00002"], [], backend="sqlite", path=state)
    second = two_provider_config(sim, ["sim-ok-scope00003"], [], backend="sqlite", path=state)
    for name, data in (("first", first), ("second", second)):
        config = str(write_toml(tmp_path / f"{name}.toml", data))
        assert run("serve", "--config", config, stdin="").returncode == 0
    mine = run("status", "--config", config, "--json")
    everything = run("status", "--config", config, "--json", "--all")
    assert len(json.loads(mine.stdout)["keys"]) == 1
    assert len(json.loads(everything.stdout)["keys"]) == 3


def test_usage_days_out_of_range_is_refused(config_with):
    result = run("status", "--config", config_with(backend="memory"), "--usage", "--days", "0")
    assert result.returncode == 2 and "expected a whole number of days from 1 to 400, got 0" in result.stderr


def test_json_logs_are_one_scrubbed_object_per_line(config_with):
    result = run(
        "serve", "--config", config_with(backend="memory"), "--log-format", "json", "--log-level", "DEBUG", stdin=""
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines)


def test_serve_on_a_terminal_says_it_waits_for_an_mcp_client(config_with):
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_keygate", "serve", "--config", config_with(backend="memory")],
        stdin=follower,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    os.close(follower)
    try:
        line = proc.stderr.readline()
        assert "waiting for an MCP client on stdin" in line and "mcp-keygate demo" in line
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(leader)


def test_the_redis_backend_without_its_extra_is_one_line_naming_the_install(config_with):
    """`pip install mcp-keygate` without [redis]: check and serve say what to install."""
    config = config_with(backend="redis", url="redis://127.0.0.1:1/0")
    without_redis = (
        "import sys; sys.modules['redis'] = None; from mcp_keygate.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for args in (["check", "--config", config], ["serve", "--config", config]):
        result = subprocess.run(
            [sys.executable, "-c", without_redis, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert 'pip install "mcp-keygate[redis]"' in one_line(result)
