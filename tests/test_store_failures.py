"""A state store that fails — Redis stopped or never there — reaches the user as one line naming
the store and what to check, wherever the user meets it: `status`, `check`, a tool call, /healthz."""

from __future__ import annotations

import subprocess
import sys

import httpx2
import pytest
from mcp import MCPError

from .conftest import REPO, two_provider_config, write_toml
from .redis_support import _free_port, start_redis, unique_prefix
from .servers import ALICE, ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mcp_keygate", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def redis_config(tmp_path, sim, url: str):
    data = two_provider_config(sim, ["sim-ok-store00001"], ["sim-ok-store00002"])
    data["state"] = {"backend": "redis", "url": url, "prefix": unique_prefix()}
    data["server"] = {"auth_tokens": {"alice": "${ALICE_TOKEN}"}}
    return write_toml(tmp_path / "keygate.toml", data)


def test_status_with_redis_unreachable_is_one_line(tmp_path, sim):
    config = redis_config(tmp_path, sim, f"redis://127.0.0.1:{_free_port()}/0")
    result = cli("status", "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot use Redis at redis://127.0.0.1:" in result.stderr and "redis-server is running" in result.stderr


async def test_a_call_while_redis_is_down_is_a_tool_error_and_health_says_so(tmp_path, sim):
    proc, url = start_redis(tmp_path)
    server = ServerProcess(redis_config(tmp_path, sim, url), free_port(), {"ALICE_TOKEN": ALICE}).wait_ready()
    try:
        async with streamable(server.url, ALICE) as session:
            assert not (await session.call_tool("complete", {"prompt": "before"})).is_error
            proc.terminate()
            proc.wait(timeout=10)
            during = await session.call_tool("complete", {"prompt": "during"})
            assert during.is_error and "cannot use Redis at" in during.content[0].text
            listed = await session.call_tool("key_status", {})
            assert listed.is_error and "cannot use Redis at" in listed.content[0].text
            with pytest.raises(MCPError) as unreadable:
                await session.read_resource("keygate://keys")
            assert "cannot use Redis at" in unreadable.value.error.message
        assert httpx2.get(f"{server.url}/healthz").status_code == 503
        auth = {"Authorization": f"Bearer {ALICE}"}
        for path in ("/metrics", "/status", "/status?fragment=1"):
            response = httpx2.get(f"{server.url}{path}", headers=auth)
            assert response.status_code == 503 and "cannot use Redis at" in response.json()["message"], path
    finally:
        _code, stderr = server.stop()
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in stderr
