"""bench/RESULTS.md (tables, each target with its verdict) and bench/results.png from one run's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FLOOR = "httpx2 (floor)"
KEYGATE = "keygate router"
LITELLM = "LiteLLM Router"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _overhead_section(results: dict) -> tuple[str, dict[str, float]]:
    parts, ratios = [], {}
    for label, key in (("concurrency 1", "overhead_c1"), ("concurrency 64", "overhead_c64")):
        data = results[key]
        floor = data[FLOOR]["p50_ms"]
        rows = []
        for system, figures in data.items():
            extra = "—" if system == FLOOR else f"{(figures['p50_ms'] - floor) * 1000:.0f} µs"
            rows.append([system, f"{figures['p50_ms']:.2f} ms", f"{figures['p99_ms']:.2f} ms", extra])
        ours = data[KEYGATE]["p50_ms"] - floor
        theirs = data[LITELLM]["p50_ms"] - floor
        ratios[label] = ours / theirs if theirs > 0 else float("nan")
        parts.append(f"**{label}**\n\n" + _table(["system", "p50", "p99", "overhead at p50 (− floor)"], rows))
    return "\n\n".join(parts), ratios


def write_report(results: dict, markdown: Path, chart: Path) -> None:
    overhead_md, ratios = _overhead_section(results)
    stdio = results["stdio"]["overhead"]["stdio_p50_us"] / 1000
    selection = results["selection"]
    worst_100k = max(r["p99_us"] for r in selection if r["keys"] == 100_000 and "Redis" not in r["strategy"])
    cold = results["coldstart"]
    mem = results["memory"]
    storm = results["storm"]
    keygate_storm_429 = max(v["429s_received"] for k, v in storm.items() if k.startswith("keygate"))
    keygate_known = max(v["on_keys_known_unusable"] for k, v in storm.items() if k.startswith("keygate"))
    best_tp = max(figures["keygate complete, one instance (SQLite)"] for figures in results["throughput"].values())
    targets = [
        [
            "stdio overhead per `complete` (durable write included), p50",
            "≤ 1 ms",
            f"{stdio:.2f} ms",
            _verdict(stdio <= 1),
        ],
        *[
            [
                "in-process router overhead ÷ LiteLLM Router's, " + label,
                "≤ 0.20",
                f"{ratio:.3f}",
                _verdict(ratio <= 0.2),
            ]
            for label, ratio in ratios.items()
        ],
        [
            "upstream calls on keys known cooling/exhausted (storm + quota)",
            "0",
            str(keygate_known + results["quota"]["keygate"]["on_keys_known_unusable"]),
            _verdict(keygate_known + results["quota"]["keygate"]["on_keys_known_unusable"] == 0),
        ],
        ["429s in the storm with headers or budgets", "0", str(keygate_storm_429), _verdict(keygate_storm_429 == 0)],
        [
            "`complete` calls/s over streamable HTTP, one instance (best of 10–50 clients)",
            "≥ 500",
            f"{best_tp:.0f}",
            _verdict(best_tp >= 500),
        ],
        ["cold start ÷ bare MCPServer", "≤ 1.15", f"{cold['ratio']:.2f}", _verdict(cold["ratio"] <= 1.15)],
        [
            "key selection p99 at 100,000 keys (worst state)",
            "< 50 µs",
            f"{worst_100k:.1f} µs",
            _verdict(worst_100k < 50),
        ],
        ["RSS idle", "≤ 90 MB", f"{mem['idle_mb']:.0f} MB", _verdict(mem["idle_mb"] <= 90)],
        *_scaleout_targets(results),
    ]
    storm_rows = [
        [
            name,
            v["calls"],
            v["answered"],
            v["errors"],
            v["upstream_requests"],
            v["429s_received"],
            v["on_keys_known_unusable"],
        ]
        for name, v in storm.items()
    ]
    quota_rows = [
        [name, v["calls"], v["answered"], v["upstream_requests"], v["quota_refusals"], v["on_keys_known_unusable"]]
        for name, v in results["quota"].items()
    ]
    selection_rows = [
        [r["strategy"], f"{r['keys']:,}", f"{r['cooling']:.0%}", f"{r['p50_us']:.1f} µs", f"{r['p99_us']:.1f} µs"]
        for r in selection
        if "Redis" not in r["strategy"]
    ]
    redis_rows = [
        [
            r["strategy"],
            f"{r['keys']:,}",
            f"{r['p50_us']:.0f} µs",
            f"{r['p99_us']:.0f} µs",
            f"{r['concurrent_leases_per_s']:.0f}",
        ]
        for r in selection
        if "Redis" in r["strategy"]
    ]
    tp = results["throughput"]
    systems = list(next(iter(tp.values())))
    tp_rows = [[setting, *(f"{figures[s]:.0f}" for s in systems)] for setting, figures in tp.items()]
    litellm_import = cold.get("litellm_import_ms")
    text = f"""# Benchmark results

Written by `python -m bench{" --quick" if results.get("quick") else ""}` ({results["machine"]}). The bundled simulator
answers on loopback with zero latency, in its own process; clients, servers and simulator share the
machine. Repeated measurements are medians. Chart: `bench/results.png`; raw figures: `bench/results.json`.
{"".join(f"{chr(10)}{note}{chr(10)}" for note in results.get("notes", []))}
## Targets

{_table(["target", "goal", "measured", "verdict"], targets)}

## Overhead per call against LiteLLM

Same simulator, same 10 keys, plain (non-streamed) replies. keygate = `Keygate.complete` in-process
(router, key pool, conversation kept; memory store unless marked). LiteLLM = `Router.acompletion`
with one deployment per key, default settings.

{overhead_md}

## Exhaustion storm

20 keys, each limited by the simulator to 10 requests per minute (windows start at a key's first
request); calls arrive at 2.4× the pool's capacity for {
        "70" if results.get("quick") else "130"
    } s. keygate uses its default
`max_wait_s` (20 s). "on keys known unusable" counts requests sent to a key inside a wait the
upstream had already announced for it (retry-after of a 429, or after an out-of-quota answer).

{
        _table(
            ["system", "calls", "answered", "errors", "upstream requests", "429s received", "on keys known unusable"],
            storm_rows,
        )
    }

## Quota

10 keys, 5 of which answer `insufficient_quota`; 10 calls/s.

{
        _table(
            ["system", "calls", "answered", "upstream requests", "quota refusals received", "on keys known unusable"],
            quota_rows,
        )
    }

## Cold start and memory

{
        _table(
            ["figure", "value"],
            [
                ["bare MCPServer, spawn → initialize reply (stdio)", f"{cold['bare_ms']:.0f} ms"],
                ["mcp-keygate serve, spawn → initialize reply (stdio)", f"{cold['keygate_ms']:.0f} ms"],
                ["ratio", f"{cold['ratio']:.2f}×"],
                ["`import litellm` alone", "not installed" if litellm_import is None else f"{litellm_import:.0f} ms"],
                ["RSS idle (stdio server, SQLite state)", f"{mem['idle_mb']:.1f} MB"],
                ["RSS after the first call", f"{mem['after_first_call_mb']:.1f} MB"],
                [f"RSS after {mem['conversations']:,} stored conversations", f"{mem['after_conversations_mb']:.1f} MB"],
            ],
        )
    }

## Key selection

One `acquire` (release not timed); half the keys cooling means they were cooled by real calls and
are parked by the index. The in-process pool reads a handful of keys whatever the pool's size.

{_table(["strategy", "keys", "cooling", "p50", "p99"], selection_rows)}

The shared pool, on a local redis-server: one lease is one script call that reads the few keys at
the front of the model's index (new), where it was a WATCH transaction reading every key of the
provider and retried whenever any of them changed (old, kept in `bench/legacy_redis_pool.py` for
this table; too slow to measure at 100,000 keys). The last column is lease + release pairs per
second with 32 concurrent callers in one instance (the old pool took them in turn behind a lock).

{_table(["pool", "keys", "p50", "p99", "pairs/s, 32 callers"], redis_rows)}
{_scaleout_section(results)}{_side_by_side_section(results)}
## Throughput over streamable HTTP (calls/s)

{_table(["setting", *systems], tp_rows)}

The load generator (MCP SDK clients), the server and the simulator share the 2 cores. At 20
clients with JSON replies the server process uses about 0.8 of a core, the clients 0.65 and the
simulator 0.16; in the server, the upstream HTTP client (httpx2, pure-Python HTTP/1.1 parsing) is
about 40 % of the time and the MCP/Starlette/uvicorn request path most of the rest — keygate's own
routing, pool and store are under 15 %.

## keygate over stdio

{
        _table(
            ["path", "p50", "p99"],
            [
                [name, f"{v['p50_us'] / 1000:.2f} ms", f"{v['p99_us'] / 1000:.2f} ms"]
                for name, v in results["stdio"].items()
                if name != "overhead"
            ],
        )
    }

Own overhead over stdio (complete − direct − echo round trip), p50: {stdio:.2f} ms.
"""
    markdown.write_text(text, encoding="utf-8")
    _chart(results, chart)


def _scaleout_targets(results: dict) -> list[list[str]]:
    rows = []
    redis_p99 = [r["p99_us"] for r in results["selection"] if r["strategy"].startswith("Redis, one script")]
    if redis_p99:
        worst = max(redis_p99)
        rows.append(
            ["shared (Redis) pool lease p99 at 10 to 100,000 keys", "< 1 ms", f"{worst:.0f} µs", _verdict(worst < 1000)]
        )
    storm = results.get("scaleout") or {}
    if storm:
        bad = sum(v["429s_received"] + v["on_keys_known_unusable"] for v in storm.values())
        doubled = max(v["most_in_one_window"] for v in storm.values()) > 10
        share = min(v["share_of_capacity"] for v in storm.values())
        rows.append(
            [
                "three instances on one Redis, storm: 429s + requests on keys known unusable",
                "0",
                str(bad),
                _verdict(bad == 0),
            ]
        )
        rows.append(["… a window slot booked twice", "never", "yes" if doubled else "never", _verdict(not doubled)])
        rows.append(["… answered ÷ true capacity", "≥ 0.95", f"{share:.3f}", _verdict(share >= 0.95)])
    return rows


def _scaleout_section(results: dict) -> str:
    storm = results.get("scaleout") or {}
    if not storm:
        return ""
    seconds = results.get("scaleout_seconds", 120)
    rows = [
        [
            name,
            v["calls"],
            v["answered"],
            v["429s_received"],
            v["on_keys_known_unusable"],
            v["most_in_one_window"],
            f"{v['answered_in_capacity']} / {v['capacity']}",
            v["tail"],
            v["leases_left_in_flight"],
        ]
        for name, v in storm.items()
    ]
    headers = ["keygate, 3 instances", "calls", "answered", "429s", "on keys known unusable", "most in one window"]
    headers += ["answered / capacity", "tail", "leases left"]
    return f"""
## Three instances, one Redis: exhaustion storm

`python -m bench.scaleout`: 20 keys × 10 rpm (simulator windows: from a key's first request, again
from the first request after it ends), calls at 2.4× capacity spread over three `Keygate`
processes that share only a redis-server, for {seconds:g} s. Capacity: 10 per window each key opened
while calls were arriving; "tail": answered in windows opened afterwards by calls still
waiting (`max_wait_s` 20 s). "most in one window" above 10 would be a slot booked twice.

{_table(headers, rows)}
"""


def _side_by_side_section(results: dict) -> str:
    rows_in = results.get("side_by_side") or {}
    if not rows_in:
        return ""
    systems = list(next(iter(rows_in.values())))
    rows = []
    for setting, figures in rows_in.items():
        floor = figures.get("floor, aiohttp", {}).get("calls_per_s") or 0
        keygate = figures.get("keygate, aiohttp", {}).get("calls_per_s") or 0
        ratio = f"{keygate / floor:.2f}×" if floor else "—"
        cells = (
            f"{figures[s]['calls_per_s']:.0f} ({figures[s].get('server_cpu_ms_per_call') or 0:.2f} ms)" for s in systems
        )
        rows.append([setting, *cells, ratio])
    return f"""
## Throughput side by side: floors and keygate (calls/s, JSON replies)

`python -m bench.throughput --side-by-side --json-response --repeats 3`: a bare echo tool, the
forwarding floor (a bare MCP tool forwarding each call to the simulator with one httpx2 or aiohttp
call) and keygate (INFO logging, SQLite) with each upstream client; medians of alternating rounds.
In brackets: the server's CPU time per answered call (from /proc), steadier than calls/s here.

{_table(["clients", *systems, "keygate ÷ aiohttp floor"], rows)}
"""


def _short(name: str) -> str:
    """Chart labels: the system and its variant on two lines."""
    name = name.replace(", usage-based-routing-v2", " + usage routing")
    return name.replace(" (", "\n(")


def _chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keygate_colour, litellm_colour = "#2b7bba", "#d95f02"
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, key, title in (
        (axes[0][0], "overhead_c1", "Overhead per call, concurrency 1"),
        (axes[0][1], "overhead_c64", "Overhead per call, concurrency 64"),
    ):
        data = results[key]
        floor = data[FLOOR]["p50_ms"]
        systems = [s for s in data if s != FLOOR]
        values = [(data[s]["p50_ms"] - floor) for s in systems]
        colours = [litellm_colour if s.startswith("LiteLLM") else keygate_colour for s in systems]
        bars = ax.bar([_short(s) for s in systems], values, color=colours)
        ax.bar_label(bars, labels=[f"{v:.2f} ms" for v in values])
        ax.set_ylabel("ms over a bare httpx2 call (p50)")
        ax.set_title(title)
    storm = results["storm"]
    names = list(storm)
    xs = range(len(names))
    answered = [storm[n]["answered"] for n in names]
    refused = [storm[n]["429s_received"] for n in names]
    ax = axes[1][0]
    ax.bar([x - 0.2 for x in xs], answered, 0.4, label="answered", color=keygate_colour)
    bars = ax.bar([x + 0.2 for x in xs], refused, 0.4, label="429s received (wasted calls)", color=litellm_colour)
    ax.bar_label(bars)
    ax.set_xticks(list(xs), [_short(n) for n in names], fontsize=8)
    ax.set_title("Exhaustion storm: 20 keys × 10 rpm, 2.4× demand")
    ax.legend()
    quota = results["quota"]
    ax = axes[1][1]
    bars = ax.bar(
        [_short(n) for n in quota],
        [quota[n]["quota_refusals"] for n in quota],
        color=[litellm_colour if n.startswith("LiteLLM") else keygate_colour for n in quota],
    )
    ax.bar_label(bars)
    ax.set_title("Quota: calls spent on 5 keys out of quota")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # re-render from bench/results.json without re-running
    import json

    here = Path(__file__).resolve().parent
    write_report(json.loads((here / "results.json").read_text()), here / "RESULTS.md", here / "results.png")
