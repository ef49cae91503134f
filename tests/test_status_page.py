"""The /status page in a real headless Chromium: the states it shows are the states `key_status`
reports, its script refreshes it, and it is behind the same tokens as /mcp. Saves a screenshot to
test-artifacts/status-page.png (or $KEYGATE_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx2
import pytest

from .conftest import REPO, two_provider_config, write_toml
from .servers import ALICE, ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("KEYGATE_REQUIRE_CHROMIUM") != "1",
    reason="no chromium here (CI installs it and sets KEYGATE_REQUIRE_CHROMIUM=1)",
)


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "KEYGATE_REQUIRE_CHROMIUM=1 but no chromium is installed"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class _Rows(HTMLParser):
    """key id → state from the keys table, and the other facts the page shows."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, str] = {}
        self.loaded = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-key-id"):
            self.states[found["data-key-id"]] = found.get("data-state") or ""
        if tag == "body" and found.get("data-loaded") == "1":
            self.loaded = True


@pytest.fixture
def busy_server(tmp_path, sim):
    """A loopback server (no token) whose keys are in every state, after one call that fell back."""
    data = two_provider_config(
        sim,
        ["sim-ratelimit-page0001", "sim-quota-page000002"],
        ["sim-invalid-page00003", "sim-ok-page0000004"],
        backend="sqlite",
        path=str(tmp_path / "state.db"),
    )
    process = ServerProcess(write_toml(tmp_path / "keygate.toml", data), free_port(), {}).wait_ready()
    yield process
    process.stop()


@needs_chromium
async def test_the_page_shows_what_key_status_reports(busy_server):
    async with streamable(busy_server.url, None) as session:
        result = await session.call_tool("complete", {"prompt": "hello"})
        assert not result.is_error and result.structured_content["model"] == "big"
        reported = (await session.call_tool("key_status", {})).structured_content["keys"]
    expected = {row["key_id"]: row["state"] for row in reported}
    assert set(expected.values()) == {"ready", "cooling", "exhausted", "disabled"}

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", f"{busy_server.url}/status")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Rows()
    page.feed(dom.stdout)
    assert page.loaded, "the page's script did not refresh it"
    assert page.states == expected
    assert re.search(r"<td>mini</td>\s*<td>big</td>\s*<td>1</td>", dom.stdout), "fallback mini → big not shown"
    for outcome in ("rate_limited", "quota_exhausted", "auth_failed", "ok"):
        assert f'class="outcome {outcome}"' in dom.stdout
    assert re.search(r'data-ready-in="[0-9.]+">\d+ s<', dom.stdout), "no live countdown"
    # The pictures: a timeline band per key in its state (with the reason on hover), the minute's
    # attempts, rate limits and fallbacks, and the tokens of today.
    timelines = dom.stdout.split('<svg id="key-timelines"')[1].split("</svg>")[0]
    assert {m for m in re.findall(r'data-state="(\w+)"', timelines)} == {"ready", "cooling", "exhausted", "disabled"}
    assert re.search(r"<title>[^<]*cooling[^<]*429[^<]*</title>", timelines), "no reason on a cooling band"
    minutes = dom.stdout.split('<svg id="per-minute"')[1].split("</svg>")[0]
    for series in ("attempts", "rate_limited", "fallbacks"):
        assert f'data-series="{series}"' in minutes, series
    assert "mini" in minutes and "1 fallbacks" in minutes
    tokens = dom.stdout.split('<svg id="tokens-per-day"')[1].split("</svg>")[0]
    assert 'data-model="big"' in tokens
    for secret in ("sim-ratelimit-page0001", "sim-quota-page000002", "sim-invalid-page00003", "sim-ok-page0000004"):
        assert secret[:12] not in dom.stdout

    artifacts = Path(os.environ.get("KEYGATE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "status-page.png"
    shot.unlink(missing_ok=True)
    taken = chromium(
        "--virtual-time-budget=5000", "--window-size=1280,1000", f"--screenshot={shot}", f"{busy_server.url}/status"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


async def test_the_page_is_behind_the_same_tokens(tmp_path, sim):
    data = two_provider_config(
        sim, ["sim-ok-pagetok0001"], ["sim-ok-pagetok0002"], backend="sqlite", path=str(tmp_path / "s.db")
    )
    data["server"] = {"auth_tokens": {"alice": "${ALICE_TOKEN}"}}
    process = ServerProcess(write_toml(tmp_path / "k.toml", data), free_port(), {"ALICE_TOKEN": ALICE}).wait_ready()
    try:
        anonymous = httpx2.get(f"{process.url}/status")
        assert anonymous.status_code == 401 and 'id="login"' in anonymous.text
        assert "data-key-id" not in anonymous.text and anonymous.headers["www-authenticate"].startswith("Bearer")
        fragment = httpx2.get(f"{process.url}/status?fragment=1")
        assert fragment.status_code == 401 and json.loads(fragment.text)["error"] == "unauthorized"
        wrong = httpx2.get(f"{process.url}/status", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 401
        allowed = httpx2.get(f"{process.url}/status", headers={"Authorization": f"Bearer {ALICE}"})
        assert allowed.status_code == 200 and allowed.text.count("data-key-id=") == 2
        assert allowed.headers["x-frame-options"] == "DENY" and allowed.headers["cache-control"] == "no-store"
    finally:
        process.stop()
