"""Every benchmark scenario in one run, written to bench/RESULTS.md and bench/results.png.

Run: python -m bench [--quick]     (pip install -e ".[bench]" first: LiteLLM and matplotlib)
The simulator runs on loopback with zero latency; everything shares this machine. Repeated
measurements report medians; expect ±10 % between runs on a noisy box.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import anyio

from . import coldstart, compare, memory, overhead, scaleout, selection, throughput
from .report import write_report

HERE = Path(__file__).resolve().parent


def _median_runs(runs: list[dict], keys: list[str]) -> dict:
    """Per system, the median of each figure across repeated runs."""
    out: dict = {}
    for system in runs[0]:
        out[system] = {k: statistics.median(r[system][k] for r in runs) for k in keys}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a few minutes instead of ~15)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    import gc

    import litellm  # noqa: F401 - loaded once, up front, and frozen with the rest: a full garbage
    # collection would otherwise walk LiteLLM's objects and stall whichever system is being measured

    gc.collect()
    gc.freeze()
    started = time.monotonic()
    results: dict = {
        "machine": f"{platform.machine()}, {platform.python_version()}, {_cpus()} cores",
        "quick": args.quick,
    }

    def step(name: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {name}", file=sys.stderr, flush=True)

    step("key selection cost")
    results["selection"] = selection.run(5_000 if args.quick else 20_000)
    step("overhead per call, concurrency 1 and 64 (keygate, LiteLLM, bare httpx2)")
    calls = 600 if args.quick else 1500
    results["overhead_c1"] = _median_runs(
        [anyio.run(compare.overhead, calls // 3, 1) for _ in range(repeats)], ["p50_ms", "p99_ms"]
    )
    results["overhead_c64"] = _median_runs(
        [anyio.run(compare.overhead, calls * 2, 64) for _ in range(repeats)], ["p50_ms", "p99_ms"]
    )
    step("keygate's own overhead over stdio (complete − direct − echo round trip)")
    results["stdio"] = anyio.run(overhead.measure, 200 if args.quick else 400)
    step("exhaustion storm (20 keys × 10 rpm, 2.4× demand)")
    results["storm"] = anyio.run(compare.storm, 70.0 if args.quick else 130.0)
    step("three instances on one Redis: exhaustion storm")
    results["scaleout_seconds"] = 60.0 if args.quick else 120.0
    results["scaleout"] = scaleout.run(results["scaleout_seconds"])
    step("quota (5 of 10 keys out of quota)")
    results["quota"] = anyio.run(compare.quota, 10.0 if args.quick else 30.0)
    step("cold start over stdio, LiteLLM import")
    runs = sorted((coldstart.measure(7 if args.quick else 15) for _ in range(repeats)), key=lambda r: r["ratio"])
    results["coldstart"] = runs[len(runs) // 2]  # the run with the median ratio
    results["coldstart"]["litellm_import_ms"] = coldstart.import_ms("litellm", 3 if args.quick else 7)
    step("memory")
    results["memory"] = anyio.run(memory.measure, 2_000 if args.quick else 10_000)
    step("throughput over streamable HTTP")
    seconds = 5.0 if args.quick else 8.0
    results["throughput"] = {}
    for clients in (10, 20, 50):
        for json_response in (False, True):
            runs = [throughput.run(clients, seconds, json_response, redis=False) for _ in range(repeats)]
            mode = "JSON" if json_response else "SSE"
            results["throughput"][f"{clients} clients, {mode} replies"] = {
                system: statistics.median(r[system]["calls_per_s"] for r in runs) for system in runs[0]
            }
    step("throughput side by side: bare echo, forwarding floors, keygate with each upstream client")
    results["side_by_side"] = throughput.side_by_side(seconds=seconds, json_response=True, repeats=repeats)
    step("writing bench/RESULTS.md and bench/results.png")
    (HERE / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_report(results, HERE / "RESULTS.md", HERE / "results.png")
    step("done")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
