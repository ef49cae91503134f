"""`mcp-keygate demo`: the real server over stdio, a real MCP client, and the bundled simulator.

Offline and keyless: the simulator plays two providers whose keys are rate-limited, out of
quota, rejected or fine, and a short conversation shows rotation and fallback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

DEMO_KEYS = {
    "DEMO_PRIMARY_KEYS": "sim-ratelimit-30s-demo0000a1,sim-quota-demo0000b2,sim-ok-demo0000c3",
    "DEMO_BACKUP_KEYS": "sim-invalid-demo0000d4,sim-ok-demo0000e5",
}


def _config(base_url: str, state: Path) -> str:
    return f"""
[state]
backend = "sqlite"
path = "{state.as_posix()}"

[providers.primary]
type = "openai"
base_url = "{base_url}"
keys = ["${{DEMO_PRIMARY_KEYS}}"]
strategy = "priority"

[providers.backup]
type = "openai"
base_url = "{base_url}"
keys = ["${{DEMO_BACKUP_KEYS}}"]

[models.mini]
provider = "primary"
model = "gpt-4.1-mini"

[models.backup]
provider = "backup"
model = "gpt-4.1"

[routes]
default = ["mini", "backup"]
"""


def _print_attempts(result: dict) -> None:
    for attempt in result["attempts"]:
        status = attempt["status_code"] or "-"
        wait = f", retry after {attempt['retry_after_s']:g} s" if attempt["retry_after_s"] else ""
        print(f"    {attempt['model']:<7} {attempt['key_id']:<16} {status!s:>4}  {attempt['outcome']}{wait}")


def _print_keys(keys: list[dict]) -> None:
    print(f"  {'key id':<16} {'mask':<7} {'state':<10} {'model':<13} {'ready in':>8}  reason")
    for k in keys:
        ready = f"{k['ready_in_s']:.0f} s" if k["ready_in_s"] is not None else "-"
        reason = (k["reason"] or "")[:48]
        print(f"  {k['key_id']:<16} {k['mask']:<7} {k['state']:<10} {k['model'] or '*':<13} {ready:>8}  {reason}")


async def _conversation(base_url: str, workdir: Path) -> None:
    from mcp import Client, StdioServerParameters

    config_path = workdir / "keygate.toml"
    config_path.write_text(_config(base_url, workdir / "state.db"), encoding="utf-8")
    env = {**os.environ, **DEMO_KEYS, "KEYGATE_CONFIG": str(config_path)}
    env.pop("KEYGATE_STATE", None)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_keygate", "serve", "--log-level", "WARNING"], env=env
    )
    started = time.perf_counter()
    async with Client(params) as client:
        print(f"Server started over stdio in {time.perf_counter() - started:.2f} s.\n")
        conversation_id = None
        prompts = [
            "Hi! Which model are you?",
            "Summarise what I asked you before.",
            "And one more turn, please.",
        ]
        for turn, prompt in enumerate(prompts, 1):
            args: dict = {"prompt": prompt, "system": "You are a concise assistant."}
            if conversation_id:
                args = {"prompt": prompt, "conversation_id": conversation_id}
            if turn == 3:
                # Route straight to the backup model: its first key is rejected, its second answers.
                args["model"] = "backup"
            result = await client.call_tool("complete", args)
            if result.is_error:
                print(f"turn {turn}: error: {result.content[0].text}")
                continue
            data = result.structured_content
            conversation_id = data["conversation_id"]
            print(f"turn {turn}  you: {prompt}")
            print(f"        {data['model']} ({data['key_id']}): {data['text']}")
            _print_attempts(data)
            print()
        status = await client.call_tool("key_status", {})
        print("Key status:")
        _print_keys(status.structured_content["keys"])


def run_demo() -> int:
    from .simulator import SimulatorThread

    print("mcp-keygate demo — offline, no API keys: a simulator plays the providers.\n")
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp, SimulatorThread() as sim:
        anyio.run(_conversation, sim.openai_base, Path(tmp))
    print(
        "\nNext: register it with Claude Desktop — see claude_desktop_config.example.json and the README's "
        "'Use it from Claude Desktop' section."
    )
    return 0
