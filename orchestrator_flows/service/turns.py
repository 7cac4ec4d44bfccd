"""One turn of a call, end to end: lease and read, decide, call the agent, commit the step."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import orjson
import structlog
from asgi_correlation_id import correlation_id

from orchestrator_flows.core.errors import (
    AgentFault,
    AgentUnavailable,
    CallSizeLimit,
    IdempotencyKeyReused,
    OrchestratorError,
    StoreUnavailable,
)
from orchestrator_flows.core.flows import FlowConfig, Stage
from orchestrator_flows.core.intents import IntentChoice
from orchestrator_flows.core.masking.mask import (
    MaskingPolicy,
    mask_caller_words,
    mask_json,
    mask_text,
)
from orchestrator_flows.core.models import (
    CallState,
    OrchestrateRequest,
    OrchestrateResponse,
    PendingTask,
    StepRecord,
    StoredAnswer,
)
from orchestrator_flows.core.routing import (
    DEFAULT_MAX_STEPS,
    CallSize,
    TurnPlan,
    admit_turn,
    plan_turn,
)
from orchestrator_flows.core.transitions import (
    Outcome,
    Transition,
    TurnContext,
    apply_outcome,
    new_call,
)
from orchestrator_flows.infra.a2a_client import A2AClient
from orchestrator_flows.infra.a2a_stream import StreamListener
from orchestrator_flows.infra.redis_store import Lease, RedisStore
from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.service.breakers import Breakers
from orchestrator_flows.service.fingerprints import fingerprint
from orchestrator_flows.service.intent_choice import IntentChooser

log = structlog.get_logger("orchestrator.turns")
Clock = Callable[[], datetime]
MESSAGE_IDS = uuid.UUID("5b0e7c1e-4f7a-4a57-9a43-0c2f3f1d7a10")  # namespace for uuid5


def utc_now() -> datetime:
    return datetime.now(UTC)


class TurnAnswer(NamedTuple):
    status_code: int
    body: bytes  # JSON, exactly as first given, so that a replay is byte for byte the same
    replayed: bool = False


@dataclass(frozen=True)
class Unsaved:
    """An agent's answer whose commit failed: what it was for and what it would have written."""

    fingerprint: str
    based_on: CallState | None  # the state the turn read (None: a new call)
    transition: Transition


MAX_UNSAVED = 10_000  # per process; the oldest are dropped first


class TurnListener(StreamListener, Protocol):
    """Hears a turn as it runs: `admitted` once every check before the agent call passed (the
    agent is about to be called), then the agent's task states and words as they come."""

    def admitted(self) -> None: ...


@dataclass(frozen=True)
class TurnRules:
    max_steps: int = DEFAULT_MAX_STEPS
    masking: MaskingPolicy = field(default_factory=MaskingPolicy)
    # The key of the Idempotency-Key fingerprint (fingerprints.py); replicas must share it.
    fingerprint_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)


class TurnService:
    def __init__(
        self,
        store: RedisStore,
        agents: A2AClient,
        flows: FlowConfig,
        breakers: Breakers,
        metrics: Metrics,
        rules: TurnRules | None = None,
        clock: Clock = utc_now,
        intents: IntentChooser | None = None,
    ):
        self._store = store
        self._agents = agents
        self._flows = flows
        self._breakers = breakers
        self._metrics = metrics
        self._rules = rules or TurnRules()
        self._clock = clock
        self._intents = intents or IntentChooser(flows, None, metrics)
        self._unsaved: OrderedDict[tuple[str, str], Unsaved] = OrderedDict()
        self._detached: set[asyncio.Task[None]] = set()
        # The logger as configured now, bound once: the module's lazy proxy would look the
        # bound logger up again for every turn's line.
        self._log = log.bind()

    async def run_turn(
        self,
        turn: OrchestrateRequest,
        idempotency_key: str = "",
        api_key_id: str | None = None,
        listener: TurnListener | None = None,
    ) -> TurnAnswer:
        # Only a keyed turn is ever compared with another: no key, no fingerprint to compute.
        fingerprint = self._fingerprint(turn) if idempotency_key else ""
        start = await self._store.begin_turn(turn.call_identify_id, idempotency_key)
        if start.replay is not None:
            return _replay(start.replay, fingerprint, idempotency_key)
        lease = start.lease
        try:
            stage = self._admit(start.state, turn, start.held_bytes)
            state = start.state or new_call(turn, self._clock())
            unsaved = self._unsaved.pop((turn.call_identify_id, idempotency_key), None)
            if unsaved and unsaved.fingerprint == fingerprint and unsaved.based_on == start.state:
                transition = unsaved.transition  # the agent already answered this very turn
                if listener is not None:
                    listener.admitted()
                    if said := transition.step["response_data"].get("text"):
                        listener.chunk(said)  # what the agent said then, told now
            else:
                message_id = _message_id(turn, idempotency_key)
                choice = await self._choose_intent(turn, stage, message_id)
                plan = self._plan(start.state, turn, start.held_bytes, choice)
                if listener is not None:
                    listener.admitted()
                ctx = (turn, plan, message_id, idempotency_key, api_key_id, listener)
                transition = await self._call_agent(state, *ctx)
            masked = self._masked(transition, stage)
            await self._commit(lease, start.state, state, transition, masked, fingerprint)
        except BaseException:
            await self._store.give_back(lease)
            raise
        self._count(transition, is_new=start.state is None)
        _log_turn(self._log, transition)
        # The client hears the agent as it spoke; only the stored copies are masked.
        return TurnAnswer(200, orjson.dumps(_answer(transition)))

    def detach(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` (a streamed turn) to its end whoever waits for it; `drain` awaits it."""
        task = asyncio.create_task(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def drain(self, timeout: float) -> None:
        """At shutdown: lets streamed turns whose client left reach their commit."""
        if self._detached:
            await asyncio.wait(set(self._detached), timeout=timeout)

    def _admit(self, stored: CallState | None, turn: OrchestrateRequest, held: int) -> Stage:
        size = CallSize(held, self._store.max_call_bytes)
        with self._counting_refusal(stored, turn.intent):
            return admit_turn(self._flows, stored, turn, self._rules.max_steps, size)

    def _plan(
        self,
        stored: CallState | None,
        turn: OrchestrateRequest,
        held: int,
        choice: IntentChoice | None,
    ) -> TurnPlan:
        size = CallSize(held, self._store.max_call_bytes)
        with self._counting_refusal(stored, choice.intent if choice else turn.intent):
            return plan_turn(self._flows, stored, turn, self._rules.max_steps, size, choice)

    @contextmanager
    def _counting_refusal(self, stored: CallState | None, intent: str | None) -> Iterator[None]:
        try:
            yield
        except OrchestratorError as refused:
            stage = Stage.of(stored["current_flow_id"]) if stored else Stage.GREETING
            label = self._metrics.intent_label(intent) if intent else "none"
            self._metrics.turns_by(stage.label, label, "rejected", refused.code).inc()
            raise

    async def _choose_intent(
        self, turn: OrchestrateRequest, stage: Stage, message_id: str
    ) -> IntentChoice | None:
        """The classifier's choice for a turn without an intent; None when the client chose."""
        if turn.intent is not None:
            return None
        role = self._flows.classifier.agent_role

        async def ask_agent(words: str, data: dict[str, Any]) -> Outcome:
            assert role is not None
            # Its own messageId, the same on a retry of the turn: classifying has no effect.
            classify_id = str(uuid.uuid5(MESSAGE_IDS, f"{message_id}|classify"))
            context = _call_context(turn, stage, None)
            # Classifying changes nothing: safe to send again after any fault, in the deadline.
            return await self._guarded_send(
                role,
                self._flows.agents[role],
                words,
                context,
                classify_id,
                idempotent=True,
                data=data,
            )

        return await self._intents.choose(turn.input_message, stage, ask_agent if role else None)

    def _count(self, transition: Transition, *, is_new: bool) -> None:
        step, summary, m = transition.step, transition.state["session_summary"], self._metrics
        code = step["error"]["code"] if step["error"] else ""
        intent = m.intent_label(step["intent"])
        m.turns_by(step["flow_label"], intent, step["response_status"], code).inc()
        if is_new:
            m.calls_started.inc()
        if summary:
            m.calls_completed.inc()
            m.call_seconds.observe(summary["duration_sec"])

    async def _commit(
        self,
        lease: Lease,
        read: CallState | None,
        base: CallState,
        transition: Transition,
        masked: Transition,
        fingerprint: str,
    ) -> None:
        """Writes the masked step; `read` is what the turn found, `base` what it built on."""
        key = lease.idempotency_key
        # A replay answers from Redis, which never holds personal data: it has the masked copy.
        replay = orjson.dumps(_answer(masked)).decode() if key else ""
        remembered = (
            StoredAnswer(fingerprint=fingerprint, status_code=200, body=replay) if key else None
        )
        try:
            await self._store.commit_step(
                lease, base["step_count"], masked.state, masked.step, remembered
            )
        except CallSizeLimit as refused:
            self._refused_after_the_agent(transition, refused)
            raise CallSizeLimit(
                f"the agent answered, but {refused.message}: start a new call",
                **refused.details,
                agent_called=True,
            ) from None
        except StoreUnavailable:
            # Redis failed after the agent acted. Keep its answer so that the client's retry
            # with the same Idempotency-Key commits it instead of asking the agent again.
            if key:
                self._remember_unsaved(lease.call_id, key, Unsaved(fingerprint, read, transition))
            raise

    def _refused_after_the_agent(self, transition: Transition, refused: OrchestratorError) -> None:
        """Counted and logged: the agent acted, and the trail will not say so."""
        step, m = transition.step, self._metrics
        m.turns_by(
            step["flow_label"], m.intent_label(step["intent"]), "rejected", refused.code
        ).inc()
        self._log.warning(
            "turn_not_recorded",
            call_identify_id=transition.state["call_identify_id"],
            intent=step["intent"],
            agent=step["agent_role"],
            error=refused.code,
            request_id=correlation_id.get(),
        )

    def _remember_unsaved(self, call_id: str, key: str, unsaved: Unsaved) -> None:
        self._unsaved[(call_id, key)] = unsaved
        while len(self._unsaved) > MAX_UNSAVED:
            self._unsaved.popitem(last=False)

    async def _call_agent(
        self,
        state: CallState,
        turn: OrchestrateRequest,
        plan: TurnPlan,
        message_id: str,
        idempotency_key: str,
        api_key_id: str | None,
        listener: TurnListener | None,
    ) -> Transition:
        started = self._clock()
        outcome = await self._guarded_send(
            plan.role,
            plan.agent_url,
            turn.input_message,
            _call_context(turn, plan.stage, plan.intent),
            message_id,
            continues=plan.continues,
            idempotent=plan.idempotent,
            listener=listener,
        )
        ctx = TurnContext(
            turn,
            plan,
            message_id,
            started,
            self._clock(),
            idempotency_key=idempotency_key or None,
            api_key_id=api_key_id,
        )
        return apply_outcome(state, ctx, outcome)

    def _masked(self, transition: Transition, stage: Stage) -> Transition:
        """The transition as Redis may hold it: what the caller and the agent said, masked.
        The answer's ids and states are the protocol's, not words (and are stored as
        a2a_task_id, a2a_context_id and a2a_task_state beside it)."""
        step, policy = transition.step, self._rules.masking
        said = mask_caller_words(
            step["input_message"], policy, authentication=stage is Stage.AUTHENTICATION
        )
        response, error = step["response_data"], step["error"]
        if error is not None:
            error = {
                "code": error["code"],
                "message": mask_text(error["message"], policy, said.secrets),
            }
            response = response | {"error": error}  # the fault as outcome_response shaped it
        else:
            response = response | {
                "text": mask_text(response["text"], policy, said.secrets),
                "data": mask_json(response["data"], policy, said.secrets),
            }
        masked: StepRecord = {
            **step,
            "input_message": said.text,
            "response_data": response,
            "error": error,
        }
        return Transition(transition.state, masked)

    def _fingerprint(self, turn: OrchestrateRequest) -> str:
        """What a reused Idempotency-Key is compared by: the whole request, digits included,
        under a key Redis never sees, so that what Redis keeps gives away no short code."""
        return fingerprint(self._rules.fingerprint_key, turn)

    async def _guarded_send(
        self,
        role: str,
        url: str,
        words: str,
        context: dict[str, Any],
        message_id: str,
        *,
        continues: PendingTask | None = None,
        idempotent: bool = False,
        data: dict[str, Any] | None = None,
        listener: StreamListener | None = None,
    ) -> Outcome:
        """The agent's answer or fault, through the agent's circuit breaker."""
        try:
            self._breakers.admit(role)
        except AgentUnavailable as refused:
            self._metrics.agent_faults_by(role, refused.code).inc()
            return refused
        started = time.perf_counter()
        if listener is not None:
            listener = heard = _FirstWords(listener, started, self._metrics, role)
        try:
            outcome: Outcome = await self._agents.send_message(
                url,
                words,
                context,
                message_id=message_id,
                continues=continues,
                idempotent=idempotent,
                data=data,
                listener=listener,
            )
        except AgentFault as fault:
            outcome = fault
        except BaseException:
            self._breakers.abandon(role)  # cancelled: no verdict on the agent
            raise
        fault = outcome if isinstance(outcome, AgentFault) else None
        self._breakers.record(role, fault)
        self._metrics.agent_seconds_by(role).observe(time.perf_counter() - started)
        if fault:
            self._metrics.agent_faults_by(role, fault.code).inc()
            if listener is not None and heard.spoken:
                self._metrics.agent_streams_cut_by(role, fault.code).inc()
        return outcome


class _FirstWords:
    """Passes a streamed answer on, timing the agent's first words."""

    def __init__(
        self, listener: StreamListener, started: float, metrics: Metrics, role: str
    ) -> None:
        self._listener = listener
        self._started = started
        self._observe = metrics.agent_first_chunk_seconds_by(role).observe
        self.spoken = False

    def status(self, state: str) -> None:
        self._listener.status(state)

    def chunk(self, text: str) -> None:
        if not self.spoken:
            self.spoken = True
            self._observe(time.perf_counter() - self._started)
        self._listener.chunk(text)


def _message_id(turn: OrchestrateRequest, idempotency_key: str) -> str:
    """A client's retry (same Idempotency-Key) reaches the agent with the same messageId."""
    if not idempotency_key:
        return str(uuid.uuid4())
    return str(uuid.uuid5(MESSAGE_IDS, f"{turn.call_identify_id}|{idempotency_key}"))


def _replay(stored: StoredAnswer, fingerprint: str, idempotency_key: str) -> TurnAnswer:
    if stored["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request; use a new key",
            idempotency_key=idempotency_key,
        )
    return TurnAnswer(stored["status_code"], stored["body"].encode(), replayed=True)


def _call_context(turn: OrchestrateRequest, stage: Stage, intent: str | None) -> dict[str, Any]:
    return {
        "call_identify_id": turn.call_identify_id,
        "account_id": turn.account_id,
        "eci": turn.eci,
        "flow_id": int(stage),
        "flow_label": stage.label,
        "intent": intent,
    }


def _answer(transition: Transition) -> OrchestrateResponse:
    state, step = transition.state, transition.step
    next_stage = None if state["is_complete"] else Stage.of(state["current_flow_id"])
    return {
        "call_identify_id": state["call_identify_id"],
        "intent_flow_id": step["intent_flow_id"],
        "flow_label": step["flow_label"],
        "intent": step["intent"],
        "intent_source": step["intent_source"],
        "intent_confidence": step["intent_confidence"],
        "intent_alternatives": step["intent_alternatives"],
        "no_match_reason": step["no_match_reason"],
        "status": "error" if step["response_status"] == "error" else "success",
        "response": step["response_data"],
        "response_status": step["response_status"],
        "agent_role": step["agent_role"],
        "next_flow_id": int(next_stage) if next_stage else None,
        "next_flow_label": next_stage.label if next_stage else None,
        "is_complete": state["is_complete"],
        "step_seq": step["seq"],
        "session_summary": state["session_summary"],
    }


def _log_turn(logger: structlog.typing.FilteringBoundLogger, transition: Transition) -> None:
    step = transition.step
    logger.info(
        "turn",
        call_identify_id=transition.state["call_identify_id"],
        stage=step["intent_flow_id"],
        flow_label=step["flow_label"],
        intent=step["intent"],
        intent_source=step["intent_source"],
        intent_confidence=step["intent_confidence"],
        no_match_reason=step["no_match_reason"],
        agent=step["agent_role"],
        outcome=step["response_status"],
        error=step["error"]["code"] if step["error"] else None,
        seq=step["seq"],
        attempts=step["attempts"],
        api_key_id=step["api_key_id"],
        duration_ms=step["duration_ms"],
        request_id=correlation_id.get(),
        timestamp=step["timestamp"],
    )
