"""The /status page's pictures, drawn on the server as inline SVG (no front-end framework):

- a timeline per key over the last hour, its states as coloured bands (the reason on hover);
- attempts, rate limits and fallbacks per minute, one small chart per model;
- tokens per day per model (the usage the store already keeps).

Every mark has a `<title>`, so hovering says what it is; colours are the status table's.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict

from .history import Changes, Minutes
from .schemas import KeyStatusRow
from .store.base import UsageRow

WIDTH, LABEL = 720, 150
COLOURS = {"ready": "#1a7f37", "cooling": "#d4a72c", "exhausted": "#8250df", "disabled": "#cf222e"}
SERIES = {"attempts": "#0969da", "rate_limited": "#d4a72c", "fallbacks": "#8250df"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rect(x: float, y: float, width: float, height: float, fill: str, data: str, title: str) -> str:
    """A bar or band, with `data` (e.g. `data-state="cooling"`) and its hover text."""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}" {data}>'
        f"<title>{_e(title)}</title></rect>"
    )


def _clock(at: float) -> str:
    return time.strftime("%H:%M", time.gmtime(at))


def key_timelines(rows: list[KeyStatusRow], changes: Changes, now: float, span_s: float = 3600) -> str:
    """One band row per key: each state from when it began until the next change (or now)."""
    keys = list(dict.fromkeys(r.key_id for r in rows))
    if not keys:
        return '<p class="muted">no keys</p>'
    height = 18 * len(keys) + 20
    start = now - span_s
    scale = (WIDTH - LABEL) / span_s
    marks = []
    for i, key_id in enumerate(keys):
        y = 18 * i
        marks.append(f'<text x="0" y="{y + 12}" class="lbl">{_e(key_id)}</text>')
        history = changes.get(key_id) or [(start, _current(rows, key_id), "")]
        for j, (since, state, reason) in enumerate(history):
            until = history[j + 1][0] if j + 1 < len(history) else now
            if until <= start:
                continue
            left = LABEL + (max(since, start) - start) * scale
            width = max(1.0, (until - max(since, start)) * scale)
            title = f"{key_id}: {state} {_clock(max(since, start))}–{_clock(until)} UTC"
            title += f" — {reason}" if reason else ""
            fill = COLOURS.get(state, "#6e7781")
            marks.append(_rect(left, y + 2, width, 13, fill, f'data-state="{_e(state)}"', title))
    marks.append(_time_axis(height - 4, start, now))
    return _svg("key-timelines", height, "".join(marks), "key states over the last hour")


def _current(rows: list[KeyStatusRow], key_id: str) -> str:
    states = [r.state for r in rows if r.key_id == key_id]
    return max(states, key=lambda s: list(COLOURS).index(s) if s in COLOURS else 0) if states else "ready"


def per_minute(minutes: Minutes, models: list[str], now: float) -> str:
    """Per model, 60 bars of attempts per minute, with the rate-limited share and fallbacks drawn over them."""
    if not models:
        return '<p class="muted">no models</p>'
    this_minute = int(now // 60)
    row_h = 46
    peak = max([c.get("attempts", 0) for m in minutes.values() for c in m.values()] + [1])
    bar = (WIDTH - LABEL) / 60
    marks = []
    for i, model in enumerate(models):
        top = row_h * i
        marks.append(f'<text x="0" y="{top + 24}" class="lbl">{_e(model)}</text>')
        for k in range(60):
            minute = this_minute - 59 + k
            counts = minutes.get(minute, {}).get(model, {})
            x = LABEL + k * bar
            marks.extend(_minute_marks(counts, x, bar, top, row_h - 8, peak, minute, model))
    height = row_h * len(models) + 16
    marks.append(_time_axis(height - 4, now - 3600, now))
    return _svg("per-minute", height, "".join(marks), "attempts, rate limits and fallbacks per minute")


def _minute_marks(
    counts: dict[str, int], x: float, bar: float, top: int, h: int, peak: int, minute: int, model: str
) -> list[str]:
    attempts, limited, fallbacks = (counts.get(c, 0) for c in ("attempts", "rate_limited", "fallbacks"))
    if not (attempts or fallbacks):
        return []
    title = f"{model} {_clock(minute * 60)} UTC: {attempts} attempts, {limited} rate-limited, {fallbacks} fallbacks"
    tall = h * attempts / peak
    marks = [_rect(x, top + h - tall, bar - 1, tall, SERIES["attempts"], 'data-series="attempts"', title)]
    if limited:
        part = h * limited / peak
        series = 'data-series="rate_limited"'
        marks.append(_rect(x, top + h - part, bar - 1, part, SERIES["rate_limited"], series, title))
    if fallbacks:
        marks.append(
            f'<circle cx="{x + bar / 2:.1f}" cy="{top + 4}" r="3" fill="{SERIES["fallbacks"]}" data-series="fallbacks">'
            f"<title>{_e(title)}</title></circle>"
        )
    return marks


def tokens_per_day(rows: list[UsageRow], days: int, now: float) -> str:
    """Stacked bars of input + output tokens per UTC day, one colour per model; the hover text
    gives the day's cost where it is priced (unpriced calls are said, never counted as $0)."""
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cost: dict[tuple[str, str], tuple[float, int]] = defaultdict(lambda: (0.0, 0))
    for row in rows:
        per_day[row.day][row.model] += row.input_tokens + row.output_tokens
        usd, unpriced = cost[(row.day, row.model)]
        cost[(row.day, row.model)] = (usd + row.cost_usd, unpriced + row.unpriced)
    day_names = [time.strftime("%Y-%m-%d", time.gmtime(now - (days - 1 - i) * 86_400)) for i in range(days)]
    models = sorted({row.model for row in rows})
    palette = ["#0969da", "#1a7f37", "#8250df", "#d4a72c", "#cf222e", "#57606a", "#bf3989", "#0550ae"]
    peak = max([sum(per_day[d].values()) for d in day_names] + [1])
    bar, h = (WIDTH - LABEL) / days, 90
    marks = []
    for i, day in enumerate(day_names):
        y = float(h)
        for j, model in enumerate(models):
            n = per_day[day].get(model, 0)
            if not n:
                continue
            tall = h * n / peak
            y -= tall
            fill, data = palette[j % len(palette)], f'data-model="{_e(model)}"'
            usd, unpriced = cost[(day, model)]
            title = f"{day} {model}: {n:,} tokens, ${usd:,.4f}" + (f" ({unpriced} unpriced)" if unpriced else "")
            marks.append(_rect(LABEL + i * bar, y, bar - 2, tall, fill, data, title))
        if i % max(1, days // 7) == 0:
            marks.append(f'<text x="{LABEL + i * bar:.1f}" y="{h + 12}" class="tick">{day[5:]}</text>')
    legend = " ".join(f'<tspan fill="{palette[j % len(palette)]}">■ {_e(m)}</tspan>' for j, m in enumerate(models))
    marks.append(f'<text x="0" y="12" class="lbl">{legend or "no tokens yet"}</text>')
    return _svg("tokens-per-day", h + 16, "".join(marks), f"tokens per day, last {days} days")


def _time_axis(y: float, start: float, end: float) -> str:
    ticks = []
    for k in range(5):
        at = start + (end - start) * k / 4
        x = LABEL + (WIDTH - LABEL) * k / 4
        anchor = "end" if k == 4 else "start"
        ticks.append(f'<text x="{x:.1f}" y="{y}" class="tick" text-anchor="{anchor}">{_clock(at)}</text>')
    return "".join(ticks)


def _svg(ident: str, height: float, body: str, label: str) -> str:
    return (
        f'<svg id="{ident}" role="img" aria-label="{_e(label)}" width="{WIDTH}" height="{height:.0f}"'
        f' viewBox="0 0 {WIDTH} {height:.0f}" xmlns="http://www.w3.org/2000/svg">'
        f"<style>.lbl{{font:11px system-ui,sans-serif;fill:currentColor}}"
        f".tick{{font:10px system-ui,sans-serif;fill:#6e7781}}</style>{body}</svg>"
    )
