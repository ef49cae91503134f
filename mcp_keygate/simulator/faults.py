"""Transport-level faults, the same for every API: what proxies, networks and broken upstreams do.

hang        never answers (the client's deadline must end it)
slowdrip    a correct answer, one byte every 200 ms (read timeouts never fire; a deadline must)
reset       half an answer, then the connection is dropped
html502     a proxy's HTML "502 Bad Gateway" page (html504: "504 Gateway Time-out")
empty200    200 with an empty body
malformed   200 with a body that is not JSON
huge        200 with a 20 MB body
longline    200 with one line that never ends: 256 MiB without a newline (a stream's `data: ` line, or JSON)
gzipbomb    200, `content-encoding: gzip`: about 1 MB on the wire that inflates to 1 GiB of zeros
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import anyio
from starlette.responses import Response, StreamingResponse

TRANSPORT_FAULTS = (
    "hang",
    "slowdrip",
    "reset",
    "html502",
    "html504",
    "empty200",
    "malformed",
    "huge",
    "longline",
    "gzipbomb",
)
LONGLINE_BYTES = 256 * 1024 * 1024  # bounded: the fault ends even when the client never hangs up
BOMB_MIB = 1024

_HTML = (
    "<html>\r\n<head><title>{code} {title}</title></head>\r\n<body>\r\n<center><h1>{code} {title}</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class DroppedConnection(Exception):
    """Raised inside a streaming body: the server drops the connection mid-answer."""


async def fault_response(fault: str, good: Response) -> Response:
    """The response for `fault`; `good` is the answer the upstream would have given."""
    if fault == "hang":
        await anyio.sleep(3600)
    if fault == "html502":
        return Response(_HTML.format(code=502, title="Bad Gateway"), 502, media_type="text/html")
    if fault == "html504":
        return Response(_HTML.format(code=504, title="Gateway Time-out"), 504, media_type="text/html")
    if fault == "empty200":
        return Response(b"", 200, media_type="application/json")
    if fault == "malformed":
        return Response(b'{"choices": [{"message": {"content": "trunc', 200, media_type="application/json")
    if fault == "huge":
        return Response(b'{"padding": "' + b"x" * 20_000_000 + b'"}', 200, media_type="application/json")
    if fault == "longline":
        return StreamingResponse(_endless_line(good.media_type == "text/event-stream"), media_type=good.media_type)
    if fault == "gzipbomb":
        return StreamingResponse(_gzip_bomb(BOMB_MIB), headers={"content-encoding": "gzip"}, media_type=good.media_type)
    body = await _body_of(good)
    headers = {k: v for k, v in good.headers.items() if k != "content-length"}
    if fault == "slowdrip":
        return StreamingResponse(_drip(body), good.status_code, headers, media_type=good.media_type)
    return StreamingResponse(_half_then_drop(body), good.status_code, headers, media_type=good.media_type)


async def _body_of(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join(
            [chunk.encode() if isinstance(chunk, str) else bytes(chunk) async for chunk in response.body_iterator]
        )
    return bytes(response.body)


async def _drip(body: bytes) -> AsyncIterator[bytes]:
    for i in range(len(body)):
        yield body[i : i + 1]
        await anyio.sleep(0.2)


async def _half_then_drop(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    await anyio.sleep(0.01)
    raise DroppedConnection("the simulator drops the connection mid-answer (scenario: reset)")


async def _endless_line(sse: bool) -> AsyncIterator[bytes]:
    yield b"data: " if sse else b'{"padding": "'
    chunk = b"x" * 65536
    for _ in range(LONGLINE_BYTES // len(chunk)):
        yield chunk


async def _gzip_bomb(mib: int) -> AsyncIterator[bytes]:
    """`mib` MiB of zeros, gzip-compressed: after a full flush the compressor keeps no history, so one
    compressed MiB repeats verbatim and the bomb is never built (or held) whole. It has no gzip trailer:
    nobody should read that far."""
    zeros = bytes(1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    yield packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    segment = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    for _ in range(mib - 1):
        yield segment
