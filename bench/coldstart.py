"""Cold start over stdio: spawn → initialize reply, keygate vs a bare MCPServer with one tool."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}


def spawn_to_initialize(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdin and proc.stdout
    proc.stdin.write((json.dumps(INIT) + "\n").encode())
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.stdin.close()
    proc.wait(timeout=10)
    assert b'"id":1' in line.replace(b" ", b""), line
    return elapsed


def measure(runs: int = 15) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OPENAI_API_KEYS": "sk-bench-aaaaaaaaaaaa,sk-bench-bbbbbbbbbbbb",
            "KEYGATE_STATE": str(Path(tmp) / "state.db"),
        }
        env.pop("KEYGATE_CONFIG", None)
        keygate = [sys.executable, "-m", "mcp_keygate", "serve", "--log-level", "WARNING"]
        bare = [sys.executable, str(ROOT / "bench" / "bare_server.py")]
        spawn_to_initialize(keygate, env)  # warm the OS file cache for both
        spawn_to_initialize(bare, env)
        k_times, b_times = [], []
        for _ in range(runs):  # interleaved so drift hits both alike
            k_times.append(spawn_to_initialize(keygate, env))
            b_times.append(spawn_to_initialize(bare, env))
    k, b = statistics.median(k_times), statistics.median(b_times)
    return {"keygate_ms": k * 1000, "bare_ms": b * 1000, "ratio": k / b}


def import_ms(module: str, runs: int = 7) -> float | None:
    """Median wall time of `python -c "import <module>"` (None when it is not installed)."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True).returncode:
        return None
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
