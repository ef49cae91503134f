"""`mcp-keygate install claude-desktop | claude-code | cursor`: register the server in a client's config.

It merges one entry into the client's `mcpServers`, shows the diff first, keeps a backup, and never
writes a secret: the entry points at a config file whose keys are environment references.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
import time
from pathlib import Path

CLIENTS = ("claude-desktop", "claude-code", "cursor")


class InstallError(Exception):
    pass


def default_path(client: str) -> Path:
    """Where each client keeps its MCP servers on this platform."""
    home = Path.home()
    if client == "claude-desktop":
        if sys.platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        if sys.platform == "win32":
            return (
                Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "Claude" / "claude_desktop_config.json"
            )
        return home / ".config" / "Claude" / "claude_desktop_config.json"
    if client == "claude-code":
        return Path.cwd() / ".mcp.json"  # the project scope, shared with the repository
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    raise InstallError(f"unknown client {client!r}; expected one of {', '.join(CLIENTS)}")


def server_entry(config: Path | None) -> dict:
    """How the client should start the server: this Python, this package, an absolute config path."""
    args = ["-m", "mcp_keygate", "serve"]
    if config is not None:
        args += ["--config", str(config.expanduser().resolve())]
    return {"command": sys.executable, "args": args}


def merged(existing_text: str, name: str, entry: dict, path: Path) -> str:
    try:
        data = json.loads(existing_text) if existing_text.strip() else {}
    except ValueError as exc:
        raise InstallError(f"{path} is not valid JSON ({exc}); fix it or pass --path to write elsewhere") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} does not hold a JSON object")
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f"{path}: mcpServers is not an object")
    servers[name] = entry
    return json.dumps(data, indent=2) + "\n"


def install(client: str, config: Path | None, name: str, path: Path | None, write: bool, confirm) -> int:
    """Print the diff; write (with a backup) when `write`, or when `confirm()` says yes."""
    if config is not None and not config.expanduser().exists():
        raise InstallError(f"--config {config}: file not found")
    target = path or default_path(client)
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    after = merged(before, name, server_entry(config), target)
    if before == after:
        print(f"{target} already has this entry; nothing to do.")
        return 0
    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), str(target), f"{target} (new)"
    )
    sys.stdout.writelines(diff)
    if not (write or confirm()):
        print("Nothing written.")
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        backup = target.with_name(f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(target, backup)
        print(f"Backup: {backup}")
    target.write_text(after, encoding="utf-8")
    print(f"Wrote {target}. Restart {client} to load mcp-keygate.")
    return 0
