"""The HTTP face: streamable HTTP at /mcp, SSE at /sse, /healthz and /metrics, behind bearer tokens.

One Starlette app serves either transport or both. Its lifespan owns the gateway (one pool, one
store, one HTTP client for every session) and the streamable-HTTP session manager.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .auth import LOCAL_OWNER, BearerAuthMiddleware, TokenRegistry, is_loopback
from .config import ServerConfig
from .gateway import Keygate
from .metrics import CONTENT_TYPE, Metrics
from .status_page import SECURITY_HEADERS, render_fragment, render_page

log = logging.getLogger("mcp_keygate.http")

Transport = Literal["sse", "streamable-http", "http"]
MCP_PATH, SSE_PATH, MESSAGES_PATH = "/mcp", "/sse", "/messages/"
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


_UNAUTHORIZED = b'{"error": "unauthorized", "message": "a valid bearer token is required (Authorization: Bearer ...)"}'
_CHALLENGE = {"www-authenticate": 'Bearer realm="mcp-keygate"'}


class UnsafeBind(Exception):
    """Refusing to serve: the address is reachable from other machines and no token is set."""


def check_bind(host: str, tokens: TokenRegistry) -> None:
    if not is_loopback(host) and not tokens.enabled:
        raise UnsafeBind(
            f"refusing to listen on {host}: it is reachable from other machines and no auth token is set. "
            "Set KEYGATE_AUTH_TOKEN (or [server] auth_tokens in the config), or bind to 127.0.0.1."
        )


def transport_security(host: str, settings: ServerConfig) -> TransportSecuritySettings:
    """DNS-rebinding protection: Host and Origin must be loopback or explicitly allowed."""
    hosts = _LOOPBACK_HOSTS + [h for h in settings.allowed_hosts]
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        hosts += [host, f"{host}:*"]
    origins = _LOOPBACK_ORIGINS + list(settings.allowed_origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def build_http_app(
    gateway: Keygate,
    server: MCPServer,
    *,
    transport: Transport,
    host: str,
    settings: ServerConfig,
    tokens: TokenRegistry,
    metrics: Metrics,
) -> Starlette:
    check_bind(host, tokens)
    security = transport_security(host, settings)
    max_request_bytes = gateway.config.limits.max_request_bytes
    routes: list = []
    protected: list[str] = ["/metrics"]
    streamable = transport in ("streamable-http", "http")
    if streamable:
        app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            json_response=settings.json_response,
            transport_security=security,
            host=host,
            max_request_body_size=max_request_bytes,
        )
        routes += app.routes
        protected.append(MCP_PATH)
    if transport in ("sse", "http"):
        app = server.sse_app(
            sse_path=SSE_PATH,
            message_path=MESSAGES_PATH,
            transport_security=security,
            host=host,
            max_request_body_size=max_request_bytes,
        )
        routes += app.routes
        protected += [SSE_PATH, MESSAGES_PATH.rstrip("/")]

    async def healthz(_: Request) -> Response:
        store_ok = await gateway.store.ping()
        body = {"ok": store_ok, "store": "reachable" if store_ok else "unreachable", "version": server.version}
        return Response(json.dumps(body), status_code=200 if store_ok else 503, media_type="application/json")

    async def metrics_endpoint(_: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    async def status_page(request: Request) -> Response:
        fragment_only = request.query_params.get("fragment") == "1"
        caller = tokens.name_for_header(request.headers.get("authorization"))
        if tokens.enabled and caller is None:
            if fragment_only:
                return Response(_UNAUTHORIZED, 401, media_type="application/json", headers=_CHALLENGE)
            return HTMLResponse(render_page(None), 401, headers={**SECURITY_HEADERS, **_CHALLENGE})
        owner = caller or LOCAL_OWNER
        result = await gateway.key_status(owner=owner)
        providers = gateway.policies.providers_for(owner)
        fragment = render_fragment(result.keys, gateway.activity, providers, gateway.config)
        if fragment_only:
            return HTMLResponse(fragment, headers=SECURITY_HEADERS)
        return HTMLResponse(render_page(fragment), headers=SECURITY_HEADERS)

    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/status", status_page, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.open()
        gateway.router.observers.append(metrics)  # type: ignore[union-attr]
        try:
            if streamable:
                async with server.session_manager.run():
                    yield
            else:
                yield
        finally:
            await gateway.close()

    middleware = [
        Middleware(BearerAuthMiddleware, registry=tokens, protected=tuple(protected)),
        Middleware(DrainMiddleware, gateway=gateway, paths=tuple(p for p in protected if p != "/metrics")),
    ]
    if tokens.enabled:
        log.info("bearer tokens required; token names: %s", ", ".join(tokens.names()))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


class DrainMiddleware:
    """While draining for shutdown, new MCP sessions get 503 (the client retries elsewhere); requests of
    sessions already open pass, so their in-flight calls can deliver their answers."""

    def __init__(self, app: Any, gateway: Keygate, paths: tuple[str, ...]) -> None:
        self.app = app
        self.gateway = gateway
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.gateway.draining and scope["type"] == "http" and self._opens_a_session(scope):
            body = b'{"error": "shutting down", "message": "this instance is shutting down; retry"}'
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _opens_a_session(self, scope: dict[str, Any]) -> bool:
        path = scope["path"]
        if path.startswith(SSE_PATH):
            return True
        if not path.startswith(self.paths) or scope["method"] != "POST":
            return False
        if path.startswith(MESSAGES_PATH.rstrip("/")):
            return False  # an SSE session's message: that session is already open
        return not any(k.lower() == b"mcp-session-id" for k, _ in scope.get("headers", []))


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: refuse new calls, let in-flight `complete` calls finish (up to `grace_s`),
    then stop. A second SIGINT stops at once."""

    def __init__(self, config: uvicorn.Config, gateway: Keygate, grace_s: float) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.grace_s = grace_s
        self._drain_deadline: float | None = None
        self._idle_since: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_deadline is not None:
            if sig == signal.SIGINT:
                super().handle_exit(sig, frame)
            return
        log.info(
            "shutdown requested: finishing %d in-flight call(s), at most %.0f s", self.gateway.in_flight, self.grace_s
        )
        self.gateway.draining = True
        self._drain_deadline = time.monotonic() + self.grace_s

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            now = time.monotonic()
            idle = self.gateway.in_flight == 0
            self._idle_since = (self._idle_since or now) if idle else None
            # Stay up a moment after the last call ends so its answer reaches the client.
            if (idle and now - self._idle_since >= 0.3) or now >= self._drain_deadline:
                if not idle:
                    log.warning("shutdown grace over with %d call(s) still running", self.gateway.in_flight)
                self.should_exit = True
        return await super().on_tick(counter)


def run_http(app: Starlette, gateway: Keygate, host: str, port: int, grace_s: float, log_level: str) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    from sse_starlette.sse import AppStatus

    # sse-starlette would close every stream the moment a signal arrives; we drain first.
    AppStatus.enable_automatic_graceful_drain = False
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=2
    )
    DrainingServer(config, gateway, grace_s).run()
