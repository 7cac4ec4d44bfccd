"""What a turn's outcome does to a call: the new state and its audit step. Pure code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from orchestrator_flows.core.errors import AgentError, AgentFault, AgentTaskFailed
from orchestrator_flows.core.flows import Stage
from orchestrator_flows.core.intents import NO_MATCH
from orchestrator_flows.core.models import (
    CallState,
    OrchestrateRequest,
    PendingTask,
    ResponseStatus,
    SessionSummary,
    StageOutcome,
    StepRecord,
)
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.core.routing import TurnPlan

Outcome = AgentReply | AgentFault


class TurnContext(NamedTuple):
    """Facts about the turn that the pure code needs but must not fetch itself."""

    turn: OrchestrateRequest
    plan: TurnPlan
    message_id: str
    started_at: datetime
    finished_at: datetime
    idempotency_key: str | None = None
    api_key_id: str | None = None  # who sent the turn (auth.Caller.key_id)


class Transition(NamedTuple):
    state: CallState
    step: StepRecord


def new_call(turn: OrchestrateRequest, now: datetime) -> CallState:
    stamp = iso(now)
    return {
        "call_identify_id": turn.call_identify_id,
        "account_id": turn.account_id,
        "eci": turn.eci,
        "current_flow_id": int(Stage.GREETING),
        "completed_flows": [],
        "is_complete": False,
        "step_count": 0,
        "error_steps": 0,
        "created_at": stamp,
        "updated_at": stamp,
        "pending_tasks": {},
        "stages": {},
        "session_summary": None,
        "no_match_streak": 0,
        "escalation": None,
    }


def apply_outcome(state: CallState, ctx: TurnContext, outcome: Outcome) -> Transition:
    plan = ctx.plan
    status = response_status(outcome)
    step = _step_record(state["step_count"] + 1, ctx, outcome, status)
    # A new state with its own containers (whose records are replaced, never changed):
    # `state` stays as read.
    new: CallState = {
        **state,
        "step_count": step["seq"],
        "error_steps": state["error_steps"] + (status == "error"),
        "updated_at": step["timestamp"],
        "pending_tasks": _pending_after(state["pending_tasks"], plan, outcome),
        "stages": dict(state["stages"]),
        "completed_flows": list(state["completed_flows"]),
    }
    if not plan.is_fallback:
        _count_stage(new, plan, status)
    if status == "success" and not plan.is_fallback:
        _complete_stage(new, plan.stage, step["timestamp"])
    _count_no_matches(new, plan, step["timestamp"])
    return Transition(state=new, step=step)


def _count_no_matches(state: CallState, plan: TurnPlan, stamp: str) -> None:
    """The classifier's no-matches in a row at a stage: any other turn, or a new stage, starts
    the count again; at the plan's limit the call goes to CLOSING, or ends if it is there."""
    if plan.choice is None or not plan.choice.no_match or state["current_flow_id"] != plan.stage:
        state["no_match_streak"] = 0
        return
    state["no_match_streak"] += 1
    if plan.no_match_limit is None or state["no_match_streak"] < plan.no_match_limit:
        return
    state["no_match_streak"] = 0
    state["escalation"] = "no_match"
    state["pending_tasks"] = {}
    key = str(int(plan.stage))
    before = state["stages"].get(key) or _pending_stage(plan.stage)
    state["stages"][key] = {**before, "outcome": "no_match", "intent": NO_MATCH}
    if plan.stage is Stage.CLOSING:
        state["is_complete"] = True
        state["session_summary"] = summarise(state, stamp)
    else:
        state["current_flow_id"] = int(Stage.CLOSING)


def response_status(outcome: Outcome) -> ResponseStatus:
    if isinstance(outcome, AgentFault):
        return "error"
    return "input_required" if outcome.needs_input else "success"


def outcome_response(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, AgentFault):
        return {"error": {"code": outcome.code, "message": outcome.message}}
    return outcome.as_response()


def _step_record(
    seq: int, ctx: TurnContext, outcome: Outcome, status: ResponseStatus
) -> StepRecord:
    plan = ctx.plan
    fault = outcome if isinstance(outcome, AgentFault) else None
    choice = plan.choice
    return {
        "seq": seq,
        "intent_flow_id": int(plan.stage),
        "flow_label": plan.stage.label,
        "intent": plan.intent,
        "intent_source": "classifier" if choice else "client",
        "intent_confidence": choice.confidence if choice else None,
        "intent_alternatives": list(choice.alternatives) if choice else [],
        "no_match_reason": choice.no_match_reason if choice else None,
        "intent_classifier": choice.classifier if choice else None,
        "input_message": ctx.turn.input_message,
        "agent_role": plan.role,
        "a2a_agent_url": plan.agent_url,
        "fallback": plan.is_fallback,
        "response_status": status,
        "response_data": outcome_response(outcome),
        "error": {"code": fault.code, "message": fault.message} if fault else None,
        "a2a_message_id": ctx.message_id,
        "attempts": outcome.attempts,
        "idempotency_key": ctx.idempotency_key,
        "api_key_id": ctx.api_key_id,
        "a2a_task_id": fault.task_id if fault else outcome.task_id,
        "a2a_context_id": None if fault else outcome.context_id,
        "a2a_task_state": fault.task_state if fault else outcome.task_state,
        "duration_ms": round((ctx.finished_at - ctx.started_at).total_seconds() * 1000, 3),
        "timestamp": iso(ctx.finished_at),
    }


def _pending_after(
    pending: dict[str, PendingTask], plan: TurnPlan, outcome: Outcome
) -> dict[str, PendingTask]:
    after = dict(pending)
    if isinstance(outcome, AgentReply) and outcome.needs_input and outcome.task_id:
        after[plan.role] = {"task_id": outcome.task_id, "context_id": outcome.context_id}
    elif isinstance(outcome, AgentReply | AgentError | AgentTaskFailed):
        # The agent answered: its task is finished or it refused to continue it, so the next
        # turn starts afresh. After a transport fault the task may still be waiting; keep it.
        after.pop(plan.role, None)
    return after


def _count_stage(state: CallState, plan: TurnPlan, status: ResponseStatus) -> None:
    flow_id = int(plan.stage)
    key = str(flow_id)
    before = state["stages"].get(key)
    state["stages"][key] = {
        "flow_id": flow_id,
        "flow_label": plan.stage.label,
        "steps": (before["steps"] if before else 0) + 1,
        "errors": (before["errors"] if before else 0) + (status == "error"),
        "outcome": "success" if before and before["outcome"] == "success" else status,
        "intent": plan.intent,
        "agent_role": plan.role,
    }


def _complete_stage(state: CallState, stage: Stage, stamp: str) -> None:
    state["completed_flows"].append(int(stage))
    state["pending_tasks"].clear()  # tasks left waiting belong to the stage just finished
    if (following := stage.next) is not None:
        state["current_flow_id"] = int(following)
        return
    state["is_complete"] = True
    state["session_summary"] = summarise(state, stamp)


def summarise(state: CallState, completed_at: str) -> SessionSummary:
    started = datetime.fromisoformat(state["created_at"])
    ended = datetime.fromisoformat(completed_at)
    return {
        "call_identify_id": state["call_identify_id"],
        "account_id": state["account_id"],
        "outcome": "no_match" if state["escalation"] == "no_match" else "completed",
        "started_at": state["created_at"],
        "completed_at": completed_at,
        "duration_sec": round((ended - started).total_seconds(), 3),
        "total_steps": state["step_count"],
        "error_steps": state["error_steps"],
        "completed_flows": list(state["completed_flows"]),
        "stages": [state["stages"].get(str(int(s))) or _pending_stage(s) for s in Stage],
    }


def _pending_stage(stage: Stage) -> StageOutcome:
    return {
        "flow_id": int(stage),
        "flow_label": stage.label,
        "steps": 0,
        "errors": 0,
        "outcome": "pending",
        "intent": None,
        "agent_role": None,
    }


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
