"""With OTEL_ENABLED the W3C trace context flows from the caller through the service into the
agent call (in-process app and agents, an in-memory span exporter)."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.service import Service

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry allows no second


def headers_seen_by_agents(service: Service) -> list[httpx.Headers]:
    return [r.headers for r in service.agent_requests if r.method == "POST"]


async def test_caller_trace_reaches_the_agent(make_service) -> None:
    service: Service = await make_service(otel_enabled=True)
    caller_trace = "0af7651916cd43dd8448eb211c80319c"

    await service.http.post(
        "/orchestrate",
        json={"call_identify_id": "C-1", "account_id": "A", "eci": "E",
              "input_message": "hi", "intent": "greeting"},
        headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"},
    )  # fmt: skip

    agent_headers = headers_seen_by_agents(service)
    assert agent_headers and agent_headers[-1]["traceparent"].split("-")[1] == caller_trace
    span_traces = {format(s.context.trace_id, "032x") for s in EXPORTER.get_finished_spans()}
    assert caller_trace in span_traces


async def test_without_otel_no_trace_header_is_sent(make_service) -> None:
    service: Service = await make_service()

    await service.turn("greeting")

    assert all("traceparent" not in h for h in headers_seen_by_agents(service))
