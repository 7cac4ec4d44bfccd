"""One turn of a call, end to end: lease and read, decide, call the agent, commit the step."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from a2a_client import A2AClient
from errors import AgentFault, StoreUnavailable
from flows import FlowConfig, Stage
from models import CallState, OrchestrateRequest, OrchestrateResponse
from redis_store import Lease, RedisStore
from router import TurnPlan, plan_turn
from transitions import Outcome, Transition, TurnContext, apply_outcome, new_call

log = logging.getLogger("orchestrator.turns")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TurnService:
    def __init__(
        self, store: RedisStore, agents: A2AClient, flows: FlowConfig, clock: Clock = utc_now
    ):
        self._store = store
        self._agents = agents
        self._flows = flows
        self._clock = clock

    async def run_turn(self, turn: OrchestrateRequest) -> OrchestrateResponse:
        lease, stored = await self._store.begin_turn(turn.call_identify_id)
        try:
            plan = plan_turn(self._flows, stored, turn)
            state = stored or new_call(turn, self._clock())
            transition = await self._call_agent(state, plan, turn)
            await self._store.commit_step(
                lease, state.step_count, transition.state, transition.step
            )
        except BaseException:
            await self._release_quietly(lease)
            raise
        _log_turn(transition)
        return _answer(transition)

    async def _call_agent(
        self, state: CallState, plan: TurnPlan, turn: OrchestrateRequest
    ) -> Transition:
        message_id = str(uuid.uuid4())
        started = self._clock()
        outcome: Outcome
        try:
            outcome = await self._agents.send_message(
                plan.agent_url,
                turn.input_message,
                _call_context(turn, plan),
                message_id=message_id,
                continues=plan.continues,
            )
        except AgentFault as fault:
            outcome = fault
        ctx = TurnContext(turn, plan, message_id, started, self._clock())
        return apply_outcome(state, ctx, outcome)

    async def _release_quietly(self, lease: Lease) -> None:
        # The turn already failed; if Redis is down too, the lease expires by itself.
        try:
            await self._store.release(lease)
        except StoreUnavailable:
            log.warning("lease release failed call=%s; it will expire", lease.call_id)


def _call_context(turn: OrchestrateRequest, plan: TurnPlan) -> dict[str, Any]:
    return {
        "call_identify_id": turn.call_identify_id,
        "account_id": turn.account_id,
        "eci": turn.eci,
        "flow_id": plan.stage.value,
        "flow_label": plan.stage.label,
        "intent": turn.intent,
    }


def _answer(transition: Transition) -> OrchestrateResponse:
    state, step = transition.state, transition.step
    next_stage = None if state.is_complete else Stage(state.current_flow_id)
    return OrchestrateResponse(
        call_identify_id=state.call_identify_id,
        intent_flow_id=step.intent_flow_id,
        flow_label=step.flow_label,
        intent=step.intent,
        status="error" if step.response_status == "error" else "success",
        response=step.response_data,
        response_status=step.response_status,
        agent_role=step.agent_role,
        next_flow_id=next_stage.value if next_stage else None,
        next_flow_label=next_stage.label if next_stage else None,
        is_complete=state.is_complete,
        step_seq=step.seq,
        session_summary=state.session_summary,
    )


def _log_turn(transition: Transition) -> None:
    step = transition.step
    log.info(
        "turn call=%s stage=%s intent=%s agent=%s outcome=%s error=%s seq=%d duration_ms=%.1f",
        transition.state.call_identify_id,
        step.intent_flow_id,
        step.intent,
        step.agent_role,
        step.response_status,
        step.error.code if step.error else "-",
        step.seq,
        step.duration_ms,
    )
