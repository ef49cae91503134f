"""The forwarding floor: a bare MCPServer whose one tool forwards the prompt to the simulator with one
upstream HTTP call (httpx2 or aiohttp) and returns the answer's text. Nothing a gateway does beyond
that (keys, state, logs, accounting) is here, so keygate cannot be faster than this.

Run: python -m bench.forward_server PORT SIM_OPENAI_BASE httpx2|aiohttp json|sse
"""

from __future__ import annotations

import sys
from typing import Any

from mcp.server.mcpserver import MCPServer


def build(base: str, client: str) -> MCPServer:
    server = MCPServer("forward")
    url = f"{base}/chat/completions"
    headers = {"authorization": "Bearer sim-ok-floor", "content-type": "application/json"}
    state: dict[str, Any] = {}
    if client == "httpx2":
        import httpx2

        state["client"] = httpx2.AsyncClient(timeout=60)

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        if client == "aiohttp":
            import aiohttp

            if "session" not in state:  # made in the running loop; no await between test and set
                state["session"] = aiohttp.ClientSession()
            async with state["session"].post(url, json=body, headers=headers) as response:
                return await response.json()
        response = await state["client"].post(url, json=body, headers=headers)
        return response.json()

    @server.tool()
    async def complete(prompt: str) -> str:
        """Forward the prompt upstream and return the reply's text."""
        reply = await post({"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": prompt}]})
        return reply["choices"][0]["message"]["content"]

    return server


if __name__ == "__main__":
    port, base, client, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    build(base, client).run("streamable-http", host="127.0.0.1", port=int(port), json_response=mode == "json")
