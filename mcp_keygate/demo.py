"""`mcp-keygate demo`: the real server over stdio, a real MCP client, and the bundled simulator.

Offline and keyless: the simulator plays OpenAI, Anthropic and Gemini, whose keys are
rate-limited, out of quota, rejected or fine, and a short conversation shows key rotation and
fallback across all three, each receiving the whole conversation in its own wire format.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

OPENAI_KEYS = ["sim-ratelimit-30s-demo0000a1", "sim-quota-demo0000b2", "sim-ok-demo0000c3"]
ANTHROPIC_KEYS = ["sim-invalid-demo0000d4", "sim-ok-demo0000e5"]
GEMINI_KEYS = ["sim-ok-demo0000f6"]
DEMO_KEYS = {
    "DEMO_OPENAI_KEYS": ",".join(OPENAI_KEYS),
    "DEMO_ANTHROPIC_KEYS": ",".join(ANTHROPIC_KEYS),
    "DEMO_GEMINI_KEYS": ",".join(GEMINI_KEYS),
}
# The good OpenAI key allows one request a minute; the good Anthropic key runs out of credit
# after one answer — so each turn is answered by a different provider.
SCENARIO = {"keys": {OPENAI_KEYS[2]: {"rpm": 1}, ANTHROPIC_KEYS[1]: {"after": 1, "then": "quota"}}}


def _config(sim_url: str, state: Path) -> str:
    return f"""
[state]
backend = "sqlite"
path = "{state.as_posix()}"

[providers.openai]
type = "openai"
base_url = "{sim_url}/v1"
keys = ["${{DEMO_OPENAI_KEYS}}"]
strategy = "priority"

[providers.anthropic]
type = "anthropic"
base_url = "{sim_url}"
keys = ["${{DEMO_ANTHROPIC_KEYS}}"]
strategy = "priority"

[providers.gemini]
type = "gemini"
base_url = "{sim_url}"
keys = ["${{DEMO_GEMINI_KEYS}}"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[models.claude]
provider = "anthropic"
model = "claude-haiku-4-5"
max_output_tokens = 1024

[models.gemini]
provider = "gemini"
model = "gemini-2.5-flash"

[routes]
default = ["gpt", "claude", "gemini"]
"""


def _print_attempts(result: dict) -> None:
    for attempt in result["attempts"]:
        status = attempt["status_code"] or "-"
        wait = f", retry after {attempt['retry_after_s']:.0f} s" if attempt["retry_after_s"] else ""
        print(f"    {attempt['model']:<7} {attempt['key_id']:<18} {status!s:>4}  {attempt['outcome']}{wait}")


def _print_keys(keys: list[dict]) -> None:
    print(f"  {'key id':<18} {'mask':<7} {'state':<10} {'model':<16} {'ready in':>8}  reason")
    for k in keys:
        ready = f"{k['ready_in_s']:.0f} s" if k["ready_in_s"] is not None else "-"
        reason = (k["reason"] or "")[:48]
        print(f"  {k['key_id']:<18} {k['mask']:<7} {k['state']:<10} {k['model'] or '*':<16} {ready:>8}  {reason}")


async def _conversation(sim_url: str, workdir: Path) -> None:
    from mcp import Client, StdioServerParameters

    config_path = workdir / "keygate.toml"
    config_path.write_text(_config(sim_url, workdir / "state.db"), encoding="utf-8")
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
    from .simulator import SimulatorThread, parse_scenario

    print("mcp-keygate demo — offline, no API keys: a simulator plays OpenAI, Anthropic and Gemini.\n")
    scenario = parse_scenario(SCENARIO)
    with tempfile.TemporaryDirectory(prefix="keygate-demo-") as tmp, SimulatorThread(scenario) as sim:
        anyio.run(_conversation, sim.url, Path(tmp))
    print(
        "\nNext: register it with Claude Desktop — see claude_desktop_config.example.json and the README's "
        "'Use it from Claude Desktop' section."
    )
    return 0
