"""Turns that come with the caller's words only, classified through the real service: the built-in
model trained from the shipped flows.toml's examples (English and Spanish), real a2a-sdk agents,
and a classifier agent that is used when configured and replaced by the model when it faults.

Classifying reads no Redis: these run on one redis-server only."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from tests.integration.conftest import (
    CALL_ID,
    Agents,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
)
from tests.support.agents import ClassifierAgent, RaisingAgent, free_port

pytestmark = pytest.mark.single_redis

STAGE_3 = {
    "account_inquiry", "balance_inquiry", "billing_inquiry",
    "booking_request", "complaint", "refund_request",
}  # fmt: skip
NONSENSE = "zxqv wrrpt qolk"  # no intent's examples look like this


async def unclassified(caller: Caller, words: str, call_id: str = CALL_ID, **headers: str):
    body = {"call_identify_id": call_id, "account_id": "ACC-1", "eci": "ECI-1"}
    return await caller.http.post(
        "/orchestrate", json=body | {"input_message": words}, headers=headers
    )


def flows_file(tmp_path: Path, **classifier: Any) -> Path:
    """The shipped flows file with [classifier] settings changed and, with `classifier_agent`,
    a `classifier` role (its URL from the test's AGENT_URL_CLASSIFIER)."""
    text = DEFAULT_FLOWS_FILE.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    lines = text.splitlines()
    if classifier.pop("classifier_agent", False):
        at = lines.index("[agents]  # role -> the agent's A2A JSON-RPC URL")
        lines.insert(at + 1, 'classifier = "http://127.0.0.1:9/"')
    for key, value in classifier.items():
        assert key in raw["classifier"]
        at = next(n for n, line in enumerate(lines) if line.startswith(f"{key} = "))
        lines[at] = f"{key} = {value!r}".replace("'", '"')
    path = tmp_path / "flows.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_a_turn_without_intent_is_classified_among_its_stages_intents_and_recorded(
    service: Caller, agents: Agents, store: RedisView
) -> None:
    await service.walk(3)  # to INTENT_CAPTURE

    answer = await unclassified(service, "I want my money back for order 1234, please")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["intent"], body["intent_source"]) == ("refund_request", "classifier")
    assert body["no_match_reason"] is None
    assert 0.2 <= body["intent_confidence"] <= 1
    alternatives = body["intent_alternatives"]
    assert len(alternatives) == 2 and {a["intent"] for a in alternatives} < STAGE_3 - {
        "refund_request"
    }
    assert all(a["confidence"] <= body["intent_confidence"] for a in alternatives)
    assert (body["agent_role"], body["next_flow_id"]) == ("refund", 4)
    assert agents.executors["refund"].seen.texts[-1].startswith("I want my money back")
    assert agents.executors["refund"].seen.metadata[-1]["intent"] == "refund_request"
    step = store.steps()[-1]
    assert {k: step[k] for k in ("intent", "intent_source", "intent_classifier")} == {
        "intent": "refund_request",
        "intent_source": "classifier",
        "intent_classifier": "model",
    }
    assert step["intent_confidence"] == body["intent_confidence"]
    assert step["intent_alternatives"] == alternatives


async def test_a_spanish_turn_is_classified_from_the_spanish_examples(
    service: Caller, agents: Agents
) -> None:
    await service.walk(3)

    answer = await unclassified(service, "Quiero un reembolso del pedido 10442, llegó roto")

    assert answer.status_code == 200, answer.text
    assert (answer.json()["intent"], answer.json()["agent_role"]) == ("refund_request", "refund")


async def test_a_client_intent_is_used_as_sent_and_says_so(
    service: Caller, store: RedisView
) -> None:
    answer = await service.turn("greeting", "Quiero un reembolso")  # words of another intent

    body = answer.json()
    assert (body["intent"], body["intent_source"]) == ("greeting", "client")
    assert (body["intent_confidence"], body["intent_alternatives"]) == (None, [])
    assert store.steps()[-1]["intent_classifier"] is None


async def test_words_no_intent_fits_go_to_the_fallback_agent_and_the_call_stays(
    service: Caller, agents: Agents, store: RedisView
) -> None:
    await service.walk(3)
    fallback_heard = len(agents.executors["fallback"].seen.texts)

    answer = await unclassified(service, NONSENSE)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["intent"], body["intent_source"]) == ("no_match", "classifier")
    assert body["no_match_reason"] in {"low_confidence", "ambiguous", "unlike_examples"}
    assert (body["agent_role"], body["next_flow_id"]) == ("fallback", 3)
    assert agents.executors["fallback"].seen.texts[fallback_heard:] == [NONSENSE]
    state = store.state()
    assert (state["current_flow_id"], state["no_match_streak"]) == (3, 1)
    assert store.steps()[-1]["fallback"] is True


async def test_three_no_matches_in_a_row_send_the_call_to_closing_with_outcome_no_match(
    service: Caller, store: RedisView
) -> None:
    await service.walk(3)

    answers = [(await unclassified(service, f"{NONSENSE} {n}")).json() for n in range(3)]

    assert [a["intent"] for a in answers] == ["no_match"] * 3
    assert [a["next_flow_id"] for a in answers] == [3, 3, 5]
    state = store.state()
    assert (state["current_flow_id"], state["escalation"]) == (5, "no_match")
    assert state["stages"]["3"]["outcome"] == "no_match"
    goodbye = await unclassified(service, "That's all, thank you, goodbye")
    assert goodbye.json()["is_complete"] is True, goodbye.text
    assert goodbye.json()["session_summary"]["outcome"] == "no_match"


async def test_a_match_between_no_matches_starts_the_count_again(
    make_service: ServiceFactory, tmp_path: Path, store: RedisView
) -> None:
    patient = make_service(flows_file=flows_file(tmp_path, no_match_limit=2))
    await patient.walk(2)  # at AUTHENTICATION, waiting for the one-time code

    await unclassified(patient, NONSENSE)
    matched = await patient.turn("otp_verify", "the code is 123456")
    assert matched.json()["next_flow_id"] == 3
    first = await unclassified(patient, NONSENSE)
    second = await unclassified(patient, NONSENSE + " again")

    assert [first.json()["next_flow_id"], second.json()["next_flow_id"]] == [3, 5]


async def test_with_on_no_match_stay_the_call_never_leaves_its_stage(
    make_service: ServiceFactory, tmp_path: Path, store: RedisView
) -> None:
    staying = make_service(flows_file=flows_file(tmp_path, on_no_match="stay"))
    await staying.walk(3)

    answers = [(await unclassified(staying, f"{NONSENSE} {n}")).json() for n in range(4)]

    assert [a["next_flow_id"] for a in answers] == [3] * 4
    assert store.state()["escalation"] is None


def classify_as(intent: str, confidence: float) -> ClassifierAgent:
    return ClassifierAgent(
        lambda words, question: {
            "intent": intent,
            "confidence": confidence,
            "alternatives": [{"intent": "complaint", "confidence": 0.03}],
        }
    )


async def test_a_configured_classifier_agent_chooses_from_the_stages_intents_and_examples(
    make_service: ServiceFactory, serve_agent: AgentServer, tmp_path: Path, store: RedisView
) -> None:
    agent = classify_as("billing_inquiry", 0.93)
    with_agent = make_service(
        flows_file=flows_file(tmp_path, classifier_agent=True),
        agent_urls={"classifier": serve_agent(agent)},
    )
    await with_agent.walk(3)

    answer = await unclassified(with_agent, "I want my money back")  # the agent decides

    body = answer.json()
    assert (body["intent"], body["intent_confidence"]) == ("billing_inquiry", 0.93)
    assert body["intent_alternatives"] == [{"intent": "complaint", "confidence": 0.03}]
    assert body["agent_role"] == "billing"
    assert agent.seen.texts == ["I want my money back"]
    [question] = agent.questions
    assert (question["task"], question["flow_id"], question["flow_label"]) == (
        "classify_intent",
        3.0,  # A2A 1.0 data parts are protobuf Structs: numbers arrive as floats
        "INTENT_CAPTURE",
    )
    offered = {entry["intent"]: entry["examples"] for entry in question["intents"]}
    assert set(offered) == STAGE_3
    shipped = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))["examples"]
    assert offered["refund_request"] == shipped["refund_request"]
    assert agent.seen.metadata[0]["call_identify_id"] == CALL_ID
    assert store.steps()[-1]["intent_classifier"] == "agent"


async def test_an_unsure_classifier_agent_sends_the_turn_to_the_fallback_agent(
    make_service: ServiceFactory, serve_agent: AgentServer, tmp_path: Path
) -> None:
    with_agent = make_service(
        flows_file=flows_file(tmp_path, classifier_agent=True),
        agent_urls={"classifier": serve_agent(classify_as("billing_inquiry", 0.1))},
    )
    await with_agent.walk(3)

    body = (await unclassified(with_agent, "hmm")).json()

    assert (body["intent"], body["no_match_reason"]) == ("no_match", "low_confidence")
    assert body["agent_role"] == "fallback"


@pytest.mark.parametrize(
    "broken",
    [
        lambda: RaisingAgent(),
        lambda: ClassifierAgent(lambda words, question: {"intent": "weather", "confidence": 1}),
        lambda: ClassifierAgent(lambda words, question: {"label": "refund_request"}),
    ],
    ids=["raises", "names-an-unknown-intent", "answers-out-of-shape"],
)
async def test_a_faulty_classifier_agent_is_replaced_by_the_built_in_model(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    tmp_path: Path,
    store: RedisView,
    broken: Any,
) -> None:
    agent = broken()
    with_agent = make_service(
        flows_file=flows_file(tmp_path, classifier_agent=True),
        agent_urls={"classifier": serve_agent(agent)},
    )
    await with_agent.walk(3)

    answer = await unclassified(with_agent, "I want my money back for order 1234, please")

    assert answer.status_code == 200, answer.text
    assert (answer.json()["intent"], answer.json()["agent_role"]) == ("refund_request", "refund")
    assert store.steps()[-1]["intent_classifier"] == "model"
    assert agent.seen.texts  # asked first
    metrics = (await with_agent.http.get("/metrics")).text
    assert "orch_classifier_agent_fallbacks_total{" in metrics


async def test_an_unreachable_classifier_agent_is_replaced_by_the_built_in_model(
    make_service: ServiceFactory, tmp_path: Path, store: RedisView
) -> None:
    with_agent = make_service(
        flows_file=flows_file(tmp_path, classifier_agent=True),
        agent_urls={"classifier": f"http://127.0.0.1:{free_port()}/"},
    )
    await with_agent.walk(3)

    answer = await unclassified(with_agent, "Quiero un reembolso del pedido 10442")

    assert answer.json()["intent"] == "refund_request", answer.text
    assert store.steps()[-1]["intent_classifier"] == "model"


async def classifications(caller: Caller) -> Counter[tuple[str, str, str]]:
    text = (await caller.http.get("/metrics")).text
    return Counter(
        {
            (s.labels["stage"], s.labels["classifier"], s.labels["result"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "orch_intent_classifications_total"
        }
    )


async def test_each_classification_is_counted_by_stage_classifier_and_result(
    service: Caller,
) -> None:
    await service.walk(3)
    before = await classifications(service)  # the service is shared: count from here

    await unclassified(service, NONSENSE)
    await unclassified(service, "I want my money back for order 1234, please")

    counted = await classifications(service)
    counted.subtract(before)
    assert +counted == Counter(
        {
            ("INTENT_CAPTURE", "model", "matched"): 1,
            ("INTENT_CAPTURE", "model", service_reason(counted)): 1,
        }
    )


def service_reason(counted: Counter[tuple[str, str, str]]) -> str:
    """The no-match reason the model gave (which of its rules caught NONSENSE is its own)."""
    [reason] = [k[2] for k, v in counted.items() if v and k[2] != "matched"]
    assert reason in {"low_confidence", "ambiguous", "unlike_examples"}
    return reason
