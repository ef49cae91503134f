"""The read side: what `list_models`, `key_status`, `list_conversations`, `get_conversation` and
`usage` show, as projections of the pool and the store into `schemas`, filtered by the caller's policy.

Key states come from `keys.rules` (`key_state`, and `state_for` for the reasons of the key table),
like /metrics and a failed call's summary, so no two views can disagree about a key.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .auth import LOCAL_OWNER
from .config import Config
from .conversations import UnknownConversation, load_history
from .errors import InvalidRequest
from .keys.base import KeyPool
from .keys.rules import key_state
from .keys.state import KeyState
from .policies import Policies
from .router import Router
from .schemas import (
    AttachmentRef,
    ConversationResult,
    ConversationsResult,
    ConversationSummary,
    ConversationTurn,
    KeyStatusResult,
    ModelInfo,
    ModelsResult,
    UsageResult,
)
from .status import iso_time, key_rows
from .store import Store
from .usage import usage_result


class Views:
    def __init__(
        self,
        config: Config,
        pool: KeyPool,
        store: Store,
        router: Router,
        policies: Policies,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.pool = pool
        self.store = store
        self.router = router
        self.policies = policies
        self._clock = clock

    async def list_models(self, caller: str = LOCAL_OWNER) -> ModelsResult:
        """Models and routes; a caller whose policy limits it sees only what it may reach."""
        now = self._clock()
        policy = self.policies.for_token(caller)
        reachable = policy.models(self.config) if policy is not None and policy.restricts_calls else None
        infos = []
        for name, model in self.config.models.items():
            if reachable is not None and name not in reachable:
                continue
            upstream = self.config.upstream_model(name)
            records = await self.pool.records(model.provider)
            ready_in = await self.router.ready_in([name])
            infos.append(
                ModelInfo(
                    name=name,
                    provider=model.provider,
                    upstream_model=upstream,
                    context_window=model.context_window,
                    keys_total=len(records),
                    keys_ready=sum(1 for r in records if key_state(r, upstream, now) is KeyState.READY),
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

    async def key_status(self, provider: str | None = None, caller: str = LOCAL_OWNER) -> KeyStatusResult:
        """The key table; a caller whose policy limits it sees only the providers it may use."""
        visible = self.policies.providers_for(caller)
        known = sorted(p for p in self.config.providers if visible is None or p in visible)
        if provider is not None and provider not in known:
            raise InvalidRequest(f"provider: unknown provider {provider!r}; known: {', '.join(known) or 'none'}")
        records = [r for r in await self.pool.records(provider) if visible is None or r.provider in visible]
        return KeyStatusResult(keys=key_rows(records, self._clock()))

    async def list_conversations(self, caller: str = LOCAL_OWNER, limit: int = 20) -> ConversationsResult:
        if not 1 <= limit <= 500:
            raise InvalidRequest(f"limit: must be between 1 and 500 (got {limit})")
        infos = await self.store.list_conversations(limit, caller)
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

    async def get_conversation(self, conversation_id: str, caller: str = LOCAL_OWNER) -> ConversationResult:
        try:
            turns = await load_history(self.store, conversation_id, caller)
        except UnknownConversation:
            raise UnknownConversation(conversation_id, UnknownConversation.LOOKING) from None
        return ConversationResult(
            conversation_id=conversation_id,
            turns=[
                ConversationTurn(
                    role=t.role,
                    content=t.content,
                    attachments=[AttachmentRef(**a.to_dict()) for a in t.attachments],
                    model=t.model,
                    provider=t.provider,
                    key_id=t.key_id,
                    created_at=iso_time(t.created_at) if t.created_at else None,
                )
                for t in turns
            ],
        )

    async def usage(self, caller: str | None, days: int = 30) -> UsageResult:
        """Tokens used per caller, model and key over the last `days` days (one caller's, or everyone's)."""
        if not 1 <= days <= 400:
            raise InvalidRequest(f"days: must be between 1 and 400 (got {days})")
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86_400))
        return usage_result(await self.store.load_usage(since, caller), since)
