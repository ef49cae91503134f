"""Three instances sharing one Redis in an exhaustion storm: do they, together, behave like one?

20 keys, each limited by the simulator to 10 requests per minute (a window starts at a key's first
request and restarts at the first request after it ends); calls arrive at 2.4× the pool's capacity,
spread evenly over three `Keygate` processes that share one redis-server (and nothing else), for a
whole number of windows. Two runs side by side, each with its own simulator: steering by the
rate-limit headers alone, and with a client-side budget (rpm = 10) as well.

Figures: requests sent on keys known unusable, 429s, the most requests any key served in one of its
windows (more than 10 = a slot booked twice), leases left in flight at the end, and answered calls
against the true capacity — 10 per window each key opened while calls were arriving (requests
answered in a window opened after the last call arrived, by calls still waiting, are the "tail").

Run: python -m bench.scaleout [--seconds 120] [--instances 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from mcp_keygate.simulator import fingerprint

from .upstream import ROOT, SimProcess, Upstream, free_port

KEYS_N, RPM, DEMAND = 20, 10, 2.4
WINDOW_S = 60.0


def _config(sim: SimProcess, redis_url: str, prefix: str, budget: bool) -> dict[str, Any]:
    provider: dict[str, Any] = {"base_url": sim.openai_base, "keys": _keys(), "stream": False}
    if budget:
        provider["rpm"] = RPM
    return {
        "state": {"backend": "redis", "url": redis_url, "prefix": prefix},
        "providers": {"p": provider},
        "models": {"mini": {"provider": "p", "model": "gpt-4.1-mini"}},
    }


def _keys() -> list[str]:
    return [f"sim-ok-scaleout{i:02d}" for i in range(KEYS_N)]


async def _instance(config_path: str, rate: float, seconds: float, start_at: float) -> dict[str, int]:
    """One instance: its own Keygate on the shared Redis, calls fired open-loop at `rate`."""
    from mcp_keygate.complete_request import CompleteRequest
    from mcp_keygate.config import parse_config
    from mcp_keygate.gateway import Keygate

    from .compare import _drive

    config = parse_config(json.loads(Path(config_path).read_text(encoding="utf-8")))
    async with Keygate(config) as gate:

        async def call() -> None:
            await gate.complete(CompleteRequest(prompt="hello"))  # the default wait (20 s), like a user

        await anyio.sleep(max(0.0, start_at - time.time()))
        ok, failed = await _drive(call, rate, seconds)
    return {"answered": ok, "errors": failed}


def _windows(times: list[float]) -> list[list[float]]:
    """A key's answered requests grouped into the simulator's windows."""
    windows: list[list[float]] = []
    for ts in sorted(times):
        if not windows or ts >= windows[-1][0] + WINDOW_S:
            windows.append([ts])
        else:
            windows[-1].append(ts)
    return windows


def analyse(log: list[dict[str, Any]], fire_end: float, seconds: float) -> dict[str, Any]:
    upstream = Upstream.from_log(log)
    served: dict[str, list[float]] = {}
    for entry in log:
        if entry.get("status") == 200:
            served.setdefault(entry["key"], []).append(entry["ts"])
    capacity = in_capacity = tail = most = 0
    for key in _keys():
        windows = _windows(served.get(fingerprint(key), []))
        if not windows:  # a key never used still had its windows to offer
            capacity += RPM * math.ceil(seconds / WINDOW_S)
        for window in windows:
            most = max(most, len(window))
            if window[0] < fire_end:
                capacity += RPM
                in_capacity += len(window)
            else:
                tail += len(window)
    return {
        "upstream_requests": upstream.requests,
        "429s_received": upstream.rate_limited,
        "on_keys_known_unusable": upstream.on_known_unusable,
        "most_in_one_window": most,
        "capacity": capacity,
        "answered_in_capacity": in_capacity,
        "share_of_capacity": round(in_capacity / capacity, 4) if capacity else 0.0,
        "tail": tail,
    }


def run(seconds: float = 120.0, instances: int = 3) -> dict[str, dict[str, Any]]:
    server = shutil.which("redis-server")
    if server is None:
        return {}
    port = free_port()
    command = [server, "--port", str(port), "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    modes = {"headers only": False, f"budget rpm={RPM}": True}
    rate = DEMAND * KEYS_N * RPM / WINDOW_S / instances
    results: dict[str, dict[str, Any]] = {}
    sims = {mode: SimProcess({"keys": {k: {"rpm": RPM} for k in _keys()}}) for mode in modes}
    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for sim in sims.values():
                sim.__enter__()
            start_at = time.time() + 10  # every instance imported and opened by then
            for n, (mode, budget) in enumerate(modes.items()):
                path = Path(tmp) / f"config{n}.json"
                path.write_text(json.dumps(_config(sims[mode], url, f"scaleout{n}", budget)), encoding="utf-8")
                for _ in range(instances):
                    command = [sys.executable, "-m", "bench.scaleout", "--instance", str(path)]
                    command += ["--rate", str(rate), "--seconds", str(seconds), "--start-at", str(start_at)]
                    env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
                    procs.append((mode, proc))
            for mode, proc in procs:
                out, _ = proc.communicate(timeout=seconds + 120)
                row = results.setdefault(mode, {"instances": instances, "calls": 0, "answered": 0, "errors": 0})
                figures = json.loads(out.strip().splitlines()[-1])
                row["answered"] += figures["answered"]
                row["errors"] += figures["errors"]
                row["calls"] += figures["answered"] + figures["errors"]
            for n, mode in enumerate(modes):
                results[mode].update(analyse(sims[mode].log(), start_at + seconds, seconds))
                results[mode]["leases_left_in_flight"] = _in_flight(url, f"scaleout{n}")
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
        for sim in sims.values():
            sim.__exit__()
        redis.terminate()
        redis.wait(timeout=10)
    return results


def _in_flight(url: str, prefix: str) -> int:
    from redis import Redis

    client = Redis.from_url(url)
    try:
        return int(client.zcard(f"{prefix}:{{p}}:leases"))
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--instance", help=argparse.SUPPRESS)  # internal: run one instance with this config
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instance:
        print(json.dumps(anyio.run(_instance, args.instance, args.rate, args.seconds, args.start_at)))
        return
    print(json.dumps(run(args.seconds, args.instances), indent=2))


if __name__ == "__main__":
    main()
