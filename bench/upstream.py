"""The bundled simulator as a separate process on loopback (so it does not share the GIL with the
system under test), plus a reading of its request log: what each system really sent upstream."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


# Without a scenario, keys have no rate limits: the simulator's own default (10,000 requests a minute
# per key) is reached by a one-key forwarding floor at ~700 calls/s within a round, and its 429s then
# showed up as that floor's lost calls and collapsed rounds.
UNLIMITED = {"defaults": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}}


class SimProcess:
    """`mcp-keygate simulator` in its own process, with a scenario set over its control API."""

    def __init__(self, scenario: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.openai_base = f"{self.url}/v1"
        self._scenario = scenario if scenario is not None else UNLIMITED
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> SimProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_keygate", "simulator", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/_sim/log")
        self.reset(self._scenario)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=20)

    def reset(self, scenario: dict[str, Any] | None = None) -> None:
        httpx2.post(f"{self.url}/_sim/reset", json=scenario or {}).raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        return httpx2.get(f"{self.url}/_sim/log", timeout=30).json()["requests"]


def stdio_keygate(
    openai_base: str,
    workdir: Path,
    keys: list[str],
    log_level: str = "WARNING",
    stream: bool = False,
    upstream_client: str | None = None,
) -> Any:
    """`mcp-keygate serve` over stdio with a SQLite state file in `workdir` and `keys` on one provider.
    A user's defaults are `log_level="INFO"` and `stream=True`; benchmarks that differ say so."""
    from mcp import StdioServerParameters

    config = workdir / "keygate.toml"
    server = f'[server]\nupstream_client = "{upstream_client}"\n' if upstream_client else ""
    config.write_text(
        f'{server}[state]\npath = "{workdir / "state.db"}"\n[providers.p]\nbase_url = "{openai_base}"\n'
        f'keys = ["${{BENCH_KEYS}}"]\nstream = {str(stream).lower()}\n'
        '[models.mini]\nprovider = "p"\nmodel = "gpt-4.1-mini"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_KEYS": ",".join(keys), "BENCH_LOG": str(workdir / "log")}
    serve = [sys.executable, "-m", "mcp_keygate", "serve", "--config", str(config), "--log-level", log_level]
    # The server's log goes to a file in `workdir` (written as a user's terminal would get it), not
    # into the benchmark's own output.
    return StdioServerParameters(command="sh", env=env, args=["-c", 'exec "$@" 2>>"$BENCH_LOG"', "sh", *serve])


@dataclass
class Upstream:
    """What reached the upstream: answers, 429s, and calls on keys the system had been told were unusable."""

    requests: int = 0
    answered: int = 0
    rate_limited: int = 0
    quota_refusals: int = 0
    on_known_unusable: int = 0

    @classmethod
    def from_log(cls, log: list[dict[str, Any]]) -> Upstream:
        seen = cls()
        blocked_until: dict[str, float] = {}
        for entry in sorted(log, key=lambda e: e.get("ts", 0)):
            key, ts = entry.get("key"), entry.get("ts", 0.0)
            seen.requests += 1
            if ts < blocked_until.get(key, 0.0):
                seen.on_known_unusable += 1
            status, outcome = entry.get("status"), entry.get("outcome")
            if status == 200:
                seen.answered += 1
            elif outcome == "quota":
                seen.quota_refusals += 1
                blocked_until[key] = math.inf
            elif status == 429:
                seen.rate_limited += 1
                blocked_until[key] = max(blocked_until.get(key, 0.0), ts + (entry.get("retry_after_s") or 1.0))
        return seen
