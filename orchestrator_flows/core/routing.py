"""The intent router: decides, without any I/O, what a turn means for a call.

Given the flow table, the call's stored state (or None for a new call) and the turn, it either
names the agent to call or raises the error that says why the turn is refused.
"""

from __future__ import annotations

from typing import NamedTuple

from orchestrator_flows.core.errors import (
    AccountMismatch,
    CallComplete,
    CallSizeLimit,
    CallStepLimit,
    IntentNotAllowed,
    UnknownIntent,
)
from orchestrator_flows.core.flows import FlowConfig, Stage
from orchestrator_flows.core.models import CallState, OrchestrateRequest, PendingTask


class TurnPlan(NamedTuple):
    stage: Stage
    intent: str
    role: str
    agent_url: str
    is_fallback: bool
    continues: PendingTask | None  # the A2A task this turn answers, if the agent asked
    idempotent: bool = False  # the agent deduplicates by messageId: safe to resend


DEFAULT_MAX_STEPS = 200


class CallSize(NamedTuple):
    """The bytes a call holds in Redis, and the most it may hold (MAX_CALL_BYTES)."""

    held: int
    limit: int


def plan_turn(
    flows: FlowConfig,
    state: CallState | None,
    turn: OrchestrateRequest,
    max_steps: int = DEFAULT_MAX_STEPS,
    size: CallSize | None = None,
) -> TurnPlan:
    stage = Stage.of(state["current_flow_id"]) if state else Stage.GREETING
    if state is not None:
        _check_call_accepts_turns(state, turn, max_steps)
    if size is not None:
        _check_call_has_room(size, turn)
    role, is_fallback = _route(flows, stage, turn.intent)
    continues = state["pending_tasks"].get(role) if state else None
    return TurnPlan(
        stage=stage,
        intent=turn.intent,
        role=role,
        agent_url=flows.agents[role],
        is_fallback=is_fallback,
        continues=continues,
        idempotent=role in flows.idempotent_roles,
    )


def _check_call_accepts_turns(state: CallState, turn: OrchestrateRequest, max_steps: int) -> None:
    call_id = state["call_identify_id"]
    # The account first: another account's client learns nothing more about the call.
    if state["account_id"] != turn.account_id:
        raise AccountMismatch(
            f"call {call_id} belongs to another account",
            call_identify_id=call_id,
        )
    if state["is_complete"]:
        raise CallComplete(
            f"call {call_id} is complete; start a new call for a new conversation",
            call_identify_id=call_id,
        )
    if state["step_count"] >= max_steps:
        raise CallStepLimit(
            f"call {call_id} has reached its limit of {max_steps} steps",
            call_identify_id=call_id,
            max_steps=max_steps,
        )


def _check_call_has_room(size: CallSize, turn: OrchestrateRequest) -> None:
    """Refuses, before the agent is called, a turn whose words alone would take the call past
    its limit (the step holds them and more); the commit checks the step it really writes."""
    if size.held + len(turn.input_message.encode()) > size.limit:
        call_id = turn.call_identify_id
        raise CallSizeLimit(
            f"call {call_id} holds {size.held} bytes of its limit of {size.limit}; this turn"
            " was not sent to an agent: start a new call",
            call_identify_id=call_id,
            max_call_bytes=size.limit,
            agent_called=False,
        )


def _route(flows: FlowConfig, stage: Stage, intent: str) -> tuple[str, bool]:
    table = flows.stages[stage]
    if intent in table:
        return table[intent], False
    intent_stage = flows.stage_of_intent.get(intent)
    allowed = flows.allowed_intents(stage)
    if intent_stage is not None:
        raise IntentNotAllowed(
            f"intent {intent!r} belongs to stage {intent_stage.value} ({intent_stage.label}); "
            f"the call is at stage {stage.value} ({stage.label})",
            current_flow_id=stage.value,
            current_flow_label=stage.label,
            intent_flow_id=intent_stage.value,
            allowed_intents=allowed,
        )
    if flows.fallback_role is not None:
        return flows.fallback_role, True
    raise UnknownIntent(
        f"intent {intent!r} is not known at any stage",
        current_flow_id=stage.value,
        current_flow_label=stage.label,
        allowed_intents=allowed,
    )
