"""Optional OpenTelemetry tracing: W3C `traceparent` from the caller, through the service, into
every agent call. Off unless OTEL_ENABLED=true; needs the `otel` extra
(`pip install -e ".[otel]"`). Exporter settings are OpenTelemetry's own OTEL_* variables.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from orchestrator_flows.core.errors import ConfigError


def enable_tracing(app: FastAPI) -> None:
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise ConfigError(
            'OTEL_ENABLED=true needs the tracing packages: pip install -e ".[otel]"'
        ) from exc
    if not _has_sdk_provider(trace.get_tracer_provider()):
        trace.set_tracer_provider(_provider_from_environment())
    # Its middleware wraps the whole stack, the turn middleware included: one server span per
    # request, turns too.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def traced(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """The transport, with a client span and `traceparent` on every agent call."""
    from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

    return AsyncOpenTelemetryTransport(transport)


def _has_sdk_provider(provider: object) -> bool:
    return type(provider).__module__.startswith("opentelemetry.sdk")


def _provider_from_environment() -> object:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator-flows"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
