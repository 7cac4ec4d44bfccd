"""IntentChooser: the classifier agent when one is configured, else (or when it faults or answers
out of shape) the built-in model. A fake model and a fake agent stand in for both."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentError,
    AgentFault,
    AgentTaskFailed,
    AgentTimeout,
    AgentUnavailable,
    AgentUnreachable,
)
from orchestrator_flows.core.flows import FlowConfig, Stage, parse_flows
from orchestrator_flows.core.intents import NO_MATCH, Thresholds
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.service.intent_choice import IntentChooser
from tests.support.intent_models import FakeModel, Found, Scored
from tests.support.leaks import shows_test_card

EXAMPLES = {
    "refund_request": ["I want my money back", "quiero un reembolso"],
    "billing_inquiry": ["why is my bill so high"],
    "process_refund": ["go ahead with the refund"],
}
CARD_WORDS = "my card is 4111 1111 1111 1111"
CAPTURE_INTENTS = [
    "account_inquiry", "balance_inquiry", "billing_inquiry",
    "booking_request", "complaint", "refund_request",
]  # fmt: skip


REFUND = Found("refund_request", 0.9, [Scored("billing_inquiry", 0.06)])


@dataclass
class FakeAgent:
    """The classifier agent's reply (or fault) to every question; remembers each question."""

    answer: AgentReply | AgentFault
    asked: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, words: str, data: dict[str, Any]) -> AgentReply | AgentFault:
        self.asked.append((words, data))
        return self.answer


def agent_says(*data: Any) -> FakeAgent:
    return FakeAgent(AgentReply(text="", kind="message", data=list(data)))


def flows_with(*, agent: bool = False, **classifier: Any) -> FlowConfig:
    raw = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))
    raw["examples"] = EXAMPLES
    raw["classifier"] = classifier
    raw["agents"].pop("classifier", None)
    if agent:
        raw["agents"]["classifier"] = "http://agents.test/classifier/"
    return parse_flows(raw, {})


def metrics_for(flows: FlowConfig) -> Metrics:
    return Metrics(set(flows.stage_of_intent), dict)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def fallbacks(metrics: Metrics, code: str) -> float:
    return sample(metrics, "orch_classifier_agent_fallbacks_total", code=code)


# The built-in model.


async def test_model_match_is_the_turns_intent_with_its_alternatives() -> None:
    flows = flows_with(confidence=0.5, margin=0.1)
    metrics = metrics_for(flows)
    model = FakeModel(REFUND)

    choice = await IntentChooser(flows, model, metrics).choose(
        "give me my money", Stage.INTENT_CAPTURE, None
    )

    assert choice.intent == "refund_request"
    assert choice.source == "classifier"
    assert choice.classifier == "model"
    assert choice.confidence == 0.9
    assert choice.alternatives == ({"intent": "billing_inquiry", "confidence": 0.06},)
    assert choice.no_match_reason is None
    assert model.asked[0][0] == "give me my money"
    labels = {"stage": "INTENT_CAPTURE", "classifier": "model", "result": "matched"}
    assert sample(metrics, "orch_intent_classifications_total", **labels) == 1


async def test_model_is_offered_only_the_stages_intents_that_have_examples() -> None:
    flows = flows_with()
    model = FakeModel(REFUND)

    await IntentChooser(flows, model, metrics_for(flows)).choose("hi", Stage.INTENT_CAPTURE, None)

    assert model.asked[0][1] == ["billing_inquiry", "refund_request"]


async def test_thresholds_are_the_stages_own_override() -> None:
    flows = flows_with(confidence=0.5, margin=0.1, stages={"3": {"confidence": 0.95}})
    model = FakeModel(REFUND)
    chooser = IntentChooser(flows, model, metrics_for(flows))

    at_capture = await chooser.choose("hi", Stage.INTENT_CAPTURE, None)
    model.found = Found("process_refund", 0.9)
    at_fulfilment = await chooser.choose("hi", Stage.FULFILLMENT, None)

    assert [asked[2] for asked in model.asked] == [Thresholds(0.95, 0.1), Thresholds(0.5, 0.1)]
    assert at_capture.intent == NO_MATCH
    assert at_capture.no_match_reason == "low_confidence"
    assert at_capture.alternatives[0] == {"intent": "refund_request", "confidence": 0.9}
    assert at_fulfilment.intent == "process_refund"


async def test_model_thresholds_are_handed_over_in_the_models_own_type() -> None:
    flows = flows_with(confidence=0.4, margin=0.2)
    model = FakeModel(REFUND)
    chooser = IntentChooser(flows, model, metrics_for(flows), lambda t: ("as-model", *t))

    await chooser.choose("hi", Stage.INTENT_CAPTURE, None)

    assert model.asked[0][2] == ("as-model", 0.4, 0.2)


async def test_models_own_unlike_examples_gate_stands() -> None:
    flows = flows_with(confidence=0.1)
    metrics = metrics_for(flows)
    model = FakeModel(Found("refund_request", 0.9, [], no_match_reason="unlike_examples"))

    choice = await IntentChooser(flows, model, metrics).choose(
        "weather?", Stage.INTENT_CAPTURE, None
    )

    assert choice.intent == NO_MATCH
    assert choice.no_match_reason == "unlike_examples"
    labels = {"stage": "INTENT_CAPTURE", "classifier": "model", "result": "unlike_examples"}
    assert sample(metrics, "orch_intent_classifications_total", **labels) == 1


async def test_models_other_reasons_are_judged_again_by_our_thresholds() -> None:
    flows = flows_with(confidence=0.5, margin=0.1)
    model = FakeModel(Found("refund_request", 0.9, [], no_match_reason="low_confidence"))

    choice = await IntentChooser(flows, model, metrics_for(flows)).choose(
        "hi", Stage.INTENT_CAPTURE, None
    )

    assert choice.intent == "refund_request"


async def test_models_confidences_are_held_within_0_and_1() -> None:
    flows = flows_with()
    model = FakeModel(Found("refund_request", 1.0000002, [Scored("billing_inquiry", -1e-9)]))

    choice = await IntentChooser(flows, model, metrics_for(flows)).choose(
        "hi", Stage.INTENT_CAPTURE, None
    )

    assert choice.confidence == 1.0
    assert choice.alternatives == ({"intent": "billing_inquiry", "confidence": 0.0},)


async def test_stage_without_examples_is_a_no_match_and_the_model_is_not_asked() -> None:
    flows = flows_with()
    model = FakeModel(REFUND)

    choice = await IntentChooser(flows, model, metrics_for(flows)).choose(
        "hi", Stage.AUTHENTICATION, None
    )

    assert (choice.intent, choice.no_match_reason) == (NO_MATCH, "no_examples")
    assert model.asked == []


async def test_without_a_model_every_turn_is_a_no_match() -> None:
    flows = flows_with()

    choice = await IntentChooser(flows, None, metrics_for(flows)).choose(
        "hi", Stage.INTENT_CAPTURE, None
    )

    assert (choice.intent, choice.no_match_reason) == (NO_MATCH, "no_examples")


# The classifier agent.


async def test_agents_answer_is_used_and_the_model_not_asked() -> None:
    flows = flows_with(agent=True, confidence=0.5, margin=0.1)
    metrics = metrics_for(flows)
    model = FakeModel(REFUND)
    agent = agent_says(
        {
            "intent": "billing_inquiry",
            "confidence": 0.8,
            "alternatives": [{"intent": "refund_request", "confidence": 0.15}],
        }
    )

    choice = await IntentChooser(flows, model, metrics).choose("bill?", Stage.INTENT_CAPTURE, agent)

    assert choice.intent == "billing_inquiry"
    assert choice.classifier == "agent"
    assert choice.confidence == 0.8
    assert choice.alternatives == ({"intent": "refund_request", "confidence": 0.15},)
    assert model.asked == []
    assert [words for words, _ in agent.asked] == ["bill?"]
    labels = {"stage": "INTENT_CAPTURE", "classifier": "agent", "result": "matched"}
    assert sample(metrics, "orch_intent_classifications_total", **labels) == 1


async def test_agents_confidence_is_held_to_the_stages_thresholds() -> None:
    flows = flows_with(agent=True, confidence=0.5, margin=0.1)
    model = FakeModel(REFUND)
    agent = agent_says({"intent": "billing_inquiry", "confidence": 0.4})

    choice = await IntentChooser(flows, model, metrics_for(flows)).choose(
        "bill?", Stage.INTENT_CAPTURE, agent
    )

    assert choice.intent == NO_MATCH
    assert choice.no_match_reason == "low_confidence"
    assert choice.classifier == "agent"
    assert model.asked == []


async def test_agents_no_match_is_a_no_match_keeping_its_alternatives() -> None:
    flows = flows_with(agent=True, confidence=0.1)
    agent = agent_says(
        {
            "intent": "no_match",
            "confidence": 0.9,
            "alternatives": [{"intent": "complaint", "confidence": 0.2}],
        }
    )

    choice = await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "weather?", Stage.INTENT_CAPTURE, agent
    )

    assert choice.intent == NO_MATCH
    assert choice.no_match_reason == "low_confidence"
    assert choice.classifier == "agent"
    assert choice.alternatives == ({"intent": "complaint", "confidence": 0.2},)


async def test_agents_answer_is_read_from_the_first_data_part_naming_an_intent() -> None:
    flows = flows_with(agent=True)
    agent = agent_says("a note", {"reasoning": "it is about a bill"}, {
        "intent": "complaint",
        "confidence": 1,
    })  # fmt: skip

    choice = await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "angry", Stage.INTENT_CAPTURE, agent
    )

    assert (choice.intent, choice.confidence) == ("complaint", 1.0)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([], id="no-data-part"),
        pytest.param([{"confidence": 0.9}], id="no-intent"),
        pytest.param([{"intent": "greeting", "confidence": 0.9}], id="intent-of-another-stage"),
        pytest.param([{"intent": "weather_chat", "confidence": 0.9}], id="unknown-intent"),
        pytest.param([{"intent": 7, "confidence": 0.9}], id="intent-not-a-string"),
        pytest.param([{"intent": "complaint"}], id="no-confidence"),
        pytest.param([{"intent": "complaint", "confidence": 1.5}], id="confidence-above-1"),
        pytest.param([{"intent": "complaint", "confidence": -0.1}], id="confidence-below-0"),
        pytest.param([{"intent": "complaint", "confidence": float("nan")}], id="confidence-nan"),
        pytest.param([{"intent": "complaint", "confidence": True}], id="confidence-bool"),
        pytest.param([{"intent": "complaint", "confidence": "0.9"}], id="confidence-string"),
        pytest.param(
            [{"intent": "complaint", "confidence": 0.9, "alternatives": "refund_request"}],
            id="alternatives-not-a-list",
        ),
        pytest.param(
            [{"intent": "complaint", "confidence": 0.9, "alternatives": ["refund_request"]}],
            id="alternative-not-an-object",
        ),
        pytest.param(
            [
                {
                    "intent": "complaint",
                    "confidence": 0.9,
                    "alternatives": [{"intent": "no_match", "confidence": 0.1}],
                }
            ],
            id="alternative-no-match",
        ),
    ],
)
async def test_agent_answer_out_of_shape_falls_back_to_the_model_and_is_counted(
    data: list[Any],
) -> None:
    flows = flows_with(agent=True)
    metrics = metrics_for(flows)
    model = FakeModel(REFUND)

    choice = await IntentChooser(flows, model, metrics).choose(
        "money back", Stage.INTENT_CAPTURE, agent_says(*data)
    )

    assert choice.intent == "refund_request"
    assert choice.classifier == "model"
    assert len(model.asked) == 1
    assert fallbacks(metrics, "agent_bad_response") == 1


@pytest.mark.parametrize(
    "fault",
    [
        AgentTimeout("agent did not answer within 15s"),
        AgentUnreachable("cannot connect to agent: refused"),
        AgentError("agent JSON-RPC error -32603: boom"),
        AgentUnavailable("circuit open for classifier"),
        AgentBadResponse("agent answer is not JSON"),
    ],
    ids=lambda f: f.code,
)
async def test_agent_fault_falls_back_to_the_model_and_is_counted_by_code(
    fault: AgentFault,
) -> None:
    flows = flows_with(agent=True)
    metrics = metrics_for(flows)
    model = FakeModel(REFUND)

    choice = await IntentChooser(flows, model, metrics).choose(
        "money back", Stage.INTENT_CAPTURE, FakeAgent(fault)
    )

    assert (choice.intent, choice.classifier) == ("refund_request", "model")
    assert fallbacks(metrics, fault.code) == 1


async def test_agent_fault_at_a_stage_without_examples_is_a_no_match() -> None:
    flows = flows_with(agent=True)

    choice = await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "it is me", Stage.AUTHENTICATION, FakeAgent(AgentTimeout("slow"))
    )

    assert (choice.intent, choice.no_match_reason, choice.classifier) == (
        NO_MATCH,
        "no_examples",
        "model",
    )


async def test_agent_is_asked_with_the_stages_intents_and_their_examples() -> None:
    flows = flows_with(agent=True)
    agent = agent_says({"intent": "refund_request", "confidence": 0.9})

    await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "quiero mi dinero", Stage.INTENT_CAPTURE, agent
    )

    words, data = agent.asked[0]
    assert words == "quiero mi dinero"
    assert data == {
        "task": "classify_intent",
        "flow_id": 3,
        "flow_label": "INTENT_CAPTURE",
        "intents": [
            {"intent": intent, "examples": EXAMPLES.get(intent, [])} for intent in CAPTURE_INTENTS
        ],
    }


async def test_agent_is_not_asked_when_no_classifier_role_is_configured() -> None:
    flows = flows_with()
    agent = agent_says({"intent": "complaint", "confidence": 0.9})

    choice = await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "money back", Stage.INTENT_CAPTURE, agent
    )

    assert agent.asked == []
    assert choice.classifier == "model"


@pytest.mark.parametrize(
    "agent",
    [
        pytest.param(agent_says({"intent": CARD_WORDS, "confidence": 0.9}), id="words-as-intent"),
        pytest.param(
            FakeAgent(AgentError(f"agent JSON-RPC error -32603: {CARD_WORDS}")), id="error"
        ),
        pytest.param(
            FakeAgent(AgentTaskFailed(f"agent task failed: {CARD_WORDS}", task_state="failed")),
            id="failed-task",
        ),
    ],
)
async def test_fallback_is_logged_by_code_without_the_agents_words(
    agent: FakeAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = flows_with(agent=True)

    await IntentChooser(flows, FakeModel(REFUND), metrics_for(flows)).choose(
        "money back", Stage.INTENT_CAPTURE, agent
    )

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [fallback] = [line for line in lines if line["event"] == "classifier_agent_fallback"]
    assert fallback["error"] in {"agent_bad_response", "agent_error", "agent_task_failed"}
    assert fallback["stage"] == 3
    assert not shows_test_card(json.dumps(lines))
