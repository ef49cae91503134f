"""What each call cost in US dollars: priced from the maintained table or the config, unknown prices
shown as unknown (never $0), cost per caller, model and key in `usage`, `status --usage`, /status and
/metrics, and money budgets per token that hold across concurrent calls and instances — through real
MCP clients over stdio and streamable HTTP, against the simulator over real HTTP."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from genai_prices import Usage, calc_price
from mcp import Client

from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.keys.budget import MoneyBudget, period_end, try_spend_money
from mcp_keygate.policies import PolicyRefused
from mcp_keygate.pricing import Prices
from mcp_keygate.usage import usd_cell

from .conftest import server_params, sim_log
from .redis_support import unique_prefix
from .servers import ALICE, BOB, ServerProcess, free_port, streamable
from .test_cli import run_cli

pytestmark = pytest.mark.anyio

PAID, PRIVATE = "sim-ok-money000paid1", "sim-ok-money00local2"
# One input token costs $0.001 and output is free: a call's estimate equals what it is charged, so a
# budget's arithmetic is exact whatever order concurrent calls finish in.
METERED_PRICE = "price = { input_per_mtok = 1000.0, output_per_mtok = 0.0 }"


def money_config(sim, state: str, extra: str = "") -> str:
    return f"""
{state}

[providers.openai]
type = "openai"
base_url = "{sim.openai_base}"
keys = ["{PAID}"]

[providers.local]
type = "ollama"
base_url = "{sim.openai_base}"
keys = ["{PRIVATE}"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[models.metered]
provider = "openai"
model = "gpt-4.1-nano"
{METERED_PRICE}

[models.llama]
provider = "local"
model = "llama-private-70b"

[routes]
default = ["gpt"]
{extra}
"""


def table_cost(model: str, tokens_in: int, tokens_out: int) -> float:
    found = calc_price(Usage(input_tokens=tokens_in, output_tokens=tokens_out), model, provider_id="openai")
    return float(found.total_price)


def test_prices_come_from_the_table_the_config_or_are_unknown(sim):
    config = parse_config(
        {
            "providers": {
                "openai": {"type": "openai", "keys": ["k"]},
                "claude": {"type": "anthropic", "keys": ["k"]},
                "gem": {"type": "gemini", "keys": ["k"]},
                "local": {"type": "ollama"},
            },
            "models": {
                "gpt": {"provider": "openai", "model": "gpt-4.1-mini"},
                "haiku": {"provider": "claude", "model": "claude-haiku-4-5"},
                "flash": {"provider": "gem", "model": "gemini-2.5-flash"},
                "mine": {
                    "provider": "openai",
                    "model": "ft:gpt-private",
                    "price": {"input_per_mtok": 2, "output_per_mtok": 8},
                },
                "llama": {"provider": "local", "model": "llama3"},
                "typo": {"provider": "openai", "model": "gpt-does-not-exist"},
            },
        }
    )
    prices = Prices(config)
    assert prices.cost("gpt", 1000, 100) == pytest.approx(table_cost("gpt-4.1-mini", 1000, 100))
    assert prices.cost("haiku", 1_000_000, 0) == pytest.approx(1.0)  # Anthropic's list price for Haiku 4.5
    assert prices.cost("flash", 1000, 0) is not None
    assert prices.cost("mine", 500_000, 250_000) == pytest.approx(1.0 + 2.0)  # the config's price wins
    assert prices.cost("llama", 1000, 100) is None  # a local model has no public price: unknown, not $0
    assert prices.cost("typo", 1000, 100) is None
    assert prices.unpriced(["gpt", "llama", "typo"]) == ["llama", "typo"]
    # What a budget reserves for a route: the dearest priced model of it.
    assert prices.estimate(["gpt", "mine", "llama"], 1000, 1000) == pytest.approx(
        max(prices.cost("gpt", 1000, 1000) or 0, prices.cost("mine", 1000, 1000) or 0)
    )


def test_a_price_in_the_config_is_checked(make_config):
    from mcp_keygate.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_config(
            {
                "providers": {"p": {"type": "openai", "keys": ["k"]}},
                "models": {"m": {"provider": "p", "price": {"input_per_mtok": -1, "output": 2}}},
                "policies": {"team": {"tokens": ["alice"], "usd_per_day": 0}},
            }
        )
    text = str(caught.value)
    assert "models.m.price.input_per_mtok: Input should be greater than or equal to 0" in text
    assert "models.m.price.output: unknown field" in text
    assert "policies.team.usd_per_day: Input should be greater than 0" in text


def test_money_windows_are_utc_calendar_days_and_months():
    budget = MoneyBudget(usd_per_day=1.0, usd_per_month=2.0)
    spend: dict = {}
    noon = 1_780_000_000.0  # 2026-05-28 20:26 UTC
    assert try_spend_money(spend, budget, noon, 0.6, True) == (0.0, "")
    wait, why = try_spend_money(spend, budget, noon, 0.6, True)
    assert wait == pytest.approx(period_end("day", noon) - noon) and "usd_per_day = $1 is spent" in why
    assert "resets at 2026-05-29 00:00 UTC" in why
    tomorrow = period_end("day", noon) + 1
    assert try_spend_money(spend, budget, tomorrow, 0.6, True) == (0.0, "")  # a new day, the same month
    assert try_spend_money(spend, budget, tomorrow, 0.6, True)[0] > 0
    try_spend_money(spend, budget, tomorrow, -5.0, False)  # a refund never goes below zero
    assert spend["day"][1] == 0.0
    wait, why = try_spend_money(spend, budget, tomorrow, 3.0, True)
    assert wait == float("inf") and "more than all of it" in why


async def test_complete_returns_its_cost_and_usage_adds_it_up_over_stdio(sim, tmp_path):
    config = tmp_path / "keygate.toml"
    config.write_text(money_config(sim, f'[state]\npath = "{tmp_path / "state.db"}"'), encoding="utf-8")
    async with Client(server_params(config)) as client:
        priced = await client.call_tool("complete", {"prompt": "What does a heron eat?", "model": "gpt"})
        unknown = await client.call_tool("complete", {"prompt": "And a stork?", "model": "llama"})
        usage = (await client.call_tool("usage", {})).structured_content
    paid = priced.structured_content
    used = paid["usage"]
    assert paid["cost_usd"] == pytest.approx(table_cost("gpt-4.1-mini", used["input_tokens"], used["output_tokens"]))
    assert paid["cost_usd"] > 0
    assert unknown.structured_content["cost_usd"] is None  # unknown, never zero
    lines = {line["model"]: line for line in usage["lines"]}
    assert lines["gpt"]["cost_usd"] == pytest.approx(paid["cost_usd"]) and lines["gpt"]["unpriced_requests"] == 0
    assert lines["llama"]["cost_usd"] is None and lines["llama"]["unpriced_requests"] == 1
    assert usage["total_cost_usd"] == pytest.approx(paid["cost_usd"]) and usage["unpriced_requests"] == 1

    table = run_cli("status", "--config", str(config), "--usage")
    assert table.returncode == 0, table.stderr
    gpt_row = next(line for line in table.stdout.splitlines() if " gpt " in f" {line} ")
    llama_row = next(line for line in table.stdout.splitlines() if "llama" in line)
    assert usd_cell(paid["cost_usd"], 0) in gpt_row and "unknown" in llama_row and "$0.0" not in llama_row
    total = table.stdout.splitlines()[-1]
    assert total.startswith("total") and "+ 1 unpriced" in total
    as_json = json.loads(run_cli("status", "--config", str(config), "--usage", "--json").stdout)
    assert as_json["total_cost_usd"] == pytest.approx(paid["cost_usd"])


async def test_cost_per_caller_on_metrics_and_status_over_http(sim, tmp_path):
    state = (
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}", bob = "${BOB_TOKEN}", ops = "${OPS_TOKEN}" }\n'
        'operator_tokens = ["ops"]'
    )
    policies = '[policies.team]\ntokens = ["alice", "bob"]\nusd_per_day = 5.0\n'
    config = tmp_path / "keygate.toml"
    config.write_text(money_config(sim, state, policies), encoding="utf-8")
    ops = "ops-token-0123456789abcdef0"
    server = ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB, "OPS_TOKEN": ops})
    try:
        server.wait_ready()
        costs = {}
        for name, token in (("alice", ALICE), ("bob", BOB)):
            async with streamable(server.url, token) as session:
                result = await session.call_tool("complete", {"prompt": f"{name} asks about herons", "model": "gpt"})
                assert not result.is_error, result.content
                costs[name] = result.structured_content["cost_usd"]
                mine = (await session.call_tool("usage", {})).structured_content
                assert [line["owner"] for line in mine["lines"]] == [name]  # a token sees its own spend only
                assert mine["total_cost_usd"] == pytest.approx(costs[name])
        metrics = httpx2.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ops}"}).text
        status = httpx2.get(f"{server.url}/status?fragment=1", headers={"Authorization": f"Bearer {ops}"}).text
        alice_status = httpx2.get(f"{server.url}/status?fragment=1", headers={"Authorization": f"Bearer {ALICE}"}).text
    finally:
        server.stop()
    for name, cost in costs.items():
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("keygate_cost_usd_total{") and f'caller="{name}"' in line
        )
        assert 'model="gpt"' in line and float(line.rsplit(" ", 1)[1]) == pytest.approx(cost)
    assert '<table id="spend">' in status and "alice" in status and "bob" in status
    assert usd_cell(costs["alice"], 0) in status
    # A token sees its own spend on the page; another token's name and spend are not shown to it.
    assert '<table id="spend">' in alice_status and ">bob<" not in alice_status and ">alice<" in alice_status
    assert ALICE not in status and BOB not in metrics and ops not in status


async def test_a_money_budget_holds_across_concurrent_calls_on_one_state_file(sim, tmp_path):
    """Attack: twelve calls at once from one token against a $0.35 budget, on two instances sharing a
    SQLite file: exactly as many as the budget pays for are answered, the rest never reach a provider."""
    prompt = "x" * 396  # 99 + 4 = 103 tokens → $0.103 each at $0.001 a token
    data = json.loads(json.dumps(_as_dict(sim, tmp_path)))
    data["policies"] = {"metered": {"tokens": ["alice"], "usd_per_day": 0.35}}
    config = parse_config(data)
    async with Keygate(config) as one, Keygate(config) as two:
        answered, refused = [], []

        async def call(gate: Keygate) -> None:
            try:
                result = await gate.calls.complete(CompleteRequest(prompt=prompt, model="metered"), caller="alice")
            except PolicyRefused as exc:
                refused.append(str(exc))
            else:
                answered.append(result.cost_usd)

        before = len(sim_log(sim))
        async with anyio.create_task_group() as group:
            for i in range(12):
                group.start_soon(call, (one, two)[i % 2])
        usage = await one.views.usage("alice")
    assert answered == [pytest.approx(0.103)] * 3
    assert len(refused) == 9 and len(sim_log(sim)) - before == 3
    assert all("token 'alice' is over its budget under policy 'metered' (usd_per_day = $0.35)" in m for m in refused)
    assert all("usd_per_day = $0.35 is spent" in m and "resets at" in m and "00:00 UTC" in m for m in refused)
    assert usage.total_cost_usd == pytest.approx(0.309)


def _as_dict(sim, tmp_path) -> dict:
    return {
        "state": {"path": str(tmp_path / "state.db")},
        "server": {"auth_tokens": {"alice": ALICE}},
        "providers": {"openai": {"type": "openai", "base_url": sim.openai_base, "keys": [PAID]}},
        "models": {
            "metered": {
                "provider": "openai",
                "model": "gpt-4.1-nano",
                "price": {"input_per_mtok": 1000.0, "output_per_mtok": 0.0},
            }
        },
    }


async def test_a_money_budget_holds_across_two_instances_on_redis(sim, tmp_path, redis_url):
    state = (
        f'[state]\nbackend = "redis"\nurl = "{redis_url}"\nprefix = "{unique_prefix()}"\n'
        '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}" }'
    )
    config = tmp_path / "keygate.toml"
    config.write_text(
        money_config(sim, state, '[policies.metered]\ntokens = ["alice"]\nusd_per_month = 0.5\n'), encoding="utf-8"
    )
    servers = [ServerProcess(config, free_port(), {"ALICE_TOKEN": ALICE}) for _ in range(2)]
    prompt = "y" * 396
    try:
        for server in servers:
            server.wait_ready()
        answered: list[float] = []
        refused: list[str] = []

        async def one(url: str) -> None:
            async with streamable(url, ALICE) as session:
                result = await session.call_tool("complete", {"prompt": prompt, "model": "metered"})
            if result.is_error:
                refused.append(result.content[0].text)
            else:
                answered.append(result.structured_content["cost_usd"])

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, servers[i % 2].url)
    finally:
        for server in servers:
            server.stop()
    assert answered == [pytest.approx(0.103)] * 4, refused
    assert len(refused) == 6
    assert all("policy 'metered' (usd_per_month = $0.5)" in m and "resets at" in m for m in refused), refused[0]


def test_the_readme_money_examples_are_valid_config():
    import re
    import tomllib

    from .conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    priced = next(b for b in blocks if "price" in b.get("models", {}).get("ours", {}))
    interns = next(b for b in blocks if "interns" in b.get("policies", {}))
    config = parse_config(
        {
            "providers": {"azure": {"type": "azure", "base_url": "https://x.openai.azure.com", "keys": ["k"]}},
            "models": priced["models"],
            "policies": interns["policies"],
        }
    )
    assert Prices(config).cost("ours", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert config.policies["interns"].usd_per_month == 25.0


def test_check_warns_when_a_money_budget_reaches_a_model_without_a_price(sim, tmp_path):
    config = tmp_path / "keygate.toml"
    policy = '[policies.team]\ntokens = ["alice"]\nusd_per_day = 1.0\n'
    config.write_text(
        money_config(sim, '[server]\nauth_tokens = { alice = "${ALICE_TOKEN}" }', policy), encoding="utf-8"
    )
    checked = run_cli("check", "--config", str(config), "--offline", env={"ALICE_TOKEN": ALICE})
    assert (
        "policies.team: has a money budget but reaches models with no known price (llama)"
        in checked.stdout + checked.stderr
    )


async def test_a_state_file_from_before_costs_and_attachments_is_upgraded_in_place(tmp_path):
    import sqlite3

    from mcp_keygate.store.base import UsageRow
    from mcp_keygate.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE conversations (id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            turns INTEGER NOT NULL DEFAULT 0, owner TEXT NOT NULL DEFAULT 'local');
        CREATE TABLE turns (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL,
            content TEXT NOT NULL, model TEXT, provider TEXT, key_id TEXT, created_at REAL NOT NULL,
            PRIMARY KEY (conversation_id, seq));
        CREATE TABLE usage (day TEXT NOT NULL, owner TEXT NOT NULL, model TEXT NOT NULL, key_id TEXT NOT NULL,
            requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
            PRIMARY KEY (day, owner, model, key_id));
        INSERT INTO conversations VALUES ('c_old', 1, 1, 1, 'local');
        INSERT INTO turns VALUES ('c_old', 0, 'user', 'hello from before', NULL, NULL, NULL, 1);
        INSERT INTO usage VALUES ('2026-01-01', 'local', 'gpt', 'openai:abc', 3, 30, 40);
        """
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        turns = await store.get_turns("c_old")
        rows = await store.load_usage("2026-01-01")
        await store.append_turns(
            "c_old", [], create=False, usage=UsageRow("2026-01-01", "local", "gpt", "openai:abc", 1, 1, 1, 0.5, 0)
        )
        after = await store.load_usage("2026-01-01")
    finally:
        await store.close()
    assert turns is not None and turns[0].content == "hello from before" and turns[0].attachments == ()
    # Calls from before costs were never priced: unknown, not $0.
    assert rows == [UsageRow("2026-01-01", "local", "gpt", "openai:abc", 3, 30, 40, 0.0, 3)]
    assert after[0].requests == 4 and after[0].cost_usd == 0.5 and after[0].unpriced == 3
