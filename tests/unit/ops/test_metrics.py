"""Metrics, /stats, request ids and the turn's log line, after real turns (fakeredis, in-process
a2a-sdk agents)."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agents import FailingTaskAgent
from tests.support.service import Service


async def scrape(service: Service) -> dict[tuple[str, frozenset], float]:
    text = (await service.http.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def turns(stage: str, intent: str, outcome: str, code: str = "") -> tuple[str, frozenset]:
    labels = {"stage": stage, "intent": intent, "outcome": outcome, "code": code}
    return ("orch_turns_total", frozenset(labels.items()))


@pytest.fixture
async def failing_service(make_service) -> Service:
    # In-process agents cannot be timed out (httpx's ASGI transport does not cancel the app):
    # the timeout case runs against a real server in tests/integration/test_observability.py.
    return await make_service(agents={"refund": FailingTaskAgent()})


async def walk_with_every_outcome(service: Service) -> None:
    await service.turn("greeting")  # success
    await service.turn("verify_identity")  # input_required
    await service.turn("closing")  # rejected: wrong stage
    await service.turn("otp_verify", "123456")  # success
    await service.turn("refund_request")  # agent_task_failed
    await service.turn("blorp")  # fallback, an intent no stage knows


async def test_turns_are_counted_by_stage_intent_and_outcome(failing_service: Service) -> None:
    await walk_with_every_outcome(failing_service)

    m = await scrape(failing_service)

    assert m[turns("GREETING", "greeting", "success")] == 1
    assert m[turns("AUTHENTICATION", "verify_identity", "input_required")] == 1
    assert m[turns("AUTHENTICATION", "closing", "rejected", "intent_not_allowed")] == 1
    assert m[turns("INTENT_CAPTURE", "refund_request", "error", "agent_task_failed")] == 1
    assert m[turns("INTENT_CAPTURE", "unknown", "success")] == 1  # no label from request text
    assert (
        m[
            (
                "orch_agent_faults_total",
                frozenset({"agent": "refund", "code": "agent_task_failed"}.items()),
            )
        ]
        == 1
    )
    assert m[("orch_calls_started_total", frozenset())] == 1
    assert m[("orch_agent_call_seconds_count", frozenset({"agent": "auth"}.items()))] == 2
    assert (
        m[("orch_redis_command_seconds_count", frozenset({"operation": "commit_step"}.items()))]
        == 5
    )
    assert m[("orch_agent_circuit_state", frozenset({"agent": "refund"}.items()))] == 0


async def test_a_completed_call_is_counted_with_its_duration(service: Service) -> None:
    for intent, words in [
        ("greeting", "hi"), ("verify_identity", "me"), ("otp_verify", "123456"),
        ("refund_request", "r"), ("process_refund", "go"), ("closing", "bye"),
    ]:  # fmt: skip
        await service.turn(intent, words)

    m = await scrape(service)

    assert m[("orch_calls_completed_total", frozenset())] == 1
    assert m[("orch_call_duration_seconds_count", frozenset())] == 1


async def test_stats_answer_what_an_operator_asks_first(failing_service: Service) -> None:
    await walk_with_every_outcome(failing_service)

    stats = (await failing_service.http.get("/stats")).json()

    assert stats["agents"]["auth"]["calls"] == 2
    assert stats["agents"]["auth"]["success_rate"] == 1.0
    assert stats["agents"]["refund"]["success_rate"] == 0.0
    assert stats["agents"]["refund"]["mean_ms"] > 0
    assert stats["agents"]["greeting"]["p95_ms"] > 0
    assert stats["stages"]["AUTHENTICATION"] == {"turns": 3, "errors": 0, "rejected": 1}
    assert stats["stages"]["INTENT_CAPTURE"]["errors"] == 1
    assert stats["calls_started"] == 1 and stats["calls_completed"] == 0


async def test_request_id_is_returned_and_sent_to_the_agent(service: Service) -> None:
    given = await service.http.post(
        "/orchestrate",
        json={"call_identify_id": "C-1", "account_id": "A", "eci": "E",
              "input_message": "hi", "intent": "greeting"},
        headers={"X-Request-ID": "req-42"},
    )  # fmt: skip
    generated = await service.http.get("/session/NOPE")
    refused = await service.http.post("/orchestrate", content=b"x" * 70_000)

    assert given.headers["X-Request-ID"] == "req-42"
    posts = [r for r in service.agent_requests if r.method == "POST"]
    assert posts[0].headers["X-Request-ID"] == "req-42"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert refused.status_code == 413 and refused.headers["X-Request-ID"]


async def test_turn_log_line_carries_the_turn_facts_and_not_the_words(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    await service.http.post(
        "/orchestrate",
        json={"call_identify_id": "C-1", "account_id": "A", "eci": "E",
              "input_message": "my secret words", "intent": "greeting"},
        headers={"X-Request-ID": "req-7"},
    )  # fmt: skip

    logged = capsys.readouterr().err
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    events = [line for line in lines if line["event"] == "turn"]
    assert len(events) == 1
    event = events[0]
    assert event["call_identify_id"] == "C-1"
    assert event["stage"] == 1 and event["intent"] == "greeting" and event["agent"] == "greeting"
    assert event["outcome"] == "success" and event["attempts"] == 1
    assert event["request_id"] == "req-7"
    assert event["duration_ms"] >= 0
    assert event["logger"] == "orchestrator.turns" and event["level"] == "info"
    assert "my secret words" not in logged
    steps = (await service.http.get("/session/C-1/steps")).json()
    assert event["timestamp"] == steps[0]["timestamp"]  # the line and its audit step agree
