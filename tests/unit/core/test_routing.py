"""plan_turn: which agent answers a turn, or why the turn is refused. Pure, no I/O."""

from __future__ import annotations

import copy
import tomllib

import pytest

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
from orchestrator_flows.core.flows import FlowConfig, Stage, load_flows, parse_flows
from orchestrator_flows.core.intents import IntentChoice, Thresholds, choice_from_ranking
from orchestrator_flows.core.models import CallState, OrchestrateRequest, PendingTask
from orchestrator_flows.core.routing import CallSize, admit_turn, plan_turn
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from tests.support.records import call_state


@pytest.fixture(scope="module")
def flows() -> FlowConfig:
    return load_flows(DEFAULT_FLOWS_FILE)


@pytest.fixture(scope="module")
def flows_without_fallback() -> FlowConfig:
    raw = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))
    del raw["fallback_agent"]
    return parse_flows(raw, {})


def turn(intent: str | None, account_id: str = "ACC-1") -> OrchestrateRequest:
    return OrchestrateRequest(
        call_identify_id="CALL-1",
        account_id=account_id,
        eci="ECI-1",
        input_message="hello",
        intent=intent,
    )


def call_at(stage: Stage, **fields) -> CallState:
    at = {
        "current_flow_id": stage.value,
        "completed_flows": list(range(1, stage.value)),
        "step_count": stage.value - 1,
    }
    return call_state(**(at | fields))


def test_new_call_routes_greeting_to_the_greeting_agent(flows: FlowConfig) -> None:
    plan = plan_turn(flows, None, turn("greeting"))

    assert plan.stage == Stage.GREETING
    assert plan.role == "greeting"
    assert plan.agent_url == flows.agents["greeting"]
    assert plan.is_fallback is False
    assert plan.continues is None


def test_new_call_cannot_start_at_a_later_stage(flows: FlowConfig) -> None:
    with pytest.raises(IntentNotAllowed) as caught:
        plan_turn(flows, None, turn("process_refund"))

    details = caught.value.details
    assert details["current_flow_id"] == 1
    assert details["current_flow_label"] == "GREETING"
    assert details["intent_flow_id"] == 4
    assert details["allowed_intents"] == ["greeting", "welcome"]
    assert "belongs to stage 4 (FULFILLMENT)" in caught.value.message


def test_intent_of_the_calls_stage_routes_to_its_agent(flows: FlowConfig) -> None:
    plan = plan_turn(flows, call_at(Stage.INTENT_CAPTURE), turn("billing_inquiry"))

    assert plan.stage == Stage.INTENT_CAPTURE
    assert plan.role == "billing"
    assert plan.agent_url == flows.agents["billing"]


@pytest.mark.parametrize(
    ("stage", "intent"),
    [
        (Stage.INTENT_CAPTURE, "greeting"),  # going back
        (Stage.AUTHENTICATION, "refund_request"),  # skipping ahead
        (Stage.FULFILLMENT, "closing"),
    ],
)
def test_wrong_stage_intent_changes_nothing(flows: FlowConfig, stage: Stage, intent: str) -> None:
    state = call_at(stage)
    before = copy.deepcopy(state)

    with pytest.raises(IntentNotAllowed) as caught:
        plan_turn(flows, state, turn(intent))

    assert caught.value.details["current_flow_id"] == stage.value
    assert caught.value.details["intent_flow_id"] == flows.stage_of_intent[intent].value
    assert caught.value.details["allowed_intents"] == flows.allowed_intents(stage)
    assert state == before


def test_unknown_intent_goes_to_the_fallback_agent(flows: FlowConfig) -> None:
    plan = plan_turn(flows, call_at(Stage.AUTHENTICATION), turn("weather_chat"))

    assert plan.role == "fallback"
    assert plan.is_fallback is True
    assert plan.stage == Stage.AUTHENTICATION
    assert plan.agent_url == flows.agents["fallback"]
    assert plan.intent == "weather_chat"


def test_unknown_intent_without_fallback_names_the_allowed_intents(
    flows_without_fallback: FlowConfig,
) -> None:
    with pytest.raises(UnknownIntent) as caught:
        plan_turn(flows_without_fallback, call_at(Stage.CLOSING), turn("weather_chat"))

    assert caught.value.details["current_flow_id"] == 5
    assert caught.value.details["allowed_intents"] == ["closing", "end_call", "feedback"]
    assert "'weather_chat' is not known at any stage" in caught.value.message


def test_complete_call_takes_no_more_turns(flows: FlowConfig) -> None:
    state = call_at(Stage.CLOSING, is_complete=True)

    with pytest.raises(CallComplete) as caught:
        plan_turn(flows, state, turn("closing"))

    assert caught.value.details == {"call_identify_id": "CALL-1"}


def test_turn_from_another_account_is_refused(flows: FlowConfig) -> None:
    with pytest.raises(AccountMismatch) as caught:
        plan_turn(flows, call_at(Stage.AUTHENTICATION), turn("otp_verify", account_id="ACC-2"))

    assert caught.value.details == {"call_identify_id": "CALL-1"}


def test_another_account_hears_account_mismatch_even_once_the_call_is_complete(
    flows: FlowConfig,
) -> None:
    finished = call_at(Stage.CLOSING, is_complete=True)

    with pytest.raises(AccountMismatch):
        plan_turn(flows, finished, turn("closing", account_id="ACC-2"))


def test_pending_task_of_the_same_agent_is_continued(flows: FlowConfig) -> None:
    pending: PendingTask = {"task_id": "task-1", "context_id": "ctx-1"}
    state = call_at(Stage.AUTHENTICATION, pending_tasks={"auth": pending})

    plan = plan_turn(flows, state, turn("otp_verify"))

    assert plan.role == "auth"
    assert plan.continues == pending


@pytest.mark.parametrize(
    ("stage", "pending_role", "intent"),
    [
        (Stage.INTENT_CAPTURE, "refund", "billing_inquiry"),
        (Stage.AUTHENTICATION, "auth", "weather_chat"),  # the fallback agent has no task here
    ],
)
def test_pending_task_of_another_agent_is_not_continued(
    flows: FlowConfig, stage: Stage, pending_role: str, intent: str
) -> None:
    state = call_at(stage, pending_tasks={pending_role: {"task_id": "task-1", "context_id": None}})

    plan = plan_turn(flows, state, turn(intent))

    assert plan.role != pending_role
    assert plan.continues is None


def test_call_at_its_step_limit_takes_no_more_turns(flows: FlowConfig) -> None:
    state = call_at(Stage.INTENT_CAPTURE, step_count=200)

    with pytest.raises(CallStepLimit) as caught:
        plan_turn(flows, state, turn("refund_request"), max_steps=200)

    assert caught.value.details == {"call_identify_id": "CALL-1", "max_steps": 200}
    assert plan_turn(flows, call_at(Stage.INTENT_CAPTURE, step_count=199), turn("refund_request"))


def test_turn_whose_words_would_take_the_call_past_its_size_is_refused_before_its_agent(
    flows: FlowConfig,
) -> None:
    state = call_at(Stage.INTENT_CAPTURE)
    hello = len(turn("refund_request").input_message.encode())

    with pytest.raises(CallSizeLimit) as caught:
        plan_turn(flows, state, turn("refund_request"), size=CallSize(20_000 - hello + 1, 20_000))

    assert caught.value.details == {
        "call_identify_id": "CALL-1",
        "max_call_bytes": 20_000,
        "agent_called": False,
    }
    assert plan_turn(flows, state, turn("refund_request"), size=CallSize(20_000 - hello, 20_000))


# Turns without an intent: the classifier's choice.

EXAMPLES = {
    "refund_request": ["I want my money back"],
    "billing_inquiry": ["why is my bill so high"],
}


def classifying_flows(*, fallback: bool = True, **classifier) -> FlowConfig:
    """The shipped flows with examples for two INTENT_CAPTURE intents only."""
    raw = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))
    raw["examples"] = EXAMPLES
    raw["classifier"] = classifier
    if not fallback:
        del raw["fallback_agent"]
    return parse_flows(raw, {})


def classified(intent: str, confidence: float = 0.9) -> IntentChoice:
    ranked = [{"intent": intent, "confidence": confidence}, {"intent": "other", "confidence": 0.05}]
    return choice_from_ranking(ranked, Thresholds(0.5, 0.1), "model")


NO_MATCH_CHOICE = choice_from_ranking(
    [{"intent": "refund_request", "confidence": 0.3}], Thresholds(0.5, 0.1), "model"
)


def test_turn_without_intent_at_a_stage_without_examples_requires_one() -> None:
    flows = classifying_flows()
    state = call_at(Stage.AUTHENTICATION)

    with pytest.raises(IntentRequired) as caught:
        admit_turn(flows, state, turn(None))

    assert caught.value.code == "intent_required"
    assert caught.value.status_code == 422
    assert caught.value.details == {
        "current_flow_id": 2,
        "current_flow_label": "AUTHENTICATION",
        "allowed_intents": ["authenticate", "otp_verify", "verify_identity"],
    }
    with pytest.raises(IntentRequired):
        plan_turn(flows, state, turn(None))


def test_turn_without_intent_is_admitted_at_a_stage_with_examples() -> None:
    assert admit_turn(classifying_flows(), call_at(Stage.INTENT_CAPTURE), turn(None)) is (
        Stage.INTENT_CAPTURE
    )


def test_new_call_without_intent_requires_one_when_greeting_has_no_examples() -> None:
    with pytest.raises(IntentRequired) as caught:
        admit_turn(classifying_flows(), None, turn(None))

    assert caught.value.details["current_flow_id"] == 1


def test_turn_without_intent_and_without_a_choice_is_not_planned() -> None:
    with pytest.raises(IntentRequired):
        plan_turn(classifying_flows(), call_at(Stage.INTENT_CAPTURE), turn(None))


@pytest.mark.parametrize(
    ("state", "size", "refusal"),
    [
        pytest.param(
            call_at(Stage.AUTHENTICATION, account_id="ACC-2"), None, AccountMismatch, id="account"
        ),
        pytest.param(
            call_at(Stage.AUTHENTICATION, is_complete=True), None, CallComplete, id="complete"
        ),
        pytest.param(
            call_at(Stage.AUTHENTICATION, step_count=200), None, CallStepLimit, id="step-limit"
        ),
        pytest.param(
            call_at(Stage.AUTHENTICATION), CallSize(20_000, 20_000), CallSizeLimit, id="size"
        ),
    ],
)
def test_call_refusals_come_before_intent_required(
    state: CallState, size: CallSize | None, refusal: type[Exception]
) -> None:
    with pytest.raises(refusal):
        admit_turn(classifying_flows(), state, turn(None), max_steps=200, size=size)


def test_classifier_choice_routes_to_its_intents_agent() -> None:
    flows = classifying_flows()
    choice = classified("billing_inquiry")

    plan = plan_turn(flows, call_at(Stage.INTENT_CAPTURE), turn(None), choice=choice)

    assert plan.intent == "billing_inquiry"
    assert plan.role == "billing"
    assert plan.agent_url == flows.agents["billing"]
    assert plan.is_fallback is False
    assert plan.choice == choice


def test_classifier_no_match_goes_to_the_fallback_agent_at_the_same_stage() -> None:
    flows = classifying_flows()

    plan = plan_turn(flows, call_at(Stage.INTENT_CAPTURE), turn(None), choice=NO_MATCH_CHOICE)

    assert plan.intent == "no_match"
    assert plan.role == "fallback"
    assert plan.is_fallback is True
    assert plan.stage == Stage.INTENT_CAPTURE
    assert plan.choice == NO_MATCH_CHOICE


def test_classifier_no_match_without_fallback_is_refused_with_what_the_classifier_found() -> None:
    flows = classifying_flows(fallback=False)

    with pytest.raises(NoIntentMatched) as caught:
        plan_turn(flows, call_at(Stage.INTENT_CAPTURE), turn(None), choice=NO_MATCH_CHOICE)

    assert caught.value.code == "no_intent_matched"
    assert caught.value.status_code == 422
    assert caught.value.details == {
        "current_flow_id": 3,
        "current_flow_label": "INTENT_CAPTURE",
        "allowed_intents": flows.allowed_intents(Stage.INTENT_CAPTURE),
        "no_match_reason": "low_confidence",
        "intent_alternatives": [{"intent": "refund_request", "confidence": 0.3}],
    }
    assert "(low_confidence)" in caught.value.message


def test_plan_carries_the_no_match_limit_and_none_when_the_call_stays() -> None:
    state = call_at(Stage.INTENT_CAPTURE)

    default = plan_turn(classifying_flows(), state, turn(None), choice=NO_MATCH_CHOICE)
    five = plan_turn(classifying_flows(no_match_limit=5), state, turn(None), choice=NO_MATCH_CHOICE)
    stay = plan_turn(
        classifying_flows(on_no_match="stay"), state, turn(None), choice=NO_MATCH_CHOICE
    )

    assert (default.no_match_limit, five.no_match_limit, stay.no_match_limit) == (3, 5, None)


def test_client_intent_plan_records_no_classifier_choice() -> None:
    plan = plan_turn(classifying_flows(), call_at(Stage.INTENT_CAPTURE), turn("refund_request"))

    assert plan.choice is None
    assert plan.intent == "refund_request"
