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
from orchestrator_flows.core.intents import IntentChoice, Thresholds, choice_from_ranking
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


# Turns the classifier chose for: the step's intent fields, and no-matches in a row.

RULES = Thresholds(confidence=0.5, margin=0.1)
MATCHED = choice_from_ranking(
    [
        {"intent": "refund_request", "confidence": 0.87},
        {"intent": "billing_inquiry", "confidence": 0.08},
        {"intent": "booking_request", "confidence": 0.03},
    ],
    RULES,
    "model",
)
NO_MATCH_CHOICE = choice_from_ranking(
    [
        {"intent": "refund_request", "confidence": 0.55},
        {"intent": "billing_inquiry", "confidence": 0.5},
    ],
    RULES,
    "agent",
)


def classified_plan(
    stage: Stage, choice: IntentChoice, *, limit: int | None = 3, role: str | None = None
) -> TurnPlan:
    role = role or ("fallback" if choice.no_match else ROLE_OF[stage][1])
    return TurnPlan(
        stage=stage,
        intent=choice.intent,
        role=role,
        agent_url=f"http://agents.test/{role}/",
        is_fallback=choice.no_match,
        continues=None,
        choice=choice,
        no_match_limit=limit,
    )


def apply_plan(
    state: CallState, plan: TurnPlan, outcome: Outcome = DONE, *, seconds: int = 1
) -> Transition:
    at = T0 + timedelta(seconds=seconds)
    ctx = TurnContext(request(plan.intent), plan, "msg-1", at, at)
    return apply_outcome(state, ctx, outcome)


def no_matches(state: CallState, times: int, *, limit: int | None = 3) -> CallState:
    for _ in range(times):
        stage = Stage(state["current_flow_id"])
        state = apply_plan(state, classified_plan(stage, NO_MATCH_CHOICE, limit=limit)).state
    return state


def test_classifier_step_records_the_choice() -> None:
    step = apply_plan(
        at_stage(Stage.INTENT_CAPTURE), classified_plan(Stage.INTENT_CAPTURE, MATCHED)
    ).step

    assert step["intent"] == "refund_request"
    assert step["intent_source"] == "classifier"
    assert step["intent_confidence"] == 0.87
    assert step["intent_alternatives"] == [
        {"intent": "billing_inquiry", "confidence": 0.08},
        {"intent": "booking_request", "confidence": 0.03},
    ]
    assert step["no_match_reason"] is None
    assert step["intent_classifier"] == "model"
    assert step["fallback"] is False


def test_no_match_step_records_the_reason_and_the_intents_not_taken() -> None:
    state = at_stage(Stage.INTENT_CAPTURE)

    step = apply_plan(state, classified_plan(Stage.INTENT_CAPTURE, NO_MATCH_CHOICE)).step

    assert step["intent"] == "no_match"
    assert step["intent_source"] == "classifier"
    assert step["intent_confidence"] == 0.55
    assert [a["intent"] for a in step["intent_alternatives"]] == [
        "refund_request",
        "billing_inquiry",
    ]
    assert step["no_match_reason"] == "ambiguous"
    assert step["intent_classifier"] == "agent"
    assert step["agent_role"] == "fallback"
    assert step["fallback"] is True


def test_client_step_records_the_client_as_the_source_and_nothing_classified(
    fresh: CallState,
) -> None:
    step = apply(fresh, DONE).step

    assert step["intent_source"] == "client"
    assert step["intent_confidence"] is None
    assert step["intent_alternatives"] == []
    assert step["no_match_reason"] is None
    assert step["intent_classifier"] is None


def test_no_matches_in_a_row_are_counted_and_the_call_stays_below_the_limit() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 2)

    assert state["no_match_streak"] == 2
    assert state["current_flow_id"] == 3
    assert state["escalation"] is None
    assert state["stages"] == {}


def test_matched_turn_starts_the_count_again() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 2)

    # The refund agent faulted: the call stays at the stage, the count does not.
    after = apply_plan(state, classified_plan(Stage.INTENT_CAPTURE, MATCHED), AgentTimeout("slow"))

    assert after.state["current_flow_id"] == 3
    assert after.state["no_match_streak"] == 0
    assert no_matches(after.state, 2)["current_flow_id"] == 3


def test_client_turn_starts_the_count_again() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 2)

    after = apply(state, DONE, fallback=True)  # the client's own (unknown) intent

    assert after.state["no_match_streak"] == 0
    assert after.state["current_flow_id"] == 3


def test_no_match_limit_moves_the_call_to_closing_with_the_stage_outcome_no_match() -> None:
    waiting = {"refund": {"task_id": "task-1", "context_id": "ctx-1"}}
    state = no_matches(at_stage(Stage.INTENT_CAPTURE, pending_tasks=waiting), 3)

    assert state["current_flow_id"] == 5
    assert state["escalation"] == "no_match"
    assert state["no_match_streak"] == 0
    assert state["pending_tasks"] == {}
    assert state["completed_flows"] == [1, 2]
    assert state["stages"]["3"]["outcome"] == "no_match"
    assert state["stages"]["3"]["intent"] == "no_match"
    assert state["is_complete"] is False
    assert state["session_summary"] is None


def test_no_match_limit_keeps_what_the_stage_did_before() -> None:
    state = at_stage(Stage.INTENT_CAPTURE)
    state = apply_plan(state, classified_plan(Stage.INTENT_CAPTURE, MATCHED), ASK_OTP).state

    state = no_matches(state, 3)

    assert state["stages"]["3"]["steps"] == 1
    assert state["stages"]["3"]["agent_role"] == "refund"
    assert state["stages"]["3"]["outcome"] == "no_match"


def test_no_match_limit_at_closing_ends_the_call_with_the_outcome_no_match() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 3)

    state = no_matches(state, 3)

    assert state["is_complete"] is True
    summary = state["session_summary"]
    assert summary is not None
    assert summary["outcome"] == "no_match"
    assert summary["total_steps"] == 2 + 6
    outcomes = [s["outcome"] for s in summary["stages"]]
    assert outcomes == ["pending", "pending", "no_match", "pending", "no_match"]


def test_call_that_escalated_and_then_closed_keeps_the_outcome_no_match() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 3)

    state = apply(state, DONE).state  # the closing agent said goodbye

    assert state["is_complete"] is True
    assert state["session_summary"] is not None
    assert state["session_summary"]["outcome"] == "no_match"


def test_call_completed_through_its_stages_has_the_outcome_completed(fresh: CallState) -> None:
    state = fresh
    for _ in Stage:
        state = apply(state, DONE).state

    assert state["session_summary"] is not None
    assert state["session_summary"]["outcome"] == "completed"


def test_on_no_match_stay_never_escalates() -> None:
    state = no_matches(at_stage(Stage.INTENT_CAPTURE), 10, limit=None)

    assert state["current_flow_id"] == 3
    assert state["no_match_streak"] == 10
    assert state["escalation"] is None
    assert state["is_complete"] is False


def test_limit_of_one_escalates_at_the_first_no_match() -> None:
    state = no_matches(at_stage(Stage.AUTHENTICATION), 1, limit=1)

    assert state["current_flow_id"] == 5
    assert state["stages"]["2"]["outcome"] == "no_match"
