"""A hostile upstream cannot make the server hold more than `[limits] max_response_bytes` of one reply.

A real `serve --transport http` process calls an OpenAI-style upstream on loopback that answers with
(a) one SSE line of 400 MB that never ends, or (b) a gzip bomb: 1 MB on the wire that inflates to 1 GiB,
as a stream and as a plain JSON reply. The call falls back to a healthy provider on the simulator, and the
server's peak RSS (`VmHWM`) stays far below what the upstream sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from pathlib import Path

import pytest

from ..conftest import write_toml
from ..servers import ALICE, ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

PEAK_RSS_LIMIT_KB = 300 * 1024
LINE_BYTES = 400_000_000  # (a): one SSE line without a newline
BOMB_MIB = 1024  # (b): inflated size; about 1 KB on the wire per MiB
SEND_FOR_S = 60.0  # every hostile reply stops after this long, whatever happens


def bomb_segments(mib: int) -> tuple[bytes, bytes, int]:
    """A gzip header + first MiB of zeros, one more MiB as a deflate block that repeats verbatim after a full
    flush, and how many repeats make `mib` MiB: the bomb is never materialised, inflated or compressed whole."""
    zeros = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    segment = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    assert packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH) == segment
    return first, segment, mib - 1


class HostileUpstream:
    """An HTTP/1.1 server on 127.0.0.1 in a thread; the key in `Authorization` picks the attack."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self.sent: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head.split("\r\n")[1:])}
            length = min(int(headers.get("content-length", "0")), 1_000_000)
            body = json.loads(await reader.readexactly(length)) if length else {}
            attack = headers.get("authorization", "").removeprefix("Bearer ").split("-")[1]
            self.requests.append({"attack": attack, "stream": bool(body.get("stream")), **headers})
            await self._attack(writer, attack, bool(body.get("stream")))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _attack(self, writer: asyncio.StreamWriter, attack: str, stream: bool) -> None:
        media = "text/event-stream" if stream else "application/json"
        encoding = "Content-Encoding: gzip\r\n" if attack == "gzipbomb" else ""
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {media}\r\n{encoding}Connection: close\r\n\r\n".encode())
        if attack == "gzipbomb":
            first, chunk, repeats = bomb_segments(BOMB_MIB)
            writer.write(first)
        else:
            writer.write(b"data: " if stream else b'{"padding": "')
            chunk, repeats = b"x" * 65536, LINE_BYTES // 65536
        sent, until = 0, time.monotonic() + SEND_FOR_S
        try:
            for _ in range(repeats):
                if time.monotonic() > until:
                    break
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        finally:
            self.sent.append(sent)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture
def hostile():
    with HostileUpstream() as upstream:
        yield upstream


@pytest.mark.parametrize(("attack", "stream"), [("longline", True), ("gzipbomb", True), ("gzipbomb", False)])
async def test_a_hostile_reply_is_refused_within_the_memory_bound(tmp_path, sim, hostile, attack, stream):
    data = {
        "state": {"backend": "memory"},
        "server": {"auth_tokens": {"alice": "${ALICE_TOKEN}"}},
        "providers": {
            "hostile": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{hostile.port}/v1",
                "keys": [f"hostile-{attack}-0000000001"],
                "stream": stream,
                "timeout_s": 30,
            },
            "healthy": {"type": "openai", "base_url": sim.openai_base, "keys": ["sim-ok-memory00001"]},
        },
        "models": {
            "bad": {"provider": "hostile", "model": "gpt-4.1-mini"},
            "good": {"provider": "healthy", "model": "gpt-4.1"},
        },
        "routes": {"default": ["bad", "good"]},
    }
    server = ServerProcess(write_toml(tmp_path / "keygate.toml", data), free_port(), {"ALICE_TOKEN": ALICE})
    try:
        server.wait_ready()
        before = peak_rss_kb(server.proc.pid)
        started = time.monotonic()
        async with streamable(server.url, ALICE) as session:
            result = await session.call_tool("complete", {"prompt": "tell me everything"})
        elapsed = time.monotonic() - started
        peak = peak_rss_kb(server.proc.pid)
    finally:
        server.stop()
    print(f"{attack} stream={stream}: peak RSS {before // 1024} MB at start, {peak // 1024} MB after the call")
    assert [r["attack"] for r in hostile.requests] == [attack] and hostile.requests[0]["stream"] is stream
    assert not result.is_error, result.content
    attempts = result.structured_content["attempts"]
    assert [a["outcome"] for a in attempts] == ["upstream_error", "ok"]
    assert result.structured_content["model"] == "good"
    assert peak < PEAK_RSS_LIMIT_KB, f"peak RSS {peak // 1024} MB"
    assert elapsed < 30
    if attack == "longline":  # the server hung up soon after 8 MB, long before the 400 MB were sent
        for _ in range(100):
            if hostile.sent:
                break
            time.sleep(0.05)
        assert hostile.sent and hostile.sent[0] < 100_000_000
