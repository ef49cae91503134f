"""The HTTP face: streamable HTTP at /mcp, SSE at /sse, /healthz, /metrics and /status.

One Starlette app serves either transport or both, behind the guards of `http_guards` (Host and
Origin, body deadline, bearer tokens) and `sessions` (sessions per token). Its lifespan owns the
gateway (one pool, one store, one HTTP client for every session) and the session manager.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import EventStore
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .auth import LOCAL_OWNER, TokenRegistry, is_loopback
from .config import ServerConfig
from .errors import StoreError
from .gateway import Keygate
from .history import HistoryRecorder, HistoryStore, MemoryHistory, RedisHistory
from .http_guards import CHALLENGE, UNAUTHORIZED, BearerAuth, BodyDeadline, HostGuard, caller_of
from .http_server import MCP_PATH, MESSAGES_PATH, SSE_PATH, DrainMiddleware
from .metrics import CONTENT_TYPE, Metrics
from .reload import Reloader
from .rest.errors import OpenAIErrorShape
from .rest.routes import RestApi
from .resume import MemoryEventStore, RequestRepliesUnkept, SessionScopes
from .schemas import KeyStatusRow
from .sessions import SessionLimiter
from .status_charts import key_timelines, per_minute, tokens_per_day
from .status_page import SECURITY_HEADERS, render_fragment, render_page
from .wiring import redis_client

log = logging.getLogger("mcp_keygate.http")

Transport = Literal["sse", "streamable-http", "http"]
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class UnsafeBind(Exception):
    """Refusing to serve: the address is reachable from other machines and no token is set."""


def check_bind(host: str, tokens: TokenRegistry) -> None:
    if not is_loopback(host) and not tokens.enabled:
        shown = repr(host) if not host.strip() else host
        raise UnsafeBind(
            f"refusing to listen on {shown}: it is reachable from other machines and no auth token is set. "
            "Set KEYGATE_AUTH_TOKEN (or [server] auth_tokens in the config), or bind to 127.0.0.1."
        )


def transport_security(host: str, settings: ServerConfig) -> TransportSecuritySettings:
    """DNS-rebinding protection: Host and Origin must be loopback or explicitly allowed."""
    hosts = _LOOPBACK_HOSTS + list(settings.allowed_hosts)
    if host.strip() and host not in ("0.0.0.0", "::") and not is_loopback(host):
        hosts += [host, f"{host}:*"]
    origins = _LOOPBACK_ORIGINS + list(settings.allowed_origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def mcp_routes(
    server: MCPServer, transport: Transport, security: TransportSecuritySettings, host: str, gateway: Keygate
) -> list[Any]:
    """The SDK's routes for the chosen transport(s)."""
    settings = gateway.config.server
    common: dict[str, Any] = {
        "transport_security": security,
        "host": host,
        "max_request_body_size": gateway.config.limits.max_request_bytes,
    }
    routes: list[Any] = []
    if transport in ("streamable-http", "http"):
        app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            json_response=settings.json_response,
            session_idle_timeout=settings.session_idle_timeout_s,
            event_store=event_store(gateway),
            retry_interval=settings.retry_ms,
            **common,
        )
        routes += app.routes
    if transport in ("sse", "http"):
        routes += server.sse_app(sse_path=SSE_PATH, message_path=MESSAGES_PATH, **common).routes
    return routes


def event_store(gateway: Keygate) -> EventStore | None:
    """Where stream events wait for a client that reconnects: Redis with the Redis backend, else
    this process's memory (bounded); none when `[server] resume_events = 0`. With JSON replies only
    the standalone GET stream can be resumed, so only its events are kept."""
    settings = gateway.config.server
    if settings.resume_events == 0:
        return None
    store: EventStore
    if gateway.config.state.backend == "redis":
        from .resume_redis import RedisEventStore

        store = RedisEventStore(
            redis_client(gateway.config),
            gateway.config.state.prefix,
            max_events_per_session=min(settings.resume_events, 1000),
            max_bytes_per_session=int(settings.resume_session_mb * 1024 * 1024),
            ttl_s=settings.session_idle_timeout_s,
        )
    else:
        store = MemoryEventStore(settings.resume_events, int(settings.resume_buffer_mb * 1024 * 1024))
    return RequestRepliesUnkept(store) if settings.json_response else store


def history_store(gateway: Keygate) -> HistoryStore:
    """The status page's history: in Redis with the Redis backend (every instance draws the same
    pictures), else in this process."""
    if gateway.config.state.backend == "redis":
        return RedisHistory(redis_client(gateway.config), gateway.config.state.prefix)
    return MemoryHistory()


async def _key_rows(gateway: Keygate) -> list[KeyStatusRow]:
    return (await gateway.views.key_status()).keys


class OperatorRoutes:
    """/healthz (open), /metrics (operators only: it shows every caller) and /status (filtered per token)."""

    def __init__(
        self, gateway: Keygate, server: MCPServer, tokens: TokenRegistry, metrics: Metrics, recorder: HistoryRecorder
    ) -> None:
        self.gateway = gateway
        self.version = server.version
        self.tokens = tokens
        self.metrics = metrics
        self.recorder = recorder

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/status", self.status_page, methods=["GET"]),
        ]

    async def healthz(self, _: Request) -> Response:
        store_ok = await self.gateway.store.ping()
        body = {"ok": store_ok, "store": "reachable" if store_ok else "unreachable", "version": self.version}
        return Response(json.dumps(body), status_code=200 if store_ok else 503, media_type="application/json")

    def may_read_metrics(self, caller: str | None) -> bool:
        """Without tokens (a loopback server) anyone on the machine may; with tokens, operators only."""
        if not self.tokens.enabled:
            return True
        return caller is not None and self.gateway.policies.is_operator(caller)

    async def metrics_endpoint(self, request: Request) -> Response:
        if not self.may_read_metrics(caller_of(request.scope)):
            message = (
                "/metrics shows every caller's calls and tokens: only operator tokens may read it "
                "([server] operator_tokens, or by default tokens that no policy governs)"
            )
            return JSONResponse({"error": "forbidden", "message": message}, 403)
        try:
            return Response(await self.metrics.render(), media_type=CONTENT_TYPE)
        except StoreError as exc:
            return JSONResponse({"error": "store_unavailable", "message": str(exc)}, 503)

    async def status_page(self, request: Request) -> Response:
        fragment_only = request.query_params.get("fragment") == "1"
        caller = caller_of(request.scope)
        if self.tokens.enabled and caller is None:
            if fragment_only:
                return JSONResponse({"error": "unauthorized", "message": UNAUTHORIZED}, 401, headers=CHALLENGE)
            return HTMLResponse(render_page(None), 401, headers={**SECURITY_HEADERS, **CHALLENGE})
        owner = caller or LOCAL_OWNER
        try:
            result = await self.gateway.views.key_status(caller=owner)
            policy = self.gateway.policies.for_token(owner)
            models = policy.models(self.gateway.config) if policy is not None and policy.restricts_calls else None
            charts = await self._charts(result.keys, models, owner)
        except StoreError as exc:
            return JSONResponse({"error": "store_unavailable", "message": str(exc)}, 503)
        fragment = render_fragment(result.keys, self.gateway.activity, models, charts)
        if fragment_only:
            return HTMLResponse(fragment, headers=SECURITY_HEADERS)
        return HTMLResponse(render_page(fragment), headers=SECURITY_HEADERS)

    async def _charts(self, rows: list[KeyStatusRow], models: set[str] | None, owner: str) -> str:
        """The last hour and the last days as pictures, limited to what the caller may see: its
        policy's models, and its own usage unless it is an operator."""
        now = time.time()
        names = [m for m in self.gateway.config.models if models is None or m in models]
        days = 14
        since = time.strftime("%Y-%m-%d", time.gmtime(now - (days - 1) * 86_400))
        everyone = not self.tokens.enabled or self.gateway.policies.is_operator(owner)
        usage = await self.gateway.store.load_usage(since, None if everyone else owner)
        try:
            await self.recorder.flush()  # the pictures are current to the second
            changes = await self.recorder.store.changes([r.key_id for r in rows])
            minutes = await self.recorder.store.minutes(int((now - 3600) // 60))
        except Exception as exc:
            log.warning("status history unavailable: %s", type(exc).__name__)
            changes, minutes = {}, {}
        return (
            f"<h2>Key states, last hour</h2>{key_timelines(rows, changes, now)}"
            f"<h2>Attempts per minute</h2>{per_minute(minutes, names, now)}"
            f"<h2>Tokens per day</h2>{tokens_per_day([u for u in usage if u.model in names], days, now)}"
        )


def build_http_app(
    gateway: Keygate,
    server: MCPServer,
    *,
    transport: Transport,
    host: str,
    settings: ServerConfig,
    tokens: TokenRegistry,
    metrics: Metrics,
    reloader: Reloader | None = None,
) -> Starlette:
    check_bind(host, tokens)
    security = transport_security(host, settings)
    routes = mcp_routes(server, transport, security, host, gateway)
    history = history_store(gateway)
    recorder = HistoryRecorder(history, lambda: _key_rows(gateway))
    routes += OperatorRoutes(gateway, server, tokens, metrics, recorder).routes()
    if settings.rest_api:
        routes += RestApi(gateway, server, metrics).routes()
    streamable = transport in ("streamable-http", "http")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.open()
        gateway.observe(metrics)
        gateway.observe(recorder)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(recorder.run)
                if reloader is not None:
                    group.start_soon(reloader.run)
                if streamable:
                    async with server.session_manager.run():
                        yield
                else:
                    yield
                group.cancel_scope.cancel()
        finally:
            await gateway.close()

    limits = gateway.config.limits
    middleware = [  # outermost first
        Middleware(OpenAIErrorShape),
        Middleware(HostGuard, settings=security),
        Middleware(BearerAuth, registry=tokens, optional=("/status",)),
        Middleware(BodyDeadline, timeout_s=settings.body_timeout_s, max_bytes=limits.max_request_bytes),
        Middleware(DrainMiddleware, gateway=gateway),
        Middleware(
            SessionLimiter,
            per_token=settings.max_sessions_per_token,
            idle_timeout_s=settings.session_idle_timeout_s,
            mcp_path=MCP_PATH,
            sse_path=SSE_PATH,
        ),
        Middleware(SessionScopes, mcp_path=MCP_PATH),
    ]
    if tokens.enabled:
        log.info("bearer tokens required; token names: %s", ", ".join(tokens.names()))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
