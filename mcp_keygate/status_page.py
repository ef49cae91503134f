"""The /status page: keys with live states and countdowns, recent attempts, fallbacks per model.

Rendered on the server (one place renders it: the page and the fragment its script re-fetches
every few seconds); the script only ticks countdowns and swaps in fresh fragments. Behind the same
bearer tokens as /mcp: a browser without one gets a small form that keeps the token in the tab's
sessionStorage and sends it as an Authorization header, so no token ever travels in a URL.
"""

from __future__ import annotations

import html
import time

from .activity import Activity
from .schemas import KeyStatusRow
from .status import duration, iso_time
from .usage import usd_cell

STATES = ("ready", "cooling", "exhausted", "disabled")

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --cool: #b58100; --exh: #8250df; --dis: #cf222e; --mut: #6e7781; }
body { font: 14px/1.45 system-ui, -apple-system, Segoe UI, sans-serif; margin: 0 auto; max-width: 1200px; }
body { padding: 16px; }
header { display: flex; align-items: baseline; gap: 12px; }
h1 { font-size: 20px; margin: 0; } h2 { font-size: 15px; margin: 22px 0 6px; }
.muted { color: var(--mut); }
.chips { display: flex; gap: 8px; flex-wrap: wrap; margin-top: 10px; }
.chip { border-radius: 999px; padding: 2px 10px; border: 1px solid currentColor; font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #8884; white-space: nowrap; }
td.reason { white-space: normal; max-width: 380px; }
.state, .outcome { font-weight: 600; }
.ready, .ok { color: var(--ok); } .cooling, .rate_limited { color: var(--cool); }
.exhausted, .quota_exhausted { color: var(--exh); } .disabled, .auth_failed { color: var(--dis); }
form { margin-top: 16px; } input { font: inherit; padding: 4px 8px; width: 320px; }
.refused { color: var(--dis); font-weight: 600; }
"""

_SCRIPT = """
(() => {
  const board = document.getElementById('board');
  const stamp = document.getElementById('stamp');
  let received = Date.now();
  const token = () => sessionStorage.getItem('keygate-token');
  function fmt(s) {
    if (s <= 0) return 'now';
    if (s < 90) return Math.ceil(s) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }
  function tick() {
    const gone = (Date.now() - received) / 1000;
    for (const el of document.querySelectorAll('[data-ready-in]')) {
      el.textContent = fmt(parseFloat(el.dataset.readyIn) - gone);
    }
  }
  async function refresh() {
    const headers = token() ? {Authorization: 'Bearer ' + token()} : {};
    try {
      const r = await fetch('/status?fragment=1', {headers, cache: 'no-store'});
      if (r.status === 401) {
        sessionStorage.removeItem('keygate-token');
        showForm('That token was refused: check it and try again.');
        return;
      }
      if (!r.ok) { stamp.textContent = 'server answered ' + r.status; return; }
      board.innerHTML = await r.text();
      received = Date.now();
      stamp.textContent = 'updated ' + new Date().toLocaleTimeString();
      document.body.dataset.loaded = '1';
    } catch (e) { stamp.textContent = 'server unreachable, retrying'; }
  }
  function bind(form) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sessionStorage.setItem('keygate-token', form.elements.token.value.trim());
      form.remove();
      stamp.textContent = 'checking the token…';
      refresh();
    });
  }
  function showForm(message) {
    board.replaceChildren(document.getElementById('login-template').content.cloneNode(true));
    const form = document.getElementById('login');
    const note = form.querySelector('.refused');
    note.textContent = message;
    note.hidden = false;
    stamp.textContent = 'token refused';
    bind(form);
    form.elements.token.focus();
  }
  const form = document.getElementById('login');
  if (form) bind(form);
  if (!form || token()) { if (form && token()) form.remove(); refresh(); }
  setInterval(tick, 1000);
  setInterval(() => { if (!document.getElementById('login')) refresh(); }, 3000);
})();
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _short(reason: str | None, limit: int = 140) -> str:
    reason = reason or ""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _key_rows(rows: list[KeyStatusRow]) -> str:
    out = []
    for r in rows:
        ready = "-"
        if r.ready_in_s is not None:
            ready = f'<span data-ready-in="{r.ready_in_s:.1f}">{_e(duration(r.ready_in_s))}</span>'
        out.append(
            f'<tr data-key-id="{_e(r.key_id)}" data-state="{_e(r.state)}">'
            f"<td>{_e(r.provider)}</td><td><code>{_e(r.key_id)}</code></td><td>{_e(r.mask)}</td>"
            f'<td class="state {_e(r.state)}">{_e(r.state)}</td><td>{_e(r.model or "all models")}</td>'
            f'<td>{ready}</td><td class="reason" title="{_e(r.reason or "")}">{_e(_short(r.reason))}</td>'
            f"<td>{r.requests}</td><td>{r.failures}</td>"
            f'<td title="{_e(r.last_used or "")}">{_e(r.last_used[11:19] if r.last_used else "never")}</td></tr>'
        )
    return "\n".join(out)


def render_fragment(
    rows: list[KeyStatusRow], activity: Activity, models: set[str] | None = None, charts: str = ""
) -> str:
    """The live part of the page (re-fetched by the script); attempts and fallbacks limited to `models`
    (what the caller's policy reaches) when given; `charts` (status_charts) after the key table."""
    counts = {state: sum(1 for r in rows if r.state == state) for state in STATES}
    chips = "".join(f'<span class="chip {s}" data-count="{s}">{counts[s]} {s}</span>' for s in STATES)
    attempts = activity.recent(models)[:25]
    attempt_rows = (
        "\n".join(
            f"<tr><td>{_e(time.strftime('%H:%M:%S', time.localtime(a.at)))}</td><td>{_e(a.model)}</td>"
            f'<td><code>{_e(a.key_id)}</code></td><td class="outcome {_e(a.outcome)}">{_e(a.outcome)}</td>'
            f"<td>{a.seconds * 1000:.0f} ms</td></tr>"
            for a in attempts
        )
        or '<tr><td colspan="5" class="muted">no attempts since the server started</td></tr>'
    )
    fallback_rows = (
        "\n".join(
            f"<tr><td>{_e(src)}</td><td>{_e(dst)}</td><td>{n}</td></tr>"
            for (src, dst), n in activity.fallbacks_between(models)
        )
        or '<tr><td colspan="3" class="muted">no fallbacks since the server started</td></tr>'
    )
    spend_rows = (
        "\n".join(
            f"<tr><td>{_e(caller)}</td><td>{_e(model)}</td><td><code>{_e(key_id)}</code></td>"
            f"<td>{int(calls)}</td><td>{_e(usd_cell(None if calls == unpriced else usd, int(unpriced)))}</td></tr>"
            for (caller, model, key_id), (usd, calls, unpriced) in activity.spending(_viewer())
        )
        or '<tr><td colspan="5" class="muted">no answered calls since the server started</td></tr>'
    )
    uptime = duration(time.time() - activity.started)
    return f"""
<div class="chips">{chips}<span class="muted">· up {uptime} · since {_e(iso_time(activity.started))}</span></div>
<h2>Keys</h2>
<table id="keys"><thead><tr><th>provider</th><th>key id</th><th>mask</th><th>state</th><th>scope</th>
<th>ready in</th><th>reason</th><th>requests</th><th>failures</th><th>last used (UTC)</th></tr></thead>
<tbody>{_key_rows(rows)}</tbody></table>
{charts}
<h2>Recent attempts</h2>
<table id="attempts"><thead><tr><th>time</th><th>model</th><th>key id</th><th>outcome</th><th>took</th></tr></thead>
<tbody>{attempt_rows}</tbody></table>
<h2>Spend since the server started</h2>
<table id="spend"><thead><tr><th>caller</th><th>model</th><th>key id</th><th>calls</th><th>cost (USD)</th></tr></thead>
<tbody>{spend_rows}</tbody></table>
<h2>Fallbacks per model</h2>
<table id="fallbacks"><thead><tr><th>from</th><th>to</th><th>times</th></tr></thead>
<tbody>{fallback_rows}</tbody></table>
"""


_LOGIN_FORM = (
    '<form id="login"><p>This server needs a bearer token (the same as for /mcp).</p>'
    '<p class="refused" hidden></p>'
    '<input name="token" type="password" autocomplete="off" placeholder="token" required> '
    '<button type="submit">Show status</button><p class="muted">Kept in this tab only '
    "(sessionStorage) and sent as an Authorization header.</p></form>"
)


def _viewer() -> str | None:
    """The token name the page is rendered for (the auth guard set it for this request); None without tokens."""
    from mcp.server.auth.middleware.auth_context import get_access_token

    token = get_access_token()
    return token.client_id if token is not None else None


def render_page(fragment: str | None) -> str:
    """The whole page; without a fragment (no valid token yet) it is only the token form."""
    body = fragment
    if body is None:
        body = _LOGIN_FORM
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcp-keygate status</title><style>{_STYLE}</style></head>
<body><header><h1>mcp-keygate</h1><span class="muted" id="stamp">live · refreshes every 3 s</span></header>
<main id="board">{body}</main>
<template id="login-template">{_LOGIN_FORM}</template>
<script>{_SCRIPT}</script></body></html>"""


SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
}
