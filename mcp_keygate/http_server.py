"""Running the HTTP app: uvicorn with slow-client deadlines, and a drain on SIGTERM.

On SIGTERM/SIGINT new MCP sessions get 503 (the client retries on another instance) while calls
in flight finish, up to a grace period. A client that takes longer than `header_timeout_s` to send
a request's headers (slowloris) is disconnected; bodies have their own deadline (`BodyDeadline`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .gateway import Keygate
from .http_guards import send_json

log = logging.getLogger("mcp_keygate.http")

MCP_PATH, SSE_PATH, MESSAGES_PATH, REST_PREFIX = "/mcp", "/sse", "/messages/", "/v1/"


class DrainMiddleware:
    """While draining, requests that would open a new MCP session (or start a REST call) get 503;
    open sessions go on, so their in-flight calls can deliver their answers."""

    def __init__(self, app: Any, gateway: Keygate) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.gateway.calls.in_flight.draining and scope["type"] == "http" and _opens_a_session(scope):
            await send_json(send, 503, "shutting down", "this instance is shutting down; retry", {"retry-after": "1"})
            return
        await self.app(scope, receive, send)


def _opens_a_session(scope: dict[str, Any]) -> bool:
    path = scope["path"]
    if path == SSE_PATH or (path.startswith(REST_PREFIX) and scope["method"] == "POST"):
        return True
    if not path.startswith(MCP_PATH) or scope["method"] != "POST":
        return False
    return not any(k.lower() == b"mcp-session-id" for k, _ in scope.get("headers", []))


class HeaderDeadline:
    """A deadline for each request's headers, over either of uvicorn's HTTP protocols (uvicorn has
    none: its keep-alive timer restarts on every byte, so a client sending one byte a second holds
    the connection forever)."""

    header_timeout_s = 10.0
    _header_deadline: asyncio.TimerHandle | None = None
    # Provided by the uvicorn protocol this is mixed into:
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _disarm_header_deadline(self) -> None:
        handle = getattr(self, "_header_deadline", None)
        if handle is not None:
            handle.cancel()
            self._header_deadline = None

    def _headers_overdue(self) -> None:
        in_request = self.cycle is not None and not self.cycle.response_complete
        if not in_request and not self.transport.is_closing():
            self.transport.close()


class HeaderDeadlineProtocol(HeaderDeadline, H11Protocol):
    """h11 (pure Python) with the header deadline."""


MAX_HEAD_BYTES = 16_384  # a request's line and headers: h11's own limit in uvicorn
_END_OF_HEAD = b"\r\n\r\n"


class HeadSizeLimit:
    """A cap on a request's line and headers for httptools, which has none (h11 stops at 16 KB):
    bytes received while a request's head is incomplete are counted up to its blank line, and past
    the cap the client gets 400 and the connection closes — before the parser piles them up (it
    joins a long header's pieces by repeated concatenation, so an endless header costs memory and
    CPU that grow with its square)."""

    max_head_bytes = MAX_HEAD_BYTES
    _head_bytes = 0
    _in_head = True
    _tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            seen = self._tail + data
            end = seen.find(_END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_END_OF_HEAD) - len(self._tail))
            self._tail = seen[-(len(_END_OF_HEAD) - 1) :]
            if self._head_bytes > self.max_head_bytes:
                self.send_400_response("Request line and headers too large.")  # type: ignore[attr-defined]
                return
        super().data_received(data)  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._in_head, self._head_bytes, self._tail = True, 0, b""  # the next request on this connection


def http_protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol with the header deadline: httptools' C parser when it is installed
    (a dependency: it parses each request for a fraction of h11's cost) with a cap on the request's
    head as h11 has, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        base: type = HeaderDeadlineProtocol
    else:
        base = type("HeaderDeadlineHttpTools", (HeadSizeLimit, HeaderDeadline, HttpToolsProtocol), {})
    return type("Protocol", (base,), {"header_timeout_s": header_timeout_s})


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: refuse new sessions, let in-flight `complete` calls finish (up to `grace_s`),
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
        in_flight = self.gateway.calls.in_flight
        log.info("shutdown requested: finishing %d in-flight call(s), at most %.0f s", in_flight.count, self.grace_s)
        in_flight.draining = True
        self._drain_deadline = time.monotonic() + self.grace_s

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and not self.should_exit:
            now = time.monotonic()
            idle = self.gateway.calls.in_flight.count == 0
            self._idle_since = (self._idle_since or now) if idle else None
            # Stay up a moment after the last call ends so its answer reaches the client.
            settled = self._idle_since is not None and now - self._idle_since >= 0.3
            if settled or now >= self._drain_deadline:
                if not idle:
                    log.warning("shutdown grace over with %d call(s) still running", self.gateway.calls.in_flight.count)
                self.should_exit = True
        return await super().on_tick(counter)


class PortInUse(Exception):
    """Another process listens on the address already."""


def check_port(host: str, port: int) -> None:
    """Bind once, as uvicorn will, to say "port in use" in one line instead of uvicorn's traceback."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return  # uvicorn will say what is wrong with the host
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {host or 'every interface'} is already in use (another mcp-keygate?): "
                    "pass --port with a free port, or stop the other process"
                ) from None
            raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run_http(app: Any, gateway: Keygate, host: str, port: int, settings: Any, log_level: str) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    check_port(host, port)
    from sse_starlette.sse import AppStatus

    from .logs import protect_all_handlers

    # sse-starlette would close every stream the moment a signal arrives; we drain first.
    AppStatus.enable_automatic_graceful_drain = False
    protocol = http_protocol(settings.header_timeout_s)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # uvicorn's records go through our (scrubbing) handler
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
        http=protocol,
    )
    protect_all_handlers()
    DrainingServer(config, gateway, settings.shutdown_grace_s).run()
