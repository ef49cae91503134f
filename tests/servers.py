"""Real servers for the tests: `serve --transport …` as a process, and SDK client sessions to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from .conftest import REPO

ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str],
        transport: str = "http",
        host: str = "127.0.0.1",
        log_level: str = "INFO",
        extra_args: tuple[str, ...] = (),
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYGATE_", "OPENAI_"))}
        # stderr goes to a file: a pipe nobody reads fills up and blocks the server's logging.
        self.stderr_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            "w+", prefix="keygate-server-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mcp_keygate",
                "serve",
                "--config",
                str(config),
                "--transport",
                transport,
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                log_level,
                *extra_args,
            ],
            env={**base, "PYTHONPATH": str(REPO), **env},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_file,
            text=True,
        )

    def stderr(self) -> str:
        return Path(self.stderr_file.name).read_text()

    def wait_ready(self, timeout: float = 20) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr()}")
            try:
                if httpx2.get(f"{self.url}/healthz").status_code == 200:
                    return self
            except httpx2.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.stderr()


@asynccontextmanager
async def streamable(url: str, token: str | None, *, modern: bool = False, **session_options: Any):
    """A real SDK client session: the 2025-11-25 handshake (a session), or with `modern` the
    2026-07-28 wire (`server/discover`, no session). `session_options` go to `ClientSession`
    (a logging callback, a log level)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, *_),
        ClientSession(read, write, **session_options) as session,
    ):
        await (session.discover() if modern else session.initialize())
        yield session


@asynccontextmanager
async def sse(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with sse_client(f"{url}/sse", headers=headers) as (read, write, *_), ClientSession(read, write) as session:
        await session.initialize()
        yield session
