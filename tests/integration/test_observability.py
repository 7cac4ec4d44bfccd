"""Metrics and /stats after real turns over real sockets: a timeout, a success, a rejection."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import AgentServer, ServiceFactory
from tests.support.agents import GatedAgent
from tests.support.timing import Gate

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_timeout_success_and_rejection_show_in_metrics_and_stats(
    make_service: ServiceFactory, serve_agent: AgentServer, gate: Gate
) -> None:
    slow = serve_agent(GatedAgent(gate))  # held until the test is over
    caller = make_service(agent_urls={"greeting": slow}, a2a_timeout_sec=0.3)

    timed_out = await caller.turn("greeting")
    rejected = await caller.turn("closing")
    text = (await caller.http.get("/metrics")).text
    stats = (await caller.http.get("/stats")).json()

    assert timed_out.json()["response"]["error"]["code"] == "agent_timeout"
    assert rejected.status_code == 409
    m = samples(text)
    turn = {"stage": "GREETING", "intent": "greeting", "outcome": "error", "code": "agent_timeout"}
    assert m[("orch_turns_total", frozenset(turn.items()))] == 1
    fault = {"agent": "greeting", "code": "agent_timeout"}
    assert m[("orch_agent_faults_total", frozenset(fault.items()))] == 1
    rejected_turn = {
        "stage": "GREETING", "intent": "closing", "outcome": "rejected",
        "code": "intent_not_allowed",
    }  # fmt: skip
    assert m[("orch_turns_total", frozenset(rejected_turn.items()))] == 1
    # The timed-out call counts with the whole 300 ms it cost; uvloop's timers keep time in
    # whole milliseconds, so the timeout may fire up to 1 ms early.
    assert stats["agents"]["greeting"]["mean_ms"] >= 299
    assert stats["agents"]["greeting"]["success_rate"] == 0.0
    assert stats["stages"]["GREETING"] == {"turns": 2, "errors": 1, "rejected": 1}
