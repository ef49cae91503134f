"""One running mcp-keygate: config, pool, store, providers and router wired together.

The MCP server, the demo and the benchmarks all drive this object; it owns the shared
HTTP client and persists key state after every call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx2

from .activity import Activity
from .auth import LOCAL_OWNER
from .config import Config, state_path
from .context import raw_estimate
from .conversations import InvalidConversationId, load_history, new_conversation_id, request_messages
from .keys.pool import KeyPool
from .keys.rules import PoolPolicy
from .keys.state import KeyRecord
from .messages import Message, Turn
from .policies import Policies, PolicyRefused
from .providers import CallParams, build_provider
from .router import Notify, Router
from .schemas import (
    AttemptOut,
    CompleteResult,
    ConversationResult,
    ConversationsResult,
    ConversationSummary,
    ConversationTurn,
    InputMessage,
    KeyStatusResult,
    ModelInfo,
    ModelsResult,
    ResetResult,
    UsageOut,
    UsageResult,
)
from .status import iso_time, key_rows
from .store import Store, open_store
from .store.base import UsageRow
from .templates import render
from .usage import usage_result

log = logging.getLogger("mcp_keygate")

# Upstream connection pools, used in turn (see Keygate._http_client).
UPSTREAM_POOLS = 8
# Key counters (requests, headroom, budget spend) are written at most this often; state changes at once.
COUNTER_FLUSH_S = 1.0


class InvalidRequest(ValueError):
    """A tool call whose arguments cannot be served; the message names the field."""


class CallTimedOut(Exception):
    """The whole call ran past `[limits] call_timeout_s`."""


class Keygate:
    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.keys = config.resolve_keys(env)
        self.secrets = [k.secret for ks in self.keys.values() for k in ks if k.secret]
        self.key_budgets = {k.key_id: k.budget for ks in self.keys.values() for k in ks}
        policies = {
            name: PoolPolicy(
                p.strategy,
                p.cooldown_s,
                p.max_cooldown_s,
                p.quota_cooldown_s,
                key_budgets=self.key_budgets,
            )
            for name, p in config.providers.items()
        }
        self.providers = {name: build_provider(name, p) for name, p in config.providers.items()}
        self.state_file: Path | None = state_path(config, env) if config.state.backend == "sqlite" else None
        if config.state.backend == "redis" and store is None:
            from redis.asyncio import Redis

            from .keys.redis_pool import RedisKeyPool

            redis = Redis.from_url(config.state.redis_url())
            lease_ttl = max((p.timeout_s for p in config.providers.values()), default=60.0) * 2 + 30
            self.pool: KeyPool | RedisKeyPool = RedisKeyPool(
                redis, config.state.prefix, self.keys, policies, clock, lease_ttl
            )
            self.store = open_store("redis", redis=redis, prefix=config.state.prefix)
        else:
            self.pool = KeyPool(self.keys, policies, clock)
            self.store = store or open_store(config.state.backend, self.state_file)
        self._clock = clock
        self._transport = transport
        self._clients: list[httpx2.AsyncClient] = []
        self._next_client = 0
        self.router: Router | None = None
        self.activity = Activity()
        self._counters_flushed = 0.0
        self.policies = Policies(config)
        self.in_flight = 0  # complete calls running now (graceful shutdown waits for them)
        self.draining = False

    async def __aenter__(self) -> Keygate:
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self) -> None:
        await self.store.open()
        await self.pool.open(self.store)
        self.router = Router(self.config, self.pool, self.providers, self._http_client, self._clock)
        self.router.observers.append(self.activity)

    def _http_client(self) -> httpx2.AsyncClient:
        """One of the upstream clients, in turn; made on first use (TLS setup costs ~40 ms a stdio start
        need not pay).

        Several small connection pools rather than one big one: httpx2 checks every pooled connection
        on each request, so with 64 connections in one pool that check costs more than our whole router.
        """
        if not self._clients:
            timeouts = [p.timeout_s for p in self.config.providers.values()] or [60.0]
            connects = [p.connect_timeout_s for p in self.config.providers.values()] or [10.0]
            tls = httpx2.create_ssl_context()  # shared: one TLS set-up for every pool
            pools = 1 if self._transport is not None else UPSTREAM_POOLS
            self._clients = [
                httpx2.AsyncClient(
                    timeout=httpx2.Timeout(max(timeouts), connect=max(connects)),
                    follow_redirects=False,
                    limits=httpx2.Limits(max_connections=64, max_keepalive_connections=16),
                    transport=self._transport,
                    trust_env=False,
                    verify=tls,
                )
                for _ in range(pools)
            ]
        self._next_client = (self._next_client + 1) % len(self._clients)
        return self._clients[self._next_client]

    async def close(self) -> None:
        try:
            await self.store.save_keys(self.pool.take_dirty())
        finally:
            clients, self._clients = self._clients, []
            for client in clients:
                await client.aclose()
            await self.store.close()

    async def complete(
        self,
        *,
        prompt: str | None = None,
        messages: list[InputMessage] | None = None,
        model: str = "default",
        conversation_id: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        max_wait_s: float = 20.0,
        notify: Notify | None = None,
        owner: str = LOCAL_OWNER,
        preset: str | None = None,
    ) -> CompleteResult:
        """Answer one turn through the route, store it, and say how it was reached.

        `owner` is the caller (a token name, or "local"); its policy, if any, is enforced here.
        `preset` names the preset tool this call came from (policies may allow presets by name).
        """
        if self.router is None:
            raise RuntimeError("Keygate is not open")
        self.in_flight += 1
        limit = self.config.limits.call_timeout_s
        try:
            with anyio.fail_after(limit):
                return await self._complete(
                    prompt,
                    messages,
                    model,
                    conversation_id,
                    system,
                    max_tokens,
                    temperature,
                    max_wait_s,
                    notify,
                    owner,
                    preset,
                )
        except TimeoutError:
            raise CallTimedOut(
                f"the call did not finish within call_timeout_s = {limit:g} s (fallbacks and waits included); "
                "nothing was stored — retry, or raise [limits] call_timeout_s"
            ) from None
        finally:
            self.in_flight -= 1

    async def _complete(
        self,
        prompt: str | None,
        messages: list[InputMessage] | None,
        model: str,
        conversation_id: str | None,
        system: str | None,
        max_tokens: int | None,
        temperature: float | None,
        max_wait_s: float,
        notify: Notify | None,
        owner: str,
        preset: str | None,
    ) -> CompleteResult:
        assert self.router is not None
        new = self._new_messages(prompt, messages, system)
        self._check_sizes(new)
        chain = self.config.route(model)
        if chain is None:
            names = sorted(set(self.config.route_names()) | set(self.config.models))
            raise InvalidRequest(
                f"model: unknown model or route {model!r}; known: {', '.join(names) or 'none configured'}"
            )
        if max_tokens is not None and max_tokens < 1:
            raise InvalidRequest(f"max_tokens: must be at least 1 (got {max_tokens})")
        if max_wait_s < 0:
            raise InvalidRequest(f"max_wait_s: must be 0 or more (got {max_wait_s})")
        create = conversation_id is None
        if conversation_id is None:
            conversation_id = new_conversation_id()
            history: list[Turn] = []
        else:
            history = await self._history(conversation_id, owner)
            room = self.config.limits.max_conversation_turns - len(history)
            if room < len(new) + 1:
                raise InvalidRequest(
                    f"conversation_id: the conversation has {len(history)} turns, the limit is "
                    f"{self.config.limits.max_conversation_turns} ([limits] max_conversation_turns); start a new one"
                )
        context = request_messages(history, new)
        if not any(m.role == "user" for m in context):
            raise InvalidRequest("messages: at least one message with role 'user' is needed")
        policy = self.policies.for_token(owner)
        if policy is not None:
            policy.check(self.config, owner, model, preset)
        cost = int(raw_estimate(context)) + (max_tokens or 0)
        charged = await self._charge_budget(owner, cost)
        try:
            routed = await self.router.route(chain, context, CallParams(max_tokens, temperature), max_wait_s, notify)
        except BaseException:
            with anyio.CancelScope(shield=True):  # what the failed call learned about keys is kept
                await self.store.save_keys(self._keys_to_write())
                if charged:
                    await self._settle_budget(owner, cost, 0)
            raise
        now = time.time()
        usage = routed.completion.usage
        turns = [Turn(m.role, m.content, created_at=now) for m in new]
        turns.append(Turn("assistant", routed.completion.text, routed.model, routed.provider, routed.key_id, now))
        used = UsageRow(
            time.strftime("%Y-%m-%d", time.gmtime(now)),
            owner,
            routed.model,
            routed.key_id,
            1,
            usage.input_tokens,
            usage.output_tokens,
        )
        # One transaction: the user turn, the answer, what the call taught us about keys, and its usage.
        await self.store.append_turns(
            conversation_id, turns, create=create, owner=owner, keys=self._keys_to_write(), usage=used
        )
        if charged:
            await self._settle_budget(owner, cost, usage.input_tokens + usage.output_tokens)
        return CompleteResult(
            text=routed.completion.text,
            model=routed.model,
            provider=routed.provider,
            key_id=routed.key_id,
            conversation_id=conversation_id,
            finish_reason=routed.completion.finish_reason,
            usage=UsageOut(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
            attempts=[
                AttemptOut(
                    model=a.model,
                    key_id=a.key_id,
                    outcome=a.outcome,
                    status_code=a.status_code,
                    retry_after_s=a.retry_after_s,
                )
                for a in routed.attempts
            ],
            trimmed_turns=routed.trimmed_turns,
        )

    def _keys_to_write(self) -> list[KeyRecord]:
        """Key records for this call's transaction: state changes always, counters once a second."""
        now = time.monotonic()
        if now - self._counters_flushed >= COUNTER_FLUSH_S:
            self._counters_flushed = now
            return self.pool.take_dirty()
        return self.pool.take_dirty(state_changes_only=True)

    async def _charge_budget(self, owner: str, cost: int) -> bool:
        """Count this call against its caller's budget (shared by every instance), or refuse it."""
        policy = self.policies.for_token(owner)
        if policy is None or not policy.budget:
            return False
        wait, why = await self.store.spend_budget(f"token:{owner}", policy.budget, time.time(), 1, cost)
        if wait > 0:
            when = "never at this size (shorten the request)" if wait == math.inf else f"in {math.ceil(wait)} s"
            raise PolicyRefused(
                f"token {owner!r} is over its budget under policy {policy.name!r} ({policy.budget.describe()}): "
                f"{why.removeprefix('client-side budget: ')}; it has room again {when}"
            )
        return True

    async def _settle_budget(self, owner: str, cost: int, used: int) -> None:
        """Replace the call's token estimate with what it really used (0 when it failed)."""
        policy = self.policies.for_token(owner)
        if policy is not None and (policy.budget.tpm is not None or policy.budget.tpd is not None):
            await self.store.spend_budget(f"token:{owner}", policy.budget, time.time(), 0, used - cost, enforce=False)

    async def run_preset(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        conversation_id: str | None = None,
        max_wait_s: float = 20.0,
        notify: Notify | None = None,
        owner: str = LOCAL_OWNER,
    ) -> CompleteResult:
        """Call the preset `name`: fill its template, then complete through its route like any call."""
        preset = self.config.presets.get(name)
        if preset is None:
            raise InvalidRequest(f"preset: unknown preset {name!r}; known: {', '.join(self.config.presets) or 'none'}")
        values = {}
        for parameter, spec in preset.parameters.items():
            if arguments.get(parameter) is not None:
                values[parameter] = arguments[parameter]
            elif spec.default is not None:
                values[parameter] = spec.default
            else:
                raise InvalidRequest(f"{parameter}: required by the preset {name!r} ({spec.description or spec.type})")
        return await self.complete(
            prompt=render(preset.template, values),
            model=preset.route,
            conversation_id=conversation_id,
            system=preset.system if conversation_id is None else None,
            max_tokens=preset.max_tokens,
            temperature=preset.temperature,
            max_wait_s=max_wait_s,
            notify=notify,
            owner=owner,
            preset=name,
        )

    async def usage(self, owner: str | None, days: int = 30) -> UsageResult:
        """Tokens used per caller, model and key over the last `days` days (one caller's, or everyone's)."""
        if not 1 <= days <= 400:
            raise InvalidRequest(f"days: must be between 1 and 400 (got {days})")
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86_400))
        return usage_result(await self.store.load_usage(since, owner), since)

    def _check_sizes(self, new: list[Message]) -> None:
        limits = self.config.limits
        if len(new) > limits.max_messages:
            raise InvalidRequest(f"messages: {len(new)} messages, the limit is {limits.max_messages}")
        for i, message in enumerate(new):
            if len(message.content) > limits.max_prompt_chars:
                where = "system" if message.role == "system" else f"messages[{i}].content (or prompt)"
                raise InvalidRequest(
                    f"{where}: {len(message.content)} characters, the limit is {limits.max_prompt_chars} "
                    "([limits] max_prompt_chars)"
                )

    @staticmethod
    def _new_messages(prompt: str | None, messages: list[InputMessage] | None, system: str | None) -> list[Message]:
        if (prompt is None) == (messages is None):
            raise InvalidRequest(
                "prompt/messages: give exactly one — `prompt` (a string) for a single user turn, "
                "or `messages` (a list of {role, content}) for several"
            )
        new: list[Message] = [Message("system", system)] if system else []
        if prompt is not None:
            if not prompt.strip():
                raise InvalidRequest("prompt: must not be empty")
            new.append(Message("user", prompt))
        else:
            assert messages is not None
            if not messages:
                raise InvalidRequest("messages: must contain at least one message")
            new.extend(Message(m.role, m.content) for m in messages)
        return new

    async def list_models(self, owner: str = LOCAL_OWNER) -> ModelsResult:
        """Models and routes; a caller whose policy limits it sees only what it may reach."""
        now = self._clock()
        infos = []
        policy = self.policies.for_token(owner)
        reachable = policy.models(self.config) if policy is not None and policy.restricts_calls else None
        for name, model in self.config.models.items():
            if reachable is not None and name not in reachable:
                continue
            upstream = self.config.upstream_model(name)
            records = await self.pool.records(model.provider)
            ready = sum(1 for r in records if r.hold_for(upstream, now) is None)
            if self.router is not None:
                ready_in = await self.router.ready_in([name])
            else:
                ready_in = await self.pool.ready_in(model.provider, upstream)
            infos.append(
                ModelInfo(
                    name=name,
                    provider=model.provider,
                    upstream_model=upstream,
                    context_window=model.context_window,
                    keys_total=len(records),
                    keys_ready=ready,
                    available=ready_in == 0,
                    ready_in_s=None if ready_in is None else round(ready_in, 1),
                )
            )
        routes = {
            route: chain
            for route, chain in self.config.route_names().items()
            if policy is None or policy.may_call(self.config, route)
        }
        return ModelsResult(models=infos, routes=routes)

    async def list_conversations(self, owner: str = LOCAL_OWNER, limit: int = 20) -> ConversationsResult:
        if not 1 <= limit <= 500:
            raise InvalidRequest(f"limit: must be between 1 and 500 (got {limit})")
        infos = await self.store.list_conversations(limit, owner)
        return ConversationsResult(
            conversations=[
                ConversationSummary(
                    conversation_id=i.id,
                    turns=i.turns,
                    created_at=iso_time(i.created_at),
                    updated_at=iso_time(i.updated_at),
                )
                for i in infos
            ]
        )

    async def _history(self, conversation_id: str, owner: str) -> list[Turn]:
        """The owner's history; a malformed id is a request error naming the field."""
        try:
            return await load_history(self.store, conversation_id, owner)
        except InvalidConversationId as exc:
            raise InvalidRequest(str(exc)) from None

    async def get_conversation(self, conversation_id: str, owner: str = LOCAL_OWNER) -> ConversationResult:
        turns = await self._history(conversation_id, owner)
        return ConversationResult(
            conversation_id=conversation_id,
            turns=[
                ConversationTurn(
                    role=t.role,
                    content=t.content,
                    model=t.model,
                    provider=t.provider,
                    key_id=t.key_id,
                    created_at=iso_time(t.created_at) if t.created_at else None,
                )
                for t in turns
            ],
        )

    async def reset_key(self, key_id: str) -> ResetResult:
        """Operator reset: forget every hold on the key (it is `ready` again)."""
        if not await self.pool.reset(key_id):
            known = ", ".join(k.key_id for ks in self.keys.values() for k in ks) or "none"
            raise InvalidRequest(f"key_id: unknown key {key_id!r}; known: {known}")
        await self.store.save_keys(self.pool.take_dirty())
        log.info("key %s reset by an operator", key_id)
        return ResetResult(key_id=key_id, state="ready")

    async def key_status(self, provider: str | None = None, owner: str = LOCAL_OWNER) -> KeyStatusResult:
        """The key table; a caller whose policy limits it sees only the providers it may use."""
        visible = self.policies.providers_for(owner)
        known = sorted(p for p in self.config.providers if visible is None or p in visible)
        if provider is not None and provider not in known:
            raise InvalidRequest(f"provider: unknown provider {provider!r}; known: {', '.join(known) or 'none'}")
        records = [r for r in await self.pool.records(provider) if visible is None or r.provider in visible]
        return KeyStatusResult(keys=key_rows(records, self._clock(), self.key_budgets))
