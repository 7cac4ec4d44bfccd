"""Chooses the intent of a turn that came without one: the classifier agent if one is configured,
else (or when it faults) the built-in model trained from the flows file's examples."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
from asgi_correlation_id import correlation_id

from orchestrator_flows.core.errors import AgentBadResponse, AgentFault, ConfigError
from orchestrator_flows.core.flows import FlowConfig, Stage
from orchestrator_flows.core.intents import (
    NO_MATCH,
    Alternative,
    IntentChoice,
    NoMatchReason,
    Thresholds,
    choice_from_ranking,
)
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.ops.metrics import Metrics

log = structlog.get_logger("orchestrator.intents")
CLASSIFY_TASK = "classify_intent"  # the data part's `task`: what a classifier agent is asked

# Asks the classifier agent (its circuit and retries included): (words, data) -> reply or fault.
AskAgent = Callable[[str, dict[str, Any]], Awaitable[AgentReply | AgentFault]]


class Scored(Protocol):
    intent: str
    confidence: float


class Classification(Protocol):
    best: str | None
    confidence: float
    alternatives: Sequence[Scored]
    no_match_reason: str | None


class IntentModel(Protocol):
    """The built-in model (orchestrator_flows/intents): trained once, then read-only."""

    def classify(self, text: str, allowed: Sequence[str], thresholds: Any) -> Classification: ...


async def trained_chooser(
    flows: FlowConfig, metrics: Metrics, *, cache_dir: Path, use_encoder: bool
) -> IntentChooser:
    """The chooser, its model trained from the flows file's examples (none: no model)."""
    if not flows.examples:
        return IntentChooser(flows, None, metrics)
    started = time.perf_counter()
    try:
        examples = tuple(flows.examples.items())
        model = await asyncio.to_thread(_trained, examples, cache_dir, use_encoder)
    except ValueError as refused:
        raise ConfigError(f"[examples] cannot train the intent classifier: {refused}") from None
    log.info(
        "intent_model_trained",
        model=model.description,
        intents=len(flows.examples),
        examples=sum(map(len, flows.examples.values())),
        seconds=round(time.perf_counter() - started, 3),
        fingerprint=model.fingerprint(),
    )
    return IntentChooser(flows, model, metrics, _model_thresholds)


def _trained(
    examples: tuple[tuple[str, tuple[str, ...]], ...], cache_dir: Path, use_encoder: bool
) -> Any:
    """One model per process for the same examples: it is read-only once trained, and every
    app built in the process (tests build many) may share it, wherever its cache is."""
    key = (examples, use_encoder)
    with _TRAINING:
        if (model := _MODELS.get(key)) is None:
            from orchestrator_flows.intents.model import IntentModel

            model = IntentModel.train(dict(examples), cache_dir=cache_dir, use_encoder=use_encoder)
            _MODELS[key] = model
    return model


_MODELS: dict[tuple[Any, bool], Any] = {}
_TRAINING = threading.Lock()


def _model_thresholds(thresholds: Thresholds) -> Any:
    from orchestrator_flows.intents.model import Thresholds as ModelThresholds

    return ModelThresholds(confidence=thresholds.confidence, margin=thresholds.margin)


class IntentChooser:
    def __init__(
        self,
        flows: FlowConfig,
        model: IntentModel | None,
        metrics: Metrics,
        model_thresholds: Callable[[Thresholds], Any] = lambda t: t,
    ):
        self._flows = flows
        self._model = model
        self._metrics = metrics
        # Made once per stage, not per turn: the intents the model may choose among (those with
        # examples) and the stage's thresholds as the model takes them (its own type).
        self._offered = {
            stage: [i for i in flows.allowed_intents(stage) if i in flows.examples]
            for stage in Stage
        }
        self._model_thresholds = {
            stage: model_thresholds(flows.classifier.thresholds[stage]) for stage in Stage
        }

    async def choose(self, words: str, stage: Stage, ask_agent: AskAgent | None) -> IntentChoice:
        thresholds = self._flows.classifier.thresholds[stage]
        choice = None
        if ask_agent is not None and self._flows.classifier.agent_role is not None:
            choice = await self._ask_agent(words, stage, thresholds, ask_agent)
        if choice is None:
            choice = await self._ask_model(words, stage, thresholds)
        result = choice.no_match_reason or "matched"
        self._metrics.classifications_by(stage.label, choice.classifier, result).inc()
        return choice

    async def _ask_model(self, words: str, stage: Stage, thresholds: Thresholds) -> IntentChoice:
        allowed = self._offered[stage]
        if self._model is None or not allowed:
            return choice_from_ranking([], thresholds, "model")
        started = time.perf_counter()
        # In a worker thread: the model's few milliseconds of CPU never hold the event loop.
        found = await asyncio.to_thread(
            self._model.classify, words, allowed, self._model_thresholds[stage]
        )
        self._metrics.classification_seconds_by("model").observe(time.perf_counter() - started)
        ranked: list[Alternative] = []
        if found.best is not None:
            ranked.append({"intent": found.best, "confidence": _unit(found.confidence)})
        for other in found.alternatives:
            ranked.append({"intent": other.intent, "confidence": _unit(other.confidence)})
        reason = _model_reason(found.no_match_reason)
        return choice_from_ranking(ranked, thresholds, "model", reason=reason)

    async def _ask_agent(
        self, words: str, stage: Stage, thresholds: Thresholds, ask_agent: AskAgent
    ) -> IntentChoice | None:
        """The agent's choice, or None (after saying why) when the model must choose instead."""
        allowed = self._flows.allowed_intents(stage)
        started = time.perf_counter()
        answer = await ask_agent(words, self._question(stage, allowed))
        self._metrics.classification_seconds_by("agent").observe(time.perf_counter() - started)
        try:
            if isinstance(answer, AgentFault):
                raise answer
            ranked, declined = read_agent_answer(answer, allowed)
        except AgentFault as fault:
            self._metrics.classifier_agent_faults_by(fault.code).inc()
            # By code only: a fault's message may quote the agent, and the agent the caller
            # (docs/security.md: log lines carry neither's words).
            log.warning(
                "classifier_agent_fallback",
                stage=stage.value,
                error=fault.code,
                request_id=correlation_id.get(),
            )
            return None
        reason: NoMatchReason | None = "low_confidence" if declined else None
        return choice_from_ranking(ranked, thresholds, "agent", reason=reason)

    def _question(self, stage: Stage, allowed: list[str]) -> dict[str, Any]:
        """The data part a classifier agent receives (docs/flows.md, "The classifier agent")."""
        examples = self._flows.examples
        return {
            "task": CLASSIFY_TASK,
            "flow_id": stage.value,
            "flow_label": stage.label,
            "intents": [
                {"intent": intent, "examples": list(examples.get(intent, ()))} for intent in allowed
            ],
        }


def read_agent_answer(reply: AgentReply, allowed: list[str]) -> tuple[list[Alternative], bool]:
    """The agent's ranking, best first, from the first data part naming an `intent`, and whether
    it declined (intent "no_match"). AgentBadResponse if it is not the documented shape."""
    answer = next((d for d in reply.data if isinstance(d, dict) and "intent" in d), None)
    if answer is None:
        raise AgentBadResponse("the classifier agent's answer has no data part with an intent")
    known = set(allowed)
    first = _scored(answer, known | {NO_MATCH})
    rest = answer.get("alternatives", [])
    if not isinstance(rest, list):
        raise AgentBadResponse("the classifier agent's alternatives are not a list")
    ranked = [first, *(_scored(item, known) for item in rest)]
    ranked = [r for r in ranked if r["intent"] != NO_MATCH]
    ranked.sort(key=lambda r: -r["confidence"])
    return ranked, first["intent"] == NO_MATCH


def _scored(item: Any, known: set[str]) -> Alternative:
    if not isinstance(item, dict):
        raise AgentBadResponse("the classifier agent's answer holds a non-object ranking")
    intent, confidence = item.get("intent"), item.get("confidence")
    if not isinstance(intent, str) or intent not in known:
        raise AgentBadResponse(
            f"the classifier agent named {str(intent)[:64]!r}, not an intent of the call's stage"
        )
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise AgentBadResponse("the classifier agent's confidence is not a number")
    if not 0 <= confidence <= 1 or math.isnan(confidence):
        raise AgentBadResponse("the classifier agent's confidence is not within 0 to 1")
    return {"intent": intent, "confidence": round(float(confidence), 4)}


def _unit(confidence: float) -> float:
    """A probability, rounded; a broken model's NaN is no confidence at all."""
    value = float(confidence)
    return 0.0 if math.isnan(value) else round(min(max(value, 0.0), 1.0), 4)


def _model_reason(reason: str | None) -> NoMatchReason | None:
    # The model's thresholds are ours (judge applies them again); its own gate is kept.
    return "unlike_examples" if reason == "unlike_examples" else None
