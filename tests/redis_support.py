"""A real redis-server for the tests: started once per session on a free loopback port.

Where `redis-server` is not installed the Redis tests are skipped with a note saying how to get
it — unless KEYGATE_REQUIRE_REDIS=1 (CI), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    """redis-server's path; skips the test where it is missing (fails it under KEYGATE_REQUIRE_REDIS=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
        if os.environ.get("KEYGATE_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def start_redis(workdir, port: int | None = None, appendonly: bool = False) -> tuple[subprocess.Popen, str]:
    """A redis-server of the test's own on loopback, once it answers PING: no persistence, or with
    `appendonly` every write on disk before it is acknowledged (appendfsync always) in `workdir`,
    where a server started again on the same port and directory finds it."""
    port = port or _free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
    command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence]
    proc = subprocess.Popen(
        [*command, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def redis_pool_factory(request):
    """A builder of RedisKeyPools on the session's redis-server, each test under its own prefix."""
    url = request.getfixturevalue("redis_url")
    prefix = unique_prefix()

    async def build(keys, settings, clock):
        from redis.asyncio import Redis

        from mcp_keygate.keys.redis_pool import RedisKeyPool

        pool = RedisKeyPool(Redis.from_url(url), prefix, keys, settings, clock)
        await pool.open()
        return pool

    return build
