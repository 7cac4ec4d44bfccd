"""The circuit breaker: an agent that keeps failing stops costing callers its timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.conftest import Caller, MisbehaverServer, RedisView, ServiceFactory
from tests.support.misbehavers import Held, HttpStatus, InTurn, JsonRpcError
from tests.support.timing import FakeClock, Gate

pytestmark = pytest.mark.integration

RESET_SEC = 30  # by the fake clock: it passes when the test says so


async def _circuit(caller: Caller, role: str = "greeting") -> dict[str, Any]:
    listed = (await caller.http.get("/agents")).json()
    return next(agent["circuit"] for agent in listed if agent["role"] == role)


async def _fault_code(caller: Caller, call_id: str = "CALL-001") -> str | None:
    answer = await caller.turn("greeting", call_id=call_id)
    assert answer.status_code == 200, answer.text
    return answer.json()["response"].get("error", {}).get("code")


async def test_open_circuit_answers_agent_unavailable_at_once_and_records_it(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = Held(Gate())  # never opened: the agent does not answer
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        breaker_clock=FakeClock(),
        a2a_timeout_sec=0.5,
        agent_circuit_failures=2,
        agent_circuit_reset_sec=RESET_SEC,
    )
    assert [await _fault_code(caller), await _fault_code(caller)] == ["agent_timeout"] * 2

    answer = await caller.turn("greeting")

    assert answer.status_code == 200
    assert answer.json()["status"] == "error"
    # At once: the agent is not asked, so the turn does not wait for its timeout.
    assert answer.json()["response"]["error"]["code"] == "agent_unavailable"
    assert agent.requests == 2
    steps = store.steps()
    assert [(s["error"]["code"], s["attempts"]) for s in steps] == [
        ("agent_timeout", 1),
        ("agent_timeout", 1),
        ("agent_unavailable", 0),
    ]
    assert store.state()["current_flow_id"] == 1
    circuit = await _circuit(caller)
    assert (circuit["state"], circuit["consecutive_faults"]) == ("open", 2)
    assert circuit["last_fault"]["code"] == "agent_timeout"
    ready = await caller.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["agents"]["greeting"] == "open"
    assert ready.json()["agents"]["auth"] == "closed"


async def test_after_the_reset_period_one_probe_closes_the_circuit_of_a_recovered_agent(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent, clock = HttpStatus(500, times=2), FakeClock()
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        breaker_clock=clock,
        agent_circuit_failures=2,
        agent_circuit_reset_sec=RESET_SEC,
    )
    codes = [await _fault_code(caller) for _ in range(2)]
    clock.advance(RESET_SEC - 1)
    codes.append(await _fault_code(caller))
    clock.advance(1)

    probe = await caller.turn("greeting")

    assert codes == ["agent_http_error", "agent_http_error", "agent_unavailable"]
    assert probe.json()["status"] == "success"
    assert probe.json()["next_flow_id"] == 2
    assert store.steps()[-1]["attempts"] == 1
    assert agent.requests == 3
    circuit = await _circuit(caller)
    assert (circuit["state"], circuit["consecutive_faults"]) == ("closed", 0)
    assert (await caller.http.get("/readyz")).json()["agents"]["greeting"] == "closed"


async def test_a_failed_probe_opens_the_circuit_again(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer
) -> None:
    agent, clock = HttpStatus(500), FakeClock()
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        breaker_clock=clock,
        agent_circuit_failures=2,
        agent_circuit_reset_sec=RESET_SEC,
    )
    assert [await _fault_code(caller) for _ in range(2)] == ["agent_http_error"] * 2
    clock.advance(RESET_SEC)

    probe = await _fault_code(caller)
    after = await _fault_code(caller)
    clock.advance(RESET_SEC - 1)  # a whole period again, counted from the failed probe
    still = await _fault_code(caller)

    assert (probe, after, still) == ("agent_http_error", "agent_unavailable", "agent_unavailable")
    assert agent.requests == 3
    assert (await _circuit(caller))["state"] == "open"


async def test_while_the_probe_runs_other_calls_are_not_let_through(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView, gate: Gate
) -> None:
    # Fails twice, then recovers slowly: the probe is held until the test opens the gate.
    agent, clock = InTurn(HttpStatus(500), HttpStatus(500), Held(gate)), FakeClock()
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        breaker_clock=clock,
        agent_circuit_failures=2,
        agent_circuit_reset_sec=RESET_SEC,
    )
    assert [await _fault_code(caller, "CALL-A") for _ in range(2)] == ["agent_http_error"] * 2
    clock.advance(RESET_SEC)

    probe = asyncio.create_task(caller.turn("greeting", call_id="CALL-A"))
    await gate.arrived()
    during = await _fault_code(caller, "CALL-B")
    circuit_during = await _circuit(caller)
    gate.open()
    probed = await probe
    after = await _fault_code(caller, "CALL-B")

    assert during == "agent_unavailable"
    assert circuit_during["state"] == "half_open"
    assert probed.json()["status"] == "success"
    assert after is None
    assert agent.requests == 4
    assert [s["attempts"] for s in store.steps("CALL-B")] == [0, 1]


async def test_agent_that_answers_errors_keeps_its_circuit_closed(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer
) -> None:
    agent = JsonRpcError()
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        agent_circuit_failures=2,
        agent_circuit_reset_sec=30,
    )

    codes = [await _fault_code(caller) for _ in range(3)]

    assert codes == ["agent_error"] * 3
    assert agent.requests == 3
    circuit = await _circuit(caller)
    assert (circuit["state"], circuit["consecutive_faults"]) == ("closed", 0)
