"""Resident memory of `mcp-keygate serve` over stdio: idle after start, and after 10,000 conversations.

Run: python -m bench.memory [--conversations 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import anyio

from .upstream import SimProcess, stdio_keygate


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _server_pid() -> int:
    """The newest `mcp_keygate serve` process that is our child's (the stdio client spawns it)."""
    me = os.getpid()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().split(")")[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"mcp_keygate" in cmd and b"serve" in cmd and ppid == me:
            found.append(int(proc.name))
    return max(found)


async def measure(conversations: int = 10_000) -> dict[str, float]:
    from mcp import Client

    with SimProcess() as sim, tempfile.TemporaryDirectory() as tmp:
        params = stdio_keygate(sim.openai_base, Path(tmp), [f"sim-ok-mem{i:02d}" for i in range(10)])
        async with Client(params, mode="legacy") as client:
            await client.list_tools()
            pid = _server_pid()
            idle = rss_mb(pid)
            await client.call_tool("complete", {"prompt": "first"})
            after_first = rss_mb(pid)
            for i in range(conversations - 1):
                await client.call_tool("complete", {"prompt": f"conversation {i}: hello there"})
            after = rss_mb(pid)
    return {
        "idle_mb": idle,
        "after_first_call_mb": after_first,
        "after_conversations_mb": after,
        "conversations": conversations,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(anyio.run(measure, args.conversations), indent=2))


if __name__ == "__main__":
    main()
