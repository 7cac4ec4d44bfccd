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
    IntentRequired,
    NoIntentMatched,
    UnknownIntent,
)
from orchestrator_flows.core.flows import FlowConfig, Stage
from orchestrator_flows.core.intents import IntentChoice, client_choice
from orchestrator_flows.core.models import CallState, OrchestrateRequest, PendingTask


class TurnPlan(NamedTuple):
    stage: Stage
    intent: str
    role: str
    agent_url: str
    is_fallback: bool
    continues: PendingTask | None  # the A2A task this turn answers, if the agent asked
    idempotent: bool = False  # the agent deduplicates by messageId: safe to resend
    choice: IntentChoice | None = None  # how the intent was chosen (None: sent by the client)
    # After this many no-matches in a row at the stage the call goes to CLOSING (None: never).
    no_match_limit: int | None = None


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
    choice: IntentChoice | None = None,
) -> TurnPlan:
    """The agent for the turn's intent: the client's, else `choice` (the classifier's, made
    after admit_turn said the call takes the turn)."""
    stage = admit_turn(flows, state, turn, max_steps, size)
    if choice is None:
        if turn.intent is None:
            raise _intent_required(flows, stage)
        choice = client_choice(turn.intent)
    if choice.no_match:
        role, is_fallback = _no_match_role(flows, stage, choice)
    else:
        role, is_fallback = _route(flows, stage, choice.intent)
    continues = state["pending_tasks"].get(role) if state else None
    rules = flows.classifier
    return TurnPlan(
        stage=stage,
        intent=choice.intent,
        role=role,
        agent_url=flows.agents[role],
        is_fallback=is_fallback,
        continues=continues,
        idempotent=role in flows.idempotent_roles,
        choice=None if choice.source == "client" else choice,
        no_match_limit=rules.no_match_limit if rules.on_no_match == "closing" else None,
    )


def admit_turn(
    flows: FlowConfig,
    state: CallState | None,
    turn: OrchestrateRequest,
    max_steps: int = DEFAULT_MAX_STEPS,
    size: CallSize | None = None,
) -> Stage:
    """The stage that takes the turn, or the error that refuses it before any agent is asked
    (a classifier agent included)."""
    stage = Stage.of(state["current_flow_id"]) if state else Stage.GREETING
    if state is not None:
        _check_call_accepts_turns(state, turn, max_steps)
    if size is not None:
        _check_call_has_room(size, turn)
    if turn.intent is None and not flows.classifiable(stage):
        raise _intent_required(flows, stage)
    return stage


def _intent_required(flows: FlowConfig, stage: Stage) -> IntentRequired:
    return IntentRequired(
        f"send an intent: no intent of stage {stage.value} ({stage.label}) has examples in the"
        " flows file, and no classifier agent is configured",
        current_flow_id=stage.value,
        current_flow_label=stage.label,
        allowed_intents=flows.allowed_intents(stage),
    )


def _no_match_role(flows: FlowConfig, stage: Stage, choice: IntentChoice) -> tuple[str, bool]:
    if flows.fallback_role is not None:
        return flows.fallback_role, True
    raise NoIntentMatched(
        f"no intent of stage {stage.value} ({stage.label}) fits what the caller said"
        f" ({choice.no_match_reason}), and no fallback agent is configured",
        current_flow_id=stage.value,
        current_flow_label=stage.label,
        allowed_intents=flows.allowed_intents(stage),
        no_match_reason=choice.no_match_reason,
        intent_alternatives=list(choice.alternatives),
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
