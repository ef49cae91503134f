"""Shared fixtures: a real simulator on loopback, configs pointing at it, and stdio server launch."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcp_keygate.config import parse_config
from mcp_keygate.simulator import SimulatorThread, fingerprint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sim_server():
    with SimulatorThread() as sim:
        yield sim


@pytest.fixture
def sim(sim_server):
    """The simulator with an empty log and fresh rate windows for each test."""
    httpx2.post(f"{sim_server.url}/_sim/reset", content=b"").raise_for_status()
    return sim_server


def sim_log(sim) -> list[dict[str, Any]]:
    return httpx2.get(f"{sim.url}/_sim/log").json()["requests"]


def keys_used(sim) -> list[str]:
    return [entry["key"] for entry in sim_log(sim)]


def fp(key: str) -> str:
    return fingerprint(key)


def two_provider_config(sim, primary_keys: list[str], backup_keys: list[str], **state: Any) -> dict[str, Any]:
    """Model `mini` on provider `primary`, model `big` on provider `backup`, route default = [mini, big]."""
    return {
        "state": state or {"backend": "memory"},
        "providers": {
            "primary": {"type": "openai", "base_url": sim.openai_base, "keys": primary_keys},
            "backup": {"type": "openai", "base_url": sim.openai_base, "keys": backup_keys},
        },
        "models": {
            "mini": {"provider": "primary", "model": "gpt-4.1-mini"},
            "big": {"provider": "backup", "model": "gpt-4.1"},
        },
        "routes": {"default": ["mini", "big"]},
    }


@pytest.fixture
def make_config():
    def build(data: dict[str, Any]):
        return parse_config(data)

    return build


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """A tiny TOML writer for the config shapes the tests use (tables of scalars and lists)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f'"{k}" = {toml_value(v)}' for k, v in scalars.items())
        lines.append("")
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def server_params(config_path: Path, env: dict[str, str] | None = None, log_level: str = "INFO"):
    from mcp import StdioServerParameters

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_keygate", "serve", "--config", str(config_path), "--log-level", log_level],
        env=full_env,
        cwd=str(REPO),
    )


from .redis_support import redis_url  # noqa: E402,F401 - the session's redis-server fixture
