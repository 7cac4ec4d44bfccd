"""apply_outcome: what an agent's answer (or fault) does to a call and its audit step. Pure."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentDisconnected,
    AgentError,
    AgentFault,
    AgentTaskFailed,
    AgentTimeout,
    AgentUnreachable,
)
from orchestrator_flows.core.flows import Stage
from orchestrator_flows.core.models import CallState, OrchestrateRequest
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.core.routing import TurnPlan
from orchestrator_flows.core.transitions import (
    Outcome,
    Transition,
    TurnContext,
    apply_outcome,
    new_call,
    summarise,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLE_OF = {
    Stage.GREETING: ("greeting", "greeting"),
    Stage.AUTHENTICATION: ("otp_verify", "auth"),
    Stage.INTENT_CAPTURE: ("refund_request", "refund"),
    Stage.FULFILLMENT: ("process_refund", "refund"),
    Stage.CLOSING: ("closing", "closing"),
}
DONE = AgentReply(text="done", kind="message", context_id="ctx-9")
ASK_OTP = AgentReply(
    text="Please tell me the code.",
    kind="task",
    task_id="task-1",
    context_id="ctx-1",
    task_state="input_required",
)


def request(intent: str, message: str = "hello") -> OrchestrateRequest:
    return OrchestrateRequest(
        call_identify_id="CALL-1",
        account_id="ACC-1",
        eci="ECI-1",
        input_message=message,
        intent=intent,
    )


def plan_for(stage: Stage, *, fallback: bool = False) -> TurnPlan:
    intent, role = ("weather_chat", "fallback") if fallback else ROLE_OF[stage]
    return TurnPlan(
        stage=stage,
        intent=intent,
        role=role,
        agent_url=f"http://agents.test/{role}/",
        is_fallback=fallback,
        continues=None,
    )


def apply(
    state: CallState,
    outcome: Outcome,
    *,
    stage: Stage | None = None,
    fallback: bool = False,
    at: datetime = T0 + timedelta(seconds=1),
    took: timedelta = timedelta(milliseconds=250),
) -> Transition:
    plan = plan_for(stage or Stage(state["current_flow_id"]), fallback=fallback)
    ctx = TurnContext(request(plan.intent), plan, "msg-1", at - took, at)
    return apply_outcome(state, ctx, outcome)


@pytest.fixture
def fresh() -> CallState:
    return new_call(request("greeting"), T0)


def at_stage(stage: Stage, **fields) -> CallState:
    state = new_call(request("greeting"), T0)
    return {  # type: ignore[typeddict-item]
        **state,
        "current_flow_id": stage.value,
        "completed_flows": list(range(1, stage.value)),
        "step_count": stage.value - 1,
        **fields,
    }


def test_new_call_starts_at_greeting_with_no_steps() -> None:
    state = new_call(request("greeting"), T0)

    assert state["current_flow_id"] == 1
    assert state["step_count"] == 0
    assert state["completed_flows"] == []
    assert state["created_at"] == state["updated_at"] == "2025-01-01T12:00:00.000000Z"


def test_success_moves_the_call_to_the_next_stage(fresh: CallState) -> None:
    result = apply(fresh, DONE)

    assert result.state["current_flow_id"] == 2
    assert result.state["completed_flows"] == [1]
    assert result.state["is_complete"] is False
    assert result.state["stages"]["1"]["outcome"] == "success"
    assert result.state["updated_at"] == "2025-01-01T12:00:01.000000Z"


def test_success_step_records_the_agents_answer(fresh: CallState) -> None:
    step = apply(fresh, DONE).step

    assert step["seq"] == 1
    assert step["intent_flow_id"] == 1
    assert step["flow_label"] == "GREETING"
    assert step["agent_role"] == "greeting"
    assert step["a2a_agent_url"] == "http://agents.test/greeting/"
    assert step["response_status"] == "success"
    assert step["response_data"]["text"] == "done"
    assert step["a2a_message_id"] == "msg-1"
    assert step["a2a_context_id"] == "ctx-9"
    assert step["error"] is None
    assert step["duration_ms"] == 250.0
    assert step["timestamp"] == "2025-01-01T12:00:01.000000Z"


def test_input_required_stays_and_remembers_the_task() -> None:
    result = apply(at_stage(Stage.AUTHENTICATION), ASK_OTP)

    assert result.state["current_flow_id"] == 2
    assert result.state["completed_flows"] == [1]
    assert result.state["pending_tasks"] == {"auth": {"task_id": "task-1", "context_id": "ctx-1"}}
    assert result.state["stages"]["2"]["outcome"] == "input_required"
    assert result.step["response_status"] == "input_required"
    assert result.step["a2a_task_id"] == "task-1"
    assert result.step["a2a_task_state"] == "input_required"


def test_answered_question_completes_the_stage_and_forgets_the_task() -> None:
    waiting = apply(at_stage(Stage.AUTHENTICATION), ASK_OTP).state
    verified = AgentReply(
        text="identity verified", kind="task", task_id="task-1", task_state="completed"
    )

    result = apply(waiting, verified)

    assert result.state["current_flow_id"] == 3
    assert result.state["pending_tasks"] == {}
    assert result.state["stages"]["2"]["steps"] == 2
    assert result.state["stages"]["2"]["outcome"] == "success"


@pytest.mark.parametrize(
    "fault",
    [
        AgentTimeout("agent did not answer within 15s"),
        AgentUnreachable("cannot connect to agent: refused"),
        AgentDisconnected("connection to agent broke: ReadError"),
        AgentBadResponse("agent answer is not JSON"),
    ],
    ids=lambda f: f.code,
)
def test_transport_fault_stays_and_keeps_the_waiting_task(fault: AgentFault) -> None:
    pending = {"task_id": "task-1", "context_id": "ctx-1"}
    state = at_stage(Stage.AUTHENTICATION, pending_tasks={"auth": pending})

    result = apply(state, fault)

    assert result.state["current_flow_id"] == 2
    assert result.state["pending_tasks"] == {"auth": pending}
    assert result.step["response_status"] == "error"
    assert result.step["error"] is not None
    assert result.step["error"]["code"] == fault.code
    assert result.step["error"]["message"] == fault.message
    assert result.step["response_data"] == {"error": {"code": fault.code, "message": fault.message}}
    assert result.state["stages"]["2"]["errors"] == 1
    assert result.state["stages"]["2"]["outcome"] == "error"


@pytest.mark.parametrize(
    "fault",
    [
        AgentError("agent JSON-RPC error -32603: agent exploded"),
        AgentTaskFailed("agent task failed: cannot do that", task_id="task-1", task_state="failed"),
    ],
    ids=lambda f: f.code,
)
def test_agent_refusal_stays_and_drops_the_waiting_task(fault: AgentFault) -> None:
    pending = {"task_id": "task-1", "context_id": "ctx-1"}
    state = at_stage(Stage.AUTHENTICATION, pending_tasks={"auth": pending})

    result = apply(state, fault)

    assert result.state["current_flow_id"] == 2
    assert result.state["pending_tasks"] == {}
    assert result.step["error"] is not None
    assert result.step["error"]["code"] == fault.code
    assert result.step["a2a_task_id"] == fault.task_id
    assert result.step["a2a_task_state"] == fault.task_state


def test_fault_for_one_agent_keeps_another_agents_task() -> None:
    pending = {"task_id": "task-1", "context_id": None}
    state = at_stage(Stage.INTENT_CAPTURE, pending_tasks={"billing": pending})

    result = apply(state, AgentError("agent JSON-RPC error -32603: boom"))

    assert result.state["pending_tasks"] == {"billing": pending}


def test_fallback_success_never_moves_the_call_on() -> None:
    state = at_stage(Stage.INTENT_CAPTURE)

    result = apply(state, DONE, fallback=True)

    assert result.state["current_flow_id"] == 3
    assert result.state["completed_flows"] == [1, 2]
    assert result.state["stages"] == {}
    assert result.step["fallback"] is True
    assert result.step["agent_role"] == "fallback"
    assert result.step["response_status"] == "success"
    assert result.state["step_count"] == 3


def test_step_numbers_follow_each_other(fresh: CallState) -> None:
    first = apply(fresh, AgentTimeout("slow"))
    second = apply(first.state, DONE, at=T0 + timedelta(seconds=5))

    assert [first.step["seq"], second.step["seq"]] == [1, 2]
    assert second.state["step_count"] == 2
    assert second.state["stages"]["1"]["steps"] == 2
    assert second.state["stages"]["1"]["errors"] == 1
    assert second.state["stages"]["1"]["outcome"] == "success"


def test_input_state_is_not_changed() -> None:
    waiting = apply(at_stage(Stage.AUTHENTICATION), ASK_OTP).state
    before = copy.deepcopy(waiting)

    apply(waiting, AgentReply(text="ok", kind="task", task_id="task-1", task_state="completed"))

    assert waiting == before


def test_closing_success_completes_the_call_with_a_summary(fresh: CallState) -> None:
    state, clock = fresh, T0
    script = [DONE, ASK_OTP, DONE, AgentTimeout("slow"), DONE, DONE, DONE]
    for outcome in script:
        clock += timedelta(seconds=10)
        state = apply(state, outcome, at=clock).state

    assert state["is_complete"] is True
    assert state["completed_flows"] == [1, 2, 3, 4, 5]
    assert state["current_flow_id"] == 5
    summary = state["session_summary"]
    assert summary is not None
    assert summary["call_identify_id"] == "CALL-1"
    assert summary["account_id"] == "ACC-1"
    assert summary["started_at"] == "2025-01-01T12:00:00.000000Z"
    assert summary["completed_at"] == "2025-01-01T12:01:10.000000Z"
    assert summary["duration_sec"] == 70.0
    assert summary["total_steps"] == 7
    assert summary["error_steps"] == 1
    assert summary["completed_flows"] == [1, 2, 3, 4, 5]
    assert [s["outcome"] for s in summary["stages"]] == ["success"] * 5
    assert [s["steps"] for s in summary["stages"]] == [1, 2, 2, 1, 1]
    roles = [s["agent_role"] for s in summary["stages"]]
    assert roles == ["greeting", "auth", "refund", "refund", "closing"]


def test_summary_error_steps_count_every_step_that_failed(fresh: CallState) -> None:
    state, clock = fresh, T0
    script = [
        (DONE, False),
        (DONE, False),
        (AgentTimeout("slow"), True),  # the fallback agent failed to answer an odd question
        (DONE, False),
        (DONE, False),
        (DONE, False),
    ]
    for outcome, fallback in script:
        clock += timedelta(seconds=10)
        state = apply(state, outcome, fallback=fallback, at=clock).state

    summary = state["session_summary"]
    assert summary is not None
    assert summary["total_steps"] == 6
    assert summary["error_steps"] == 1


def test_failed_closing_turn_does_not_complete_the_call() -> None:
    result = apply(at_stage(Stage.CLOSING), AgentTimeout("slow"))

    assert result.state["is_complete"] is False
    assert result.state["session_summary"] is None
    assert result.state["completed_flows"] == [1, 2, 3, 4]


def test_summary_lists_untouched_stages_as_pending(fresh: CallState) -> None:
    state = apply(fresh, DONE).state

    summary = summarise(state, "2025-01-01T12:00:30.000000Z")

    assert [s["outcome"] for s in summary["stages"]] == ["success"] + ["pending"] * 4
    assert [s["flow_label"] for s in summary["stages"]] == [s.label for s in Stage]
    assert summary["duration_sec"] == 30.0
    assert summary["total_steps"] == 1
