"""Every way an agent can misbehave, served for real as the greeting agent: what the caller is
told, what the audit trail records, whether the call moves on, and how often the agent was asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    MisbehaverServer,
    RedisView,
    ServiceFactory,
    flows_with_idempotent_greeting,
)
from tests.support.agents import free_port
from tests.support.misbehavers import (
    QUESTION,
    AnyAgent,
    ClosesIdle,
    Garbage,
    Held,
    HttpStatus,
    Huge,
    InputRequired,
    JsonRpcError,
    Resetting,
    TaskFailed,
)
from tests.support.timing import Gate, eventually

pytestmark = pytest.mark.integration

A2A_TIMEOUT_SEC = 1.0


@dataclass(frozen=True)
class Fault:
    agent: Callable[[], AnyAgent] | None  # None: nothing listens on the agent's port
    status: str  # the answer's "status"
    response_status: str  # the step's
    code: str | None  # response.error.code and the step's error.code
    attempts: int
    # The agent deadline is the default (15 s), far longer than any agent here takes to
    # answer however loaded the machine, but for the one that never answers.
    settings: dict[str, Any] = field(default_factory=dict)
    min_sec: float = 0.0  # the caller waits at least this long (a deadline, a Retry-After)


FAULTS = {
    # Never answers (its gate is never opened).
    "slow": Fault(
        lambda: Held(Gate()),
        "error",
        "error",
        "agent_timeout",
        1,
        settings={"a2a_timeout_sec": A2A_TIMEOUT_SEC},
        min_sec=A2A_TIMEOUT_SEC,
    ),
    "http_500": Fault(lambda: HttpStatus(500), "error", "error", "agent_http_error", 1),
    "http_503_then_ok": Fault(
        lambda: HttpStatus(503, retry_after="0", times=1), "success", "success", None, 2
    ),
    "http_503_always": Fault(
        lambda: HttpStatus(503, retry_after="0"), "error", "error", "agent_http_error", 3
    ),
    # Retry-After is honoured: the second attempt waits the second the agent asked for...
    "http_429_then_ok": Fault(
        lambda: HttpStatus(429, retry_after="1", times=1),
        "success",
        "success",
        None,
        2,
        min_sec=1.0,
    ),
    # ...but never past the turn's deadline: the caller hears about it at once (waiting would
    # have ended in agent_timeout).
    "http_429_past_the_deadline": Fault(
        lambda: HttpStatus(429, retry_after="30"), "error", "error", "agent_http_error", 1
    ),
    "garbage": Fault(Garbage, "error", "error", "agent_bad_response", 1),
    "connection_reset": Fault(Resetting, "error", "error", "agent_disconnected", 1),
    "huge_body": Fault(Huge, "error", "error", "agent_bad_response", 1),
    "json_rpc_error": Fault(JsonRpcError, "error", "error", "agent_error", 1),
    "task_failed": Fault(TaskFailed, "error", "error", "agent_task_failed", 1),
    "input_required": Fault(InputRequired, "success", "input_required", None, 1),
    "connection_refused": Fault(None, "error", "error", "agent_unreachable", 3),
}
MOVES_ON = {"success": 2, "input_required": 1, "error": 1}  # the stage after the first turn


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_agent_fault_is_answered_recorded_and_retried_only_when_safe(
    fault: Fault,
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
) -> None:
    agent = fault.agent() if fault.agent else None
    url = serve_misbehaver(agent) if agent else f"http://127.0.0.1:{free_port()}/"
    caller = make_service(agent_urls={"greeting": url}, **fault.settings)

    started = time.monotonic()
    answer = await caller.turn("greeting", "hello")
    took = time.monotonic() - started

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["response_status"]) == (fault.status, fault.response_status)
    assert took >= fault.min_sec
    [step] = store.steps()
    assert step["response_status"] == fault.response_status
    assert step["attempts"] == fault.attempts
    state = store.state()
    assert state["current_flow_id"] == MOVES_ON[fault.response_status]
    assert state["completed_flows"] == ([1] if fault.response_status == "success" else [])
    if fault.code:
        assert body["response"]["error"]["code"] == fault.code
        assert step["error"]["code"] == fault.code
    else:
        assert step["error"] is None
    if fault.response_status == "input_required":
        assert body["response"]["text"] == QUESTION
        assert state["pending_tasks"]["greeting"]["task_id"] == body["response"]["task_id"]
    if agent is not None:
        # Each attempt reached the agent with the turn's one messageId.
        assert agent.message_ids == [step["a2a_message_id"]] * fault.attempts


async def test_reset_from_an_idempotent_agent_is_retried_with_the_same_message_id(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
    tmp_path: Path,
) -> None:
    agent = Resetting(times=1)
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        flows_file=flows_with_idempotent_greeting(tmp_path),
    )

    answer = await caller.turn("greeting", "hello")

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    assert answer.json()["next_flow_id"] == 2
    [step] = store.steps()
    assert (step["response_status"], step["attempts"]) == ("success", 2)
    assert agent.message_ids == [step["a2a_message_id"]] * 2
    listed = {a["role"]: a for a in (await caller.http.get("/agents")).json()}
    assert listed["greeting"]["idempotent"] is True
    assert listed["auth"]["idempotent"] is False


async def test_turn_sent_as_the_agent_closes_its_idle_connection_is_not_lost(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    # Agents served by uvicorn (a2a-sdk's usual server) close a connection idle for 5 s. Were
    # the service to keep pooled connections as long (httpx's default), a turn could go out on
    # a connection the agent is closing: never read, reset, reported as agent_disconnected
    # (seen under load in test_load.py). AGENT_KEEPALIVE_SEC (2 s) retires them before that.
    agent = ClosesIdle(idle_timeout=5.0, in_flight=1.0)
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})
    assert (await caller.turn("greeting", call_id="CALL-A")).json()["status"] == "success"
    await eventually(agent.closing, "the agent to be closing the connection it answered on")

    answer = await caller.turn("greeting", call_id="CALL-B")

    assert answer.json()["status"] == "success", answer.json()["response"]
    assert agent.requests == 2
    assert [s["response_status"] for s in store.steps("CALL-B")] == ["success"]
