"""The command line: check, status, simulator and demo, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import tomllib

import anyio
import httpx2
import pytest

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.router import RouteFailed

from .conftest import REPO, two_provider_config, write_toml


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_"))}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "mcp_keygate", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_check_ok_lists_routes_and_warns_about_literal_keys(tmp_path, sim):
    data = two_provider_config(sim, ["${K1}"], ["sim-ok-literal-in-file"])
    config = write_toml(tmp_path / "k.toml", data)
    proc = run_cli("check", "--config", str(config), env={"K1": "sim-ok-from-env-0001"})
    assert proc.returncode == 0, proc.stderr
    assert "OK: 2 provider(s), 2 key(s), 2 model(s)" in proc.stdout
    assert "route default: mini -> big" in proc.stdout
    assert "providers.backup.keys[0]: a literal key is written in the config file" in proc.stderr
    assert "sim-ok-literal-in-file" not in proc.stderr + proc.stdout


def test_check_reports_every_problem_with_its_field(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[providers.openai]\nkeys = ["${MISSING_KEY}"]\nstrategy = "fastest"\n'
        '[models.mini]\nprovider = "openai"\ncontext_window = -5\n[routes]\ndefault = ["mini", "nope"]\n',
        encoding="utf-8",
    )
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 1
    assert "providers.openai.strategy:" in proc.stderr and "'fastest'" in proc.stderr
    assert "models.mini.context_window: Input should be greater than 0" in proc.stderr
    fixed = config.read_text().replace('strategy = "fastest"\n', "").replace("context_window = -5\n", "")
    config.write_text(fixed.replace(', "nope"', ""), encoding="utf-8")
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 1
    assert "providers.openai.keys[0]: environment variable MISSING_KEY is not set" in proc.stderr


def test_check_uses_keygate_config_then_environment(tmp_path):
    proc = run_cli("check", env={"OPENAI_API_KEY": "sk-zero-config-test-key"})
    assert proc.returncode == 0 and "route default: gpt-4.1-mini -> gpt-4.1" in proc.stdout
    proc = run_cli("check", env={"KEYGATE_CONFIG": str(tmp_path / "missing.toml")})
    assert proc.returncode == 1 and "file not found" in proc.stderr


def test_status_reads_the_state_file_as_table_and_json(tmp_path, sim):
    state = tmp_path / "state.db"
    data = two_provider_config(
        sim,
        ["sim-ratelimit-st000001", "sim-ok-st00000000002"],
        ["sim-invalid-st000003"],
        backend="sqlite",
        path=str(state),
    )

    async def use() -> None:
        async with Keygate(parse_config(data)) as gate:
            await gate.complete(CompleteRequest(prompt="hi"))
            with pytest.raises(RouteFailed):
                await gate.complete(CompleteRequest(prompt="hi", model="big"))

    anyio.run(use)
    config = write_toml(tmp_path / "k.toml", data)
    proc = run_cli("status", "--config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["keys"]
    assert [r["state"] for r in rows if r["provider"] == "primary"] == ["cooling", "ready"]
    assert [r["state"] for r in rows if r["provider"] == "backup"] == ["disabled"]
    table = run_cli("status", env={"KEYGATE_STATE": str(state)})
    assert table.returncode == 0
    assert "cooling" in table.stdout and "gpt-4.1-mini" in table.stdout and "\x1b" not in table.stdout
    for secret in ("sim-ratelimit-st000001", "sim-ok-st00000000002", "sim-invalid-st000003"):
        assert secret[:12] not in proc.stdout + table.stdout
    missing = run_cli("status", env={"KEYGATE_STATE": str(tmp_path / "none.db")})
    assert missing.returncode == 1 and "no state file" in missing.stderr


def test_status_watch_refreshes_as_keys_change(tmp_path, sim):
    import signal

    state = tmp_path / "state.db"
    data = two_provider_config(sim, ["sim-ok-watch0000001"], ["sim-ok-watch0000002"], backend="sqlite", path=str(state))
    config = parse_config(data)

    async def call(prompt: str) -> None:
        async with Keygate(config) as gate:
            await gate.complete(CompleteRequest(prompt=prompt))

    anyio.run(call, "first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_keygate", "status", "--watch", "0.2"],
        env={**env, "PYTHONPATH": str(REPO), "KEYGATE_STATE": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _read_refresh(proc)
        assert "ready" in first and "cooling" not in first
        httpx2.post(f"{sim.url}/_sim/reset", json={"keys": {"sim-ok-watch0000001": {"behavior": "ratelimit"}}})
        anyio.run(call, "second")  # the primary key answers 429 and cools; the backup answers
        deadline = time.monotonic() + 10
        while "cooling" not in (refresh := _read_refresh(proc)):
            assert time.monotonic() < deadline, refresh
        assert "rate_limit_exceeded" in refresh and "gpt-4.1-mini" in refresh
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "\x1b" not in out and "Traceback" not in err


def _read_refresh(proc: subprocess.Popen) -> str:
    """One refresh of `status --watch` piped: a `-- HH:MM:SS` line, the table, a blank line."""
    lines = [proc.stdout.readline()]
    assert lines[0].startswith("-- "), lines
    while (line := proc.stdout.readline()).strip():
        lines.append(line)
    return "".join(lines)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulator_command_serves_a_scenario(tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[keys."k-limited"]\nrpm = 1\n', encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_keygate", "simulator", "--port", str(port), "--scenario", str(scenario)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx2.get(f"{base}/healthz")
                break
            except httpx2.TransportError:
                time.sleep(0.05)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer k-limited"}
        first = httpx2.post(f"{base}/v1/chat/completions", json=body, headers=headers)
        second = httpx2.post(f"{base}/v1/chat/completions", json=body, headers=headers)
        assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "0"
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulator_rejects_a_bad_scenario(tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[keys."k"]\nbehaviour = "ok"\n', encoding="utf-8")
    proc = run_cli("simulator", "--scenario", str(scenario))
    assert proc.returncode == 1 and "keys.k: unknown field(s) behaviour" in proc.stderr


def test_demo_runs_offline_and_reads_well_in_a_file():
    proc = run_cli("demo", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b" not in out
    assert "rate_limited" in out and "quota_exhausted" in out and "auth_failed" in out and "overloaded" in out
    assert "cooling" in out and "exhausted" in out and "disabled" in out
    # every provider answered a turn, and the rate-limited key came back through its probe at the end
    assert "5 of 5 turns answered, by gpt → gpt → claude → gemini → gpt" in out
    assert "[gpt-4.1-mini] I received 9 message(s)" in out  # the whole conversation reached the last model
    assert "mcp-keygate install claude-desktop" in out


@pytest.mark.parametrize("args", [["--version"], ["serve", "--help"]])
def test_help_and_version(args):
    proc = run_cli(*args)
    assert proc.returncode == 0 and "mcp-keygate" in proc.stdout


def test_install_prints_a_snippet_without_secrets(tmp_path):
    config = tmp_path / "keygate.toml"
    config.write_text('[providers.openai]\nkeys = ["${OPENAI_API_KEY}"]\n', encoding="utf-8")
    proc = run_cli(
        "install", "claude-desktop", "--config", str(config), "--print", env={"OPENAI_API_KEY": "sk-never-printed-000"}
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["mcpServers"]["keygate"]
    assert entry["args"][-3:] == ["serve", "--config", str(config.resolve())]
    assert os.path.isabs(entry["command"])  # GUI clients do not search the shell's PATH
    assert entry["env"] == {"OPENAI_API_KEY": "<set OPENAI_API_KEY>"}  # the name to fill in, never the value
    assert "sk-never" not in proc.stdout + proc.stderr


def test_install_merges_with_a_diff_and_a_backup(tmp_path):
    config = tmp_path / "keygate.toml"
    config.write_text("", encoding="utf-8")
    target = tmp_path / "claude_desktop_config.json"
    target.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}), encoding="utf-8")
    refused = run_cli("install", "claude-desktop", "--config", str(config), "--path", str(target))
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert '+    "keygate": {' in refused.stdout  # the diff is shown first
    assert json.loads(target.read_text())["mcpServers"].keys() == {"other"}  # nothing written without consent
    done = run_cli("install", "claude-desktop", "--config", str(config), "--path", str(target), "--yes")
    assert done.returncode == 0, done.stderr
    data = json.loads(target.read_text())
    assert set(data["mcpServers"]) == {"other", "keygate"} and data["theme"] == "dark"
    assert "Backup:" in done.stdout and len(list(tmp_path.glob("claude_desktop_config.json.bak-*"))) == 1
    again = run_cli("install", "claude-desktop", "--config", str(config), "--path", str(target), "--yes")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    bad = run_cli("install", "cursor", "--config", str(config), "--path", str(broken), "--yes")
    assert bad.returncode == 1 and "is not valid JSON" in bad.stderr and broken.read_text() == "{not json"


# ---- init, and the shipped examples agreeing with each other ----


def _env_refs(value: object) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_env_refs(v) for v in value)) if value else set()
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value)) if isinstance(value, str) else set()


def run_init(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_"))}
    base.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "mcp_keygate", *args],
        capture_output=True,
        text=True,
        env=base,
        cwd=tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_failure(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("mcp-keygate: "), proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_init_writes_the_starter_config_and_never_overwrites_without_force(tmp_path):
    example = (REPO / "keygate.example.toml").read_bytes()
    old_umask = os.umask(0o022)
    try:
        proc = run_init(tmp_path, "init")
    finally:
        os.umask(old_umask)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "keygate.toml"
    assert written.read_bytes() == example and stat.S_IMODE(written.stat().st_mode) == 0o644
    assert str(written) in proc.stdout and "OPENAI_KEY_A" in proc.stdout and "mcp-keygate check --config" in proc.stdout

    written.write_text("# mine\n", encoding="utf-8")
    assert_one_line_failure(run_init(tmp_path, "init"), "keygate.toml already exists", "--force")
    assert written.read_text(encoding="utf-8") == "# mine\n"
    forced = run_init(tmp_path, "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert written.read_bytes() == example
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keygate.toml"]  # no temporary file left behind

    nested = run_init(tmp_path, "init", "--path", "conf/deep/k.toml")
    assert nested.returncode == 0 and (tmp_path / "conf" / "deep" / "k.toml").read_bytes() == example
    into_dir = run_init(tmp_path, "init", "--path", "conf")
    assert into_dir.returncode == 0 and (tmp_path / "conf" / "keygate.toml").read_bytes() == example
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    assert_one_line_failure(run_init(tmp_path, "init", "--path", "afile/k.toml"), "afile", "not a directory")


def test_init_then_check_validates_once_the_variables_are_set(tmp_path):
    assert run_init(tmp_path, "init", "--path", "k.toml").returncode == 0
    keys = {
        name: f"sk-test-{name.lower()}-0123456789"
        for name in _env_refs(tomllib.loads((tmp_path / "k.toml").read_text()))
    }
    proc = run_init(tmp_path, "check", "--config", "k.toml", env={**keys, "KEYGATE_STATE": str(tmp_path / "s.db")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: 3 provider(s)")


def test_the_packaged_starter_config_is_the_example(tmp_path):
    assert (REPO / "mcp_keygate" / "keygate.example.toml").read_bytes() == (REPO / "keygate.example.toml").read_bytes()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "keygate.example.toml" in pyproject["tool"]["setuptools"]["package-data"]["mcp_keygate"]
    assert pyproject["project"]["license"] == "MIT" and pyproject["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (REPO / "LICENSE").read_text(encoding="utf-8")


def test_the_example_client_entry_agrees_with_the_example_config():
    config = tomllib.loads((REPO / "keygate.example.toml").read_text(encoding="utf-8"))
    client = json.loads((REPO / "claude_desktop_config.example.json").read_text(encoding="utf-8"))
    entry = client["mcpServers"]["keygate"]
    referenced = _env_refs(config)
    assert referenced and set(entry["env"]) == referenced  # every variable the config reads, and no other
    assert all(value == f"<set {name}>" for name, value in entry["env"].items())  # placeholders, as install writes
    assert entry["command"].startswith("/") and entry["command"].endswith("/mcp-keygate")  # absolute: GUI apps
    assert entry["args"][0] == "serve" and entry["args"][1] == "--config" and entry["args"][2].startswith("/")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Register it with your agent", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    assert [json.loads(block) for block in blocks] == [client]  # the README shows the same entry
    assert "absolute path" in section
