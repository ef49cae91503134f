"""Redis going away under load, against a running `mcp-keygate serve` and a real redis-server with
appendonly persistence: calls fail fast with one line while it is gone (killed, or frozen and so
silent), /healthz says 503, and when it is back the instance carries on by itself — with every
key state Redis had acknowledged, nothing half-written, and nothing left "in flight"."""

from __future__ import annotations

import signal

import anyio
import httpx2
import pytest
from redis.asyncio import Redis

from .conftest import fp, sim_log, write_toml
from .redis_support import start_redis, unique_prefix
from .servers import ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

COOLING = "sim-ratelimit-600s-fault-cool01"  # cooled by its first answer, for 10 minutes
GOOD = [f"sim-ok-fault-key-{i:02d}" for i in range(4)]


def config(tmp_path, sim, url: str, prefix: str):
    data = {
        "state": {"backend": "redis", "url": url, "prefix": prefix},
        "providers": {"p": {"base_url": sim.openai_base, "keys": [COOLING, *GOOD], "strategy": "priority"}},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
    }
    return write_toml(tmp_path / "keygate.toml", data)


class Load:
    """Callers in a loop, each call its own session, until told to stop; what each call said."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[dict] = []
        self.stopped = False

    async def caller(self, who: int) -> None:
        i = 0
        while not self.stopped:
            i += 1
            try:
                async with streamable(self.url, None) as session:
                    result = await session.call_tool("complete", {"prompt": f"{who}/{i}", "max_wait_s": 0})
            except Exception as exc:  # the MCP session itself failed: never expected here
                self.results.append({"ok": False, "text": f"transport: {exc!r}"})
                continue
            text = result.content[0].text
            self.results.append({"ok": not result.is_error, "text": text, "structured": result.structured_content})
            await anyio.sleep(0.01)

    def count(self, ok: bool) -> int:
        return sum(1 for r in self.results if r["ok"] is ok)


async def wait_until(check, what: str, seconds: float = 60) -> None:
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.05)


async def healthz(url: str) -> int:
    async with httpx2.AsyncClient() as client:
        return (await client.get(f"{url}/healthz")).status_code


async def test_redis_killed_frozen_and_restarted_under_load(sim, tmp_path):
    proc, url = start_redis(tmp_path, appendonly=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    prefix = unique_prefix()
    # Short socket timeouts, so a frozen Redis fails calls within a second (the default is 3 s).
    server_url = f"{url}?socket_timeout=1&socket_connect_timeout=1"
    server = ServerProcess(config(tmp_path, sim, server_url, prefix), free_port(), {}).wait_ready()
    load = Load(server.url)
    try:
        async with anyio.create_task_group() as tg:
            for who in range(6):
                tg.start_soon(load.caller, who)
            await wait_until(lambda: _at_least(load, True, 30), "answers before the kill")
            proc.kill()  # crash: no goodbye, but every acknowledged write is on disk (appendfsync always)
            proc.wait()
            down_from = len(load.results)
            await wait_until(lambda: _failures_since(load, down_from, 12), "calls failing while Redis is down")
            assert await healthz(server.url) == 503
            proc, _ = start_redis(tmp_path, port=port, appendonly=True)
            await wait_until(lambda: _healthy(server.url), "health after the restart")
            back_from = len(load.results)
            await wait_until(lambda: _answers_since(load, back_from, 30), "answers after the restart")
            proc.send_signal(signal.SIGSTOP)  # frozen: connections stay open, nothing answers
            frozen_from = len(load.results)
            await wait_until(lambda: _failures_since(load, frozen_from, 6), "calls failing while Redis is frozen")
            proc.send_signal(signal.SIGCONT)
            thawed_from = len(load.results)
            await wait_until(lambda: _answers_since(load, thawed_from, 30), "answers after the thaw")
            load.stopped = True
        async with streamable(server.url, None) as session:
            rows = (await session.call_tool("key_status", {})).structured_content["keys"]
    finally:
        load.stopped = True
        _code, stderr = server.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
    try:
        failed = [r["text"] for r in load.results if not r["ok"]]
        odd = [t for t in failed if "cannot use Redis at redis://127.0.0.1:" not in t or "\n" in t]
        assert failed and not odd, odd[:5]
        assert "Traceback" not in stderr
        # The key cooled before the crash is still cooling: that state was acknowledged, so it is kept.
        cooling = [r for r in rows if r["state"] == "cooling"]
        assert [r["key_id"] for r in cooling] and cooling[0]["ready_in_s"] > 400
        assert sum(1 for e in sim_log(sim) if e["key"] == fp(COOLING)) == 1
        await _nothing_half_written(url, prefix, load, rows, len(sim_log(sim)))
    finally:
        proc.kill()
        proc.wait()


async def _nothing_half_written(url: str, prefix: str, load: Load, rows: list[dict], upstream: int) -> None:
    redis = Redis.from_url(url)
    base = f"{prefix}:{{p}}"
    # Every lease came back (releases Redis missed were replayed, leases whose answer was lost cancelled).
    assert await redis.hlen(f"{base}:inflight") == 0 and await redis.zcard(f"{base}:leases") == 0
    assert await redis.hlen(f"{base}:tickets") == 0
    # Every request sent upstream was counted once on its key, outage or not.
    assert sum(r["requests"] for r in rows) == upstream
    # Every answered call is stored whole; no conversation holds half a call.
    answered = [r["structured"]["conversation_id"] for r in load.results if r["ok"]]
    metas = [m.decode() async for m in redis.scan_iter(f"{prefix}:conv:*") if not m.endswith(b":turns")]
    for meta in metas:
        assert int(await redis.hget(meta, "turns")) == await redis.llen(f"{meta}:turns") == 2
    # (A write a frozen Redis ran after its caller gave up may be stored whole too, so: at least these.)
    assert set(answered) <= {m.rsplit(":", 1)[1] for m in metas}
    await redis.aclose()


async def _at_least(load: Load, ok: bool, n: int) -> bool:
    return load.count(ok) >= n


async def _failures_since(load: Load, start: int, n: int) -> bool:
    return sum(1 for r in load.results[start:] if not r["ok"]) >= n


async def _answers_since(load: Load, start: int, n: int) -> bool:
    return sum(1 for r in load.results[start:] if r["ok"]) >= n


async def _healthy(url: str) -> bool:
    return await healthz(url) == 200
