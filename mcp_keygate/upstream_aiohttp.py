"""An httpx2 transport that sends requests with aiohttp (its HTTP/1.1 parser is C, httpx2's is
Python): the providers keep httpx2's API — requests, streamed responses, timeouts, exceptions —
and only the bytes on the wire go through aiohttp. The default; `[server] upstream_client =
"httpx2"` sends with httpx2's own transport instead.

What the rest of the code relies on, and this keeps: bodies arrive raw (providers decode and bound
them themselves, so aiohttp's own decompression is off); no redirects; httpx2's connect, read and
pool timeouts per request; failures are httpx2's exceptions; a response closed before its end
closes its connection (a cancelled call does not leave the upstream streaming into a pooled socket).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2

MAX_HEADER_LINE = 65_536
# Errors as the providers know them (`send_attempt` classifies httpx2's exceptions).
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ClientSSLError)


class AiohttpStream(httpx2.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx2.ReadTimeout(str(exc) or "read timed out", request=self._request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx2.RemoteProtocolError(str(exc), request=self._request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # not read to the end: the connection is closed, not reused


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """`httpx2.AsyncClient(transport=AiohttpTransport(...))`: one aiohttp session per transport."""

    # Idle connections are dropped after 4 s: under the 5 s idle timeout common to uvicorn and Node
    # servers, so a connection the upstream is about to close is not reused (aiohttp, unlike httpx2,
    # does not check a pooled socket before sending on it).
    def __init__(self, max_connections: int = 64, keepalive_s: float = 4.0, ssl: Any = True) -> None:
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the event loop that uses it
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=self._keepalive_s, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                trust_env=False,
                # One response header line may be long (httpx2 takes them): aiohttp's default is 8 KB.
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        try:
            response = await self._open().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except _CONNECT_ERRORS as exc:
            raise httpx2.ConnectError(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            kind = httpx2.ConnectTimeout if isinstance(exc, aiohttp.ConnectionTimeoutError) else httpx2.ReadTimeout
            raise kind(str(exc) or "timed out", request=request) from exc
        except aiohttp.InvalidURL as exc:
            raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
        except ValueError as exc:  # a request aiohttp refuses to send (a control character in a header)
            raise httpx2.LocalProtocolError(type(exc).__name__, request=request) from None
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
        return httpx2.Response(
            response.status,
            headers=headers,
            stream=AiohttpStream(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
