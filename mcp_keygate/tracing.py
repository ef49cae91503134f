"""OpenTelemetry traces: a span per call (the MCP SDK adds one per MCP message around it) and a
client span per upstream attempt, with the GenAI semantic conventions (`gen_ai.*`: operation,
provider, request and response model, tokens) and our own (`keygate.*`: key id, outcome, why,
fallback). Attributes carry key ids, never keys; reasons are scrubbed.

Off until configured: `[tracing] otlp_endpoint` (or the standard `OTEL_EXPORTER_OTLP_*`
variables with `[tracing] enabled = true`) exports over OTLP/HTTP; the SDK and exporter are the
optional extra `mcp-keygate[otel]`. When off, an attempt costs one boolean test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .config import ConfigError, TracingConfig
from .keys.secret import scrub

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from .keys.base import Lease
    from .messages import Completion
    from .outcomes import Verdict
    from .schemas import CompleteResult

_tracer: trace.Tracer | None = None
_secrets: list[str] = []


def enabled() -> bool:
    return _tracer is not None


def use(provider: Any, secrets: list[str] | None = None) -> None:
    """Trace into `provider` (an SDK TracerProvider); tests pass one with an in-memory exporter."""
    global _tracer
    _tracer = provider.get_tracer("mcp_keygate")
    remember_secrets(secrets or [])


def remember_secrets(secrets: list[str]) -> None:
    """What attribute values are scrubbed of (reasons may quote an upstream body)."""
    _secrets[:] = secrets


def configure(settings: TracingConfig, service: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Export over OTLP/HTTP when the config asks; the provider (also made global, so the MCP SDK's
    own spans join the same traces), or None when tracing stays off."""
    env = os.environ if env is None else env
    endpoint = (
        settings.otlp_endpoint
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not settings.enabled and not settings.otlp_endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(['[tracing] needs the OpenTelemetry SDK: pip install "mcp-keygate[otel]"']) from None
    if endpoint and not settings.otlp_endpoint and "/v1/traces" not in endpoint:
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name or service}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter())
    )
    trace.set_tracer_provider(provider)
    use(provider)
    return provider


@contextmanager
def call_span(caller: str, what: str) -> Iterator[Any]:
    """The span of one call, current while it runs (its attempts are its children)."""
    if _tracer is None:
        yield None
        return
    # No exception events: their message and stack trace would bypass the scrubbing `end_call` does.
    with _tracer.start_as_current_span(
        f"keygate {what}",
        attributes={"keygate.caller": caller},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def end_call(span: Any, result: CompleteResult | None, error: BaseException | None = None) -> None:
    if span is None:
        return
    if result is not None:
        span.set_attributes(
            {
                "gen_ai.response.model": result.model,
                "gen_ai.usage.input_tokens": result.usage.input_tokens,
                "gen_ai.usage.output_tokens": result.usage.output_tokens,
                "keygate.key_id": result.key_id,
                "keygate.attempts": len(result.attempts),
                "keygate.fallback": len({a.model for a in result.attempts}) > 1,
                "keygate.conversation_id": result.conversation_id,
            }
        )
    elif error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(trace.StatusCode.ERROR, scrub(str(error), _secrets)[:500])


def start_attempt(provider_type: str, lease: Lease, name: str) -> Any:
    """A client span for one upstream attempt (started now, ended by `end_attempt`)."""
    if _tracer is None:
        return None
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_type,
        "gen_ai.request.model": lease.model,
        "keygate.provider": lease.key.provider,
        "keygate.model": name,
        "keygate.key_id": lease.key.key_id,
        "keygate.probe": lease.probe,
    }
    return _tracer.start_span(f"chat {lease.model}", kind=trace.SpanKind.CLIENT, attributes=attributes)


def end_attempt(span: Any, verdict: Verdict | None, completion: Completion | None) -> None:
    if span is None:
        return
    if verdict is None:
        span.set_attribute("keygate.outcome", "cancelled")
    else:
        span.set_attribute("keygate.outcome", verdict.outcome.value)
        if verdict.status_code is not None:
            span.set_attribute("http.response.status_code", verdict.status_code)
        if verdict.outcome.value != "ok":
            span.set_attribute("error.type", verdict.outcome.value)
            span.set_status(trace.StatusCode.ERROR, scrub(verdict.reason, _secrets)[:500])
    if completion is not None:
        span.set_attributes(
            {
                "gen_ai.response.model": completion.upstream_model or "",
                "gen_ai.response.finish_reasons": [completion.finish_reason],
                "gen_ai.usage.input_tokens": completion.usage.input_tokens,
                "gen_ai.usage.output_tokens": completion.usage.output_tokens,
            }
        )
    span.end(end_time=time.time_ns())
