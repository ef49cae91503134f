"""mcp-keygate: an MCP server that rotates LLM API keys and falls back across models.

The public names load on first use, so `mcp-keygate serve` imports only what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Config": "mcp_keygate.config",
    "ConfigError": "mcp_keygate.config",
    "load_config": "mcp_keygate.config",
    "parse_config": "mcp_keygate.config",
    "Keygate": "mcp_keygate.gateway",
    "InvalidRequest": "mcp_keygate.errors",
    "CallError": "mcp_keygate.errors",
    "StoreError": "mcp_keygate.errors",
    "KeygateError": "mcp_keygate.errors",
    "RouteFailed": "mcp_keygate.router",
    "RequestRejected": "mcp_keygate.router",
    "Outcome": "mcp_keygate.outcomes",
    "KeyState": "mcp_keygate.keys.state",
    "build_server": "mcp_keygate.server",
    "SimulatorThread": "mcp_keygate.simulator",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mcp_keygate' has no attribute {name!r}")
