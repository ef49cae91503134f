"""Throughput over streamable HTTP: `complete` calls/s one instance (and two on Redis) sustains with
N concurrent MCP clients, next to a bare MCPServer echo tool in the same transport mode.

Everything runs on this machine: clients, servers, the simulator (zero latency) and redis-server.
Run: python -m bench.throughput [--clients 20] [--seconds 8] [--json-response]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from .upstream import ROOT, SimProcess, free_port, wait_http

BARE = """
import sys
from mcp.server.mcpserver import MCPServer
server = MCPServer("bare")

@server.tool()
async def echo(text: str) -> str:
    return text

server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=sys.argv[2] == "1")
"""


async def load(urls: list[str], tool: str, args: dict, clients: int, seconds: float) -> dict:
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client(i: int) -> None:
        async with (
            httpx2.AsyncClient(timeout=60) as http,
            streamable_http_client(f"{urls[i % len(urls)]}/mcp", http_client=http) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                result = await session.call_tool(tool, args)
                latencies.append(time.perf_counter() - started)
                if result.is_error:
                    errors[i] += 1
                else:
                    counts[i] += 1

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(client, i)
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "calls_per_s": round(sum(counts) / elapsed, 1),
        "errors": sum(errors),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
    }


def start_bare(port: int, json_response: bool) -> subprocess.Popen:
    """The bare MCPServer echo tool over streamable HTTP."""
    return subprocess.Popen(
        [sys.executable, "-c", BARE, str(port), "1" if json_response else "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_keygate(
    config: Path, port: int, profile: Path | None = None, log_level: str = "WARNING", module: str = "mcp_keygate"
) -> subprocess.Popen:
    """`serve` over streamable HTTP; with `profile`, under cProfile (written when it is stopped);
    `module` bench.stub_gateway serves with the gateway's call replaced by a fixed answer."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "BENCH_KEYS": ",".join(f"sim-ok-bench{i:02d}" for i in range(10)),
    }
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return subprocess.Popen(
        [
            sys.executable,
            *profiler,
            "-m",
            module,
            "serve",
            "--config",
            str(config),
            "--transport",
            "streamable-http",
            "--port",
            str(port),
            "--log-level",
            log_level,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def write_config(path: Path, sim_base: str, state: str, json_response: bool, upstream_client: str = "httpx2") -> None:
    path.write_text(
        f'{state}\n[server]\njson_response = {str(json_response).lower()}\nupstream_client = "{upstream_client}"\n'
        f'[providers.p]\nbase_url = "{sim_base}"\nkeys = ["${{BENCH_KEYS}}"]\nstream = false\n'
        '[models.mini]\nprovider = "p"\nmodel = "gpt-4.1-mini"\n',
        encoding="utf-8",
    )


def run(clients: int = 20, seconds: float = 8.0, json_response: bool = False, redis: bool = True) -> dict:
    """calls/s of a bare echo tool, one keygate instance, and two on one Redis (if redis-server is here)."""
    results: dict[str, dict] = {}
    procs: list[subprocess.Popen] = []

    def measure(name: str, ports: list[int], tool: str, args: dict) -> None:
        results[name] = anyio.run(load, [f"http://127.0.0.1:{p}" for p in ports], tool, args, clients, seconds)

    with tempfile.TemporaryDirectory() as tmp, SimProcess() as sim:
        try:
            port = free_port()
            procs.append(start_bare(port, json_response))
            wait_http(f"http://127.0.0.1:{port}/mcp")
            measure("bare MCPServer echo tool", [port], "echo", {"text": "hi"})
            procs.pop().terminate()

            config = Path(tmp) / "sqlite.toml"
            write_config(config, sim.openai_base, f'[state]\npath = "{Path(tmp) / "state.db"}"', json_response)
            port = free_port()
            procs.append(start_keygate(config, port))
            wait_http(f"http://127.0.0.1:{port}/healthz")
            measure("keygate complete, one instance (SQLite)", [port], "complete", {"prompt": "hello"})
            procs.pop().terminate()

            redis_server = shutil.which("redis-server")
            if redis and redis_server:
                redis_port = free_port()
                procs.append(
                    subprocess.Popen(
                        [redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                        stdout=subprocess.DEVNULL,
                    )
                )
                config = Path(tmp) / "redis.toml"
                state = f'[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"'
                write_config(config, sim.openai_base, state, json_response)
                ports = [free_port(), free_port()]
                for p in ports:
                    procs.append(start_keygate(config, p))
                for p in ports:
                    wait_http(f"http://127.0.0.1:{p}/healthz")
                measure("keygate complete, two instances on one Redis", ports, "complete", {"prompt": "hello"})
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=20)
    return results


CLIENTS = ("httpx2", "aiohttp")
STUB = "stub gateway (fixed answer)"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_floor(port: int, sim_base: str, upstream_client: str, json_response: bool) -> subprocess.Popen:
    mode = "json" if json_response else "sse"
    return subprocess.Popen(
        [sys.executable, "-m", "bench.forward_server", str(port), sim_base, upstream_client, mode],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def side_by_side(
    counts: tuple[int, ...] = (10, 20, 50),
    seconds: float = 6.0,
    json_response: bool = True,
    repeats: int = 1,
    profile_dir: Path | None = None,
    log_level: str = "INFO",
    stub_gateway: bool = False,
) -> dict:
    """calls/s at each count of MCP clients, in one run: a bare echo tool, the forwarding floor with
    each upstream client, and keygate with each upstream client. Systems alternate within each round
    so drift on a shared box hits all alike; with `repeats`, each figure is the median of the rounds.
    keygate runs at `log_level` (INFO is the default a user gets). With `profile_dir`, extra runs
    (not in the figures: cProfile slows the server) write a profile of keygate per client count."""
    import statistics

    systems = ["bare echo tool", *(f"floor, {c}" for c in CLIENTS), *(f"keygate, {c}" for c in CLIENTS)]
    if stub_gateway:  # keygate's MCP, HTTP and tool layers with a fixed answer instead of the gateway
        systems.append(f"keygate, {STUB}")
    rounds: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp, SimProcess() as sim:

        def start(system: str, port: int, profile: Path | None = None) -> tuple[subprocess.Popen, str, dict]:
            if system == "bare echo tool":
                return start_bare(port, json_response), "echo", {"text": "hello"}
            kind, client = system.split(", ")
            if kind == "floor":
                return start_floor(port, sim.openai_base, client, json_response), "complete", {"prompt": "hello"}
            module = "bench.stub_gateway" if client == STUB else "mcp_keygate"
            client = "aiohttp" if client == STUB else client
            config = Path(tmp) / f"{client}.toml"
            state = f'[state]\npath = "{Path(tmp) / (client + ".db")}"'
            write_config(config, sim.openai_base, state, json_response, client)
            return start_keygate(config, port, profile, log_level, module), "complete", {"prompt": "hello"}

        def once(system: str, clients: int, profile: Path | None = None) -> dict:
            port = free_port()
            proc, tool, args = start(system, port, profile)
            try:
                wait_http(f"http://127.0.0.1:{port}/mcp")
                before = cpu_seconds(proc.pid)
                result = anyio.run(load, [f"http://127.0.0.1:{port}"], tool, args, clients, seconds)
                answered = result["calls_per_s"] * seconds
                used = cpu_seconds(proc.pid) - before
                result["server_cpu_ms_per_call"] = round(1000 * used / answered, 3) if answered else None
                return result
            finally:
                proc.terminate()
                proc.wait(timeout=30)

        for clients in counts:
            row = rounds.setdefault(f"{clients} clients", {s: [] for s in systems})
            for r in range(repeats):
                for system in systems[r % len(systems) :] + systems[: r % len(systems)]:
                    row[system].append(once(system, clients))
        if profile_dir:
            for clients in (counts[0], counts[-1]):
                for client in CLIENTS:
                    once(f"keygate, {client}", clients, profile_dir / f"{client}-{clients}.prof")
    results: dict[str, dict] = {}
    for name, row in rounds.items():
        results[name] = {
            system: {
                "calls_per_s": round(statistics.median(r["calls_per_s"] for r in runs), 1),
                "p50_ms": statistics.median(r["p50_ms"] or 0 for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "runs": [r["calls_per_s"] for r in runs],
                # Steadier than calls/s on a shared machine: what one answered call cost the server.
                "server_cpu_ms_per_call": statistics.median(r["server_cpu_ms_per_call"] or 0 for r in runs),
            }
            for system, runs in row.items()
        }
    return results


PACKAGES = {
    "anyio": "anyio (task groups, streams)",
    "h11": "h11 (HTTP/1.1 parsing, server and httpx2 sides)",
    "pydantic": "pydantic (validation, serialisation)",
    "pydantic_core": "pydantic (validation, serialisation)",
    "mcp": "MCP SDK",
    "httpx2": "upstream client (httpx2/httpcore2)",
    "httpcore2": "upstream client (httpx2/httpcore2)",
    "aiohttp": "upstream client (aiohttp)",
    "uvicorn": "uvicorn/Starlette",
    "starlette": "uvicorn/Starlette",
    "sse_starlette": "uvicorn/Starlette",
}


def profile_split(path: Path) -> dict[str, float]:
    """Where the server's time went (cProfile tottime): the share idle in epoll, and the busy rest
    by package. Imports (start-up) are left out."""
    import pstats

    busy: dict[str, float] = {}
    idle = 0.0
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, tottime, _, _) in stats.items():
        if "select.epoll" in name:
            idle += tottime
            continue
        if "importlib" in filename or name in ("<built-in method builtins.compile>", "<built-in method marshal.loads>"):
            continue
        if "/site-packages/" in filename:
            group = PACKAGES.get(filename.split("/site-packages/")[1].split("/")[0], "other libraries")
        elif "/mcp_keygate/" in filename:
            group = "keygate"
        elif "socket" in name and "send" in name:
            group = "socket writes"
        elif "pydantic_core" in name:
            group = "pydantic (validation, serialisation)"
        else:
            group = "asyncio, stdlib and builtins"
        busy[group] = busy.get(group, 0.0) + tottime
    whole = sum(busy.values()) or 1.0
    shares = {g: round(t / whole, 3) for g, t in sorted(busy.items(), key=lambda x: -x[1])}
    return {"idle (epoll wait) of all": round(idle / (idle + whole), 3), **shares}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="bare echo, forwarding floors and keygate with each upstream client, at 10/20/50 clients",
    )
    parser.add_argument("--repeats", type=int, default=1, help="with --side-by-side: rounds (medians reported)")
    parser.add_argument("--profile", type=Path, help="with --side-by-side: write cProfile files here")
    parser.add_argument("--counts", default="10,20,50", help="with --side-by-side: client counts, comma-separated")
    parser.add_argument(
        "--stub-gateway",
        action="store_true",
        help="with --side-by-side: also keygate with its gateway call replaced by a fixed answer",
    )
    opts = parser.parse_args()
    if opts.side_by_side:
        if opts.profile:
            opts.profile.mkdir(parents=True, exist_ok=True)
        results = side_by_side(
            counts=tuple(int(c) for c in opts.counts.split(",")),
            seconds=opts.seconds,
            json_response=opts.json_response,
            repeats=opts.repeats,
            profile_dir=opts.profile,
            stub_gateway=opts.stub_gateway,
        )
        if opts.profile:
            results["profile"] = {p.stem: profile_split(p) for p in sorted(opts.profile.glob("*.prof"))}
    else:
        results = run(opts.clients, opts.seconds, opts.json_response, not opts.no_redis)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
