"""Traces: a span per call and a client span per upstream attempt with the GenAI conventions and
our own attributes, in-process with the SDK's in-memory exporter — and a real `serve` exporting
over OTLP/HTTP to a collector stand-in, whose received bytes never contain a key."""

from __future__ import annotations

import http.server
import threading
from typing import ClassVar

import pytest
from mcp import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_keygate import tracing
from mcp_keygate.accounting import accounted
from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.gateway import Keygate

from .conftest import server_params, two_provider_config, write_toml

pytestmark = pytest.mark.anyio

RATE, GOOD, BACKUP = "sim-ratelimit-30s-trace001", "sim-quota-trace00000002", "sim-ok-trace000backup3"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing._tracer = None  # back to off for the other tests


async def test_a_call_and_its_attempts_are_spans_with_genai_attributes(sim, make_config, spans):
    config = make_config(two_provider_config(sim, [RATE, GOOD], [BACKUP]))
    async with Keygate(config) as gate:
        tracing.remember_secrets(gate.secrets)
        result = await accounted(None, "alice", "complete", gate.complete(CompleteRequest(prompt="hi"), caller="alice"))
    finished = {s.name: s for s in spans.get_finished_spans()}
    call = finished["keygate complete"]
    attempts = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [s.attributes["keygate.outcome"] for s in attempts] == ["rate_limited", "quota_exhausted", "ok"]
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in attempts)
    first, last = attempts[0], attempts[-1]
    assert first.attributes["gen_ai.operation.name"] == "chat" and first.attributes["gen_ai.provider.name"] == "openai"
    assert (
        first.attributes["gen_ai.request.model"] == "gpt-4.1-mini"
        and first.attributes["http.response.status_code"] == 429
    )
    assert first.status.status_code.name == "ERROR"
    assert last.attributes["keygate.model"] == "big" and last.attributes["gen_ai.usage.output_tokens"] > 0
    assert last.attributes["keygate.key_id"] == result.key_id
    assert call.attributes["keygate.fallback"] is True and call.attributes["keygate.caller"] == "alice"
    assert call.attributes["gen_ai.usage.input_tokens"] == result.usage.input_tokens
    every_value = " ".join(str(v) for s in spans.get_finished_spans() for v in s.attributes.values())
    every_value += " ".join(str(s.status.description) for s in spans.get_finished_spans())
    for key in (RATE, GOOD, BACKUP):
        assert key not in every_value and key[-10:] not in every_value


class Collector(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        Collector.bodies.append(self.rfile.read(int(self.headers["content-length"] or 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        return


async def test_serve_exports_spans_over_otlp_without_a_secret(sim, tmp_path):
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    Collector.bodies = []
    data = two_provider_config(sim, [RATE, GOOD], [BACKUP])
    data["tracing"] = {"otlp_endpoint": f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"}
    path = write_toml(tmp_path / "keygate.toml", data)
    try:
        async with Client(server_params(path), mode="legacy") as client:
            assert not (await client.call_tool("complete", {"prompt": "trace me"})).is_error
        # The server flushes its spans when it exits.
        exported = b"".join(Collector.bodies)
    finally:
        collector.shutdown()
    assert b"chat gpt-4.1-mini" in exported and b"keygate.key_id" in exported
    assert b"tools/call complete" in exported  # the MCP SDK's own span joins the same trace
    for key in (RATE, GOOD, BACKUP):
        assert key.encode() not in exported and key[-10:].encode() not in exported


async def test_a_failed_call_is_an_error_span_without_exception_events(sim, make_config, spans):
    config = make_config(two_provider_config(sim, [RATE], []))
    async with Keygate(config) as gate:
        tracing.remember_secrets(gate.secrets)
        with pytest.raises(Exception, match="could answer"):
            await accounted(
                None, "bob", "complete", gate.complete(CompleteRequest(prompt="x", max_wait_s=0), caller="bob")
            )
    call = next(s for s in spans.get_finished_spans() if s.name == "keygate complete")
    assert call.status.status_code.name == "ERROR" and call.attributes["error.type"] == "RouteFailed"
    # An exception event would carry the unscrubbed message and a Python stack trace.
    assert [e.name for e in call.events] == []
