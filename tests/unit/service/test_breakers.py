"""The circuit breaker per agent, driven by a fake clock."""

from __future__ import annotations

import pytest

from orchestrator_flows.core.errors import (
    AgentError,
    AgentHttpError,
    AgentTimeout,
    AgentUnavailable,
)
from orchestrator_flows.service.breakers import Breakers
from tests.support.timing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> Breakers:
    return Breakers(["refund", "billing"], threshold=3, reset_sec=30, clock=clock)


def fail(breakers: Breakers, role: str = "refund", times: int = 1) -> None:
    for _ in range(times):
        breakers.admit(role)
        breakers.record(role, AgentTimeout("agent did not answer"))


def test_circuit_opens_after_the_threshold_of_consecutive_faults(breakers: Breakers) -> None:
    fail(breakers, times=2)
    breakers.admit("refund")  # still closed after two

    breakers.record("refund", AgentHttpError("HTTP 500", status=500))

    with pytest.raises(AgentUnavailable, match="refund") as refused:
        breakers.admit("refund")
    assert refused.value.attempts == 0  # the step will say the agent was not called
    state = breakers.snapshot()["refund"]
    assert state["state"] == "open"
    assert state["consecutive_faults"] == 3
    assert state["last_fault"]["code"] == "agent_http_error"


def test_an_answer_resets_the_count(breakers: Breakers) -> None:
    fail(breakers, times=2)
    breakers.admit("refund")
    breakers.record("refund", None)
    fail(breakers, times=2)

    breakers.admit("refund")  # two in a row again, not four

    assert breakers.snapshot()["refund"]["state"] == "closed"


def test_an_agent_that_says_no_is_healthy(breakers: Breakers) -> None:
    fail(breakers, times=2)
    breakers.admit("refund")
    breakers.record("refund", AgentError("JSON-RPC error -32603"))
    fail(breakers, times=2)

    breakers.admit("refund")


def test_circuits_are_per_agent(breakers: Breakers) -> None:
    fail(breakers, "refund", times=3)

    breakers.admit("billing")

    assert breakers.snapshot()["billing"]["state"] == "closed"


def test_after_the_reset_period_one_probe_goes_through(
    breakers: Breakers, clock: FakeClock
) -> None:
    fail(breakers, times=3)
    clock.advance(30)

    breakers.admit("refund")  # the probe
    with pytest.raises(AgentUnavailable):
        breakers.admit("refund")  # others wait for its verdict
    assert breakers.snapshot()["refund"]["state"] == "half_open"


def test_a_successful_probe_closes_the_circuit(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, times=3)
    clock.advance(30)
    breakers.admit("refund")

    breakers.record("refund", None)

    assert breakers.snapshot()["refund"]["state"] == "closed"
    breakers.admit("refund")


def test_a_failed_probe_opens_it_again_for_a_full_period(
    breakers: Breakers, clock: FakeClock
) -> None:
    fail(breakers, times=3)
    clock.advance(30)
    fail(breakers)

    clock.advance(29)
    with pytest.raises(AgentUnavailable):
        breakers.admit("refund")
    clock.advance(1)
    breakers.admit("refund")


def test_an_abandoned_probe_lets_the_next_turn_probe(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, times=3)
    clock.advance(30)
    breakers.admit("refund")

    breakers.abandon("refund")

    breakers.admit("refund")
