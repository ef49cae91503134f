"""The HTTP clients that carry attempts upstream: several small connection pools, used in turn.

httpx2 checks every pooled connection on each request, so with 64 connections in one pool that
check costs more than the whole router; eight pools of up to 64 keep it small. The clients are
made on first use: TLS set-up costs ~40 ms that a stdio start need not pay. By default (`[server]
upstream_client = "aiohttp"`) one client sends through aiohttp instead (`upstream_aiohttp.py`): its
C HTTP parser costs far less per call than httpx2's pure-Python one.
"""

from __future__ import annotations

import httpx2

from .config import Config

UPSTREAM_POOLS = 8


class UpstreamClients:
    def __init__(self, config: Config, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport  # tests: one in-process transport instead of the network
        self._clients: list[httpx2.AsyncClient] = []
        self._next = 0

    def next(self) -> httpx2.AsyncClient:
        """One of the clients, in turn."""
        if not self._clients:
            self._clients = self._build()
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    def _build(self) -> list[httpx2.AsyncClient]:
        providers = self._config.providers.values()
        timeout = max((p.timeout_s for p in providers), default=60.0)
        connect = max((p.connect_timeout_s for p in providers), default=10.0)
        tls = httpx2.create_ssl_context()  # shared: one TLS set-up for every pool
        transport = self._transport
        if transport is None and self._config.server.upstream_client == "aiohttp":
            transport = _aiohttp_transport(tls)  # one aiohttp pool: it has no per-request pool scan
        pools = 1 if transport is not None else UPSTREAM_POOLS
        return [
            httpx2.AsyncClient(
                timeout=httpx2.Timeout(timeout, connect=connect),
                follow_redirects=False,
                limits=httpx2.Limits(max_connections=64, max_keepalive_connections=16),
                transport=transport,
                trust_env=False,
                verify=tls,
            )
            for _ in range(pools)
        ]

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: its timeouts apply to the clients made from now on (a request's own
        timeout comes from its provider's config at each attempt)."""
        self._config = config

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()


def _aiohttp_transport(tls: object) -> httpx2.AsyncBaseTransport:
    """The aiohttp-backed transport (`upstream_aiohttp.py`), or one line saying what to install."""
    try:
        from .upstream_aiohttp import AiohttpTransport
    except ImportError:
        from .errors import KeygateError

        needs = 'aiohttp is missing (pip install aiohttp), or set [server] upstream_client = "httpx2"'
        raise KeygateError(needs) from None
    return AiohttpTransport(max_connections=UPSTREAM_POOLS * 64, ssl=tls)
