"""Turns without an intent through the HTTP surface: the classifier's choice answered and stored,
intent_required where a stage cannot classify, replays, no-matches to the fallback agent and
their escalation (fakeredis, in-process agents, a fake model in place of the built-in one)."""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from a2a.helpers import get_data_parts, new_data_message
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue

from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from orchestrator_flows.service import intent_choice
from orchestrator_flows.service.turns import MESSAGE_IDS
from tests.support.agents import RaisingAgent, Recording
from tests.support.intent_models import FakeModel, Found, Scored
from tests.support.leaks import shows_test_card
from tests.support.service import AGENTS_BASE, Service, ServiceFactory, agent_urls

CARD_WORDS = "hello there, my card is 4111 1111 1111 1111"
EXAMPLES = {
    "greeting": ["hello", "hola, buenos días"],
    "welcome": ["hi, I am calling about my account"],
}


GREETING = Found("greeting", 0.92, [Scored("welcome", 0.05)])
UNSURE = Found("welcome", 0.15, [Scored("greeting", 0.1)])  # under the shipped 0.2


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    """The model every service built in the test trains: this fake."""
    fake = FakeModel(GREETING)
    monkeypatch.setattr(intent_choice, "_trained", lambda *_: fake)
    monkeypatch.setattr(intent_choice, "_model_thresholds", lambda thresholds: thresholds)
    return fake


@pytest.fixture
async def classifying(tmp_path: Path, make_service: ServiceFactory, model: FakeModel) -> Service:
    """The shipped flows with examples for GREETING's intents only."""
    path = tmp_path / "flows.toml"
    path.write_text(flows_text(EXAMPLES), encoding="utf-8")
    return await make_service(flows_file=path)


def flows_text(examples: dict[str, list[str]], *, extra_roles: Sequence[str] = ()) -> str:
    """The shipped stages and roles (their URLs come from the test's AGENT_URL_* settings), with
    `examples` as the only [examples] table."""
    raw = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))
    lines = [f"fallback_agent = {json.dumps(raw['fallback_agent'])}", "[agents]"]
    lines += [f'{role} = "http://unused.test/"' for role in [*raw["agents"], *extra_roles]]
    lines.append("[stages]")
    for stage, table in raw["stages"].items():
        intents = ", ".join(f"{intent} = {json.dumps(role)}" for intent, role in table.items())
        lines.append(f'"{stage}" = {{ {intents} }}')
    lines.append("[examples]")
    lines += [f"{intent} = {json.dumps(said)}" for intent, said in examples.items()]
    return "\n".join(lines) + "\n"


async def unclassified(service: Service, words: str = CARD_WORDS, **headers: str):
    body = {"call_identify_id": "CALL-001", "account_id": "ACC-1", "eci": "ECI-1"}
    return await service.http.post(
        "/orchestrate", json=body | {"input_message": words}, headers=headers
    )


async def snapshot(service: Service) -> dict[bytes, bytes]:
    return {key: await service.redis.dump(key) for key in await service.redis.keys("*")}


def posts(service: Service) -> list[str]:
    return [str(r.url) for r in service.agent_requests if r.method == "POST"]


@pytest.mark.parametrize("sent", ["absent", "null"])
async def test_turn_without_intent_is_classified_answered_and_stored(
    classifying: Service, model: FakeModel, sent: str
) -> None:
    if sent == "absent":
        answer = await unclassified(classifying)
    else:
        answer = await classifying.turn(None, CARD_WORDS)  # type: ignore[arg-type]

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["intent"] == "greeting"
    assert body["intent_source"] == "classifier"
    assert body["intent_confidence"] == 0.92
    assert body["intent_alternatives"] == [{"intent": "welcome", "confidence": 0.05}]
    assert body["no_match_reason"] is None
    assert body["next_flow_id"] == 2
    assert [(words, allowed) for words, allowed, _ in model.asked] == [
        (CARD_WORDS, ["greeting", "welcome"])
    ]
    assert posts(classifying) == [classifying.settings.agent_urls["greeting"]]
    [step] = (await classifying.http.get("/session/CALL-001/steps")).json()
    assert step["intent"] == "greeting"
    assert step["intent_source"] == "classifier"
    assert step["intent_confidence"] == 0.92
    assert step["intent_alternatives"] == [{"intent": "welcome", "confidence": 0.05}]
    assert step["no_match_reason"] is None
    assert step["intent_classifier"] == "model"
    assert not shows_test_card(step["input_message"])
    assert step["input_message"].startswith("hello there, my card is ")


async def test_a_classified_turns_log_line_says_who_chose_and_how_sure_never_the_words(
    classifying: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    await unclassified(classifying)

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    [turn] = [line for line in lines if line["event"] == "turn"]
    assert (turn["intent"], turn["intent_source"]) == ("greeting", "classifier")
    assert (turn["intent_confidence"], turn["no_match_reason"]) == (0.92, None)
    assert not any("hello there" in str(value) for line in lines for value in line.values())


async def test_turn_with_intent_is_not_classified(classifying: Service, model: FakeModel) -> None:
    answer = await classifying.turn("welcome", "hi")

    assert answer.json()["intent_source"] == "client"
    assert answer.json()["intent_confidence"] is None
    assert answer.json()["intent_alternatives"] == []
    assert model.asked == []


async def test_turn_without_intent_at_a_stage_without_examples_is_422_and_changes_nothing(
    classifying: Service, model: FakeModel
) -> None:
    await classifying.turn("greeting")  # the call is at AUTHENTICATION, which has no examples
    before = await snapshot(classifying)

    refused = await unclassified(classifying, "it is me")

    assert refused.status_code == 422
    assert refused.json()["error"] == {
        "code": "intent_required",
        "message": "send an intent: no intent of stage 2 (AUTHENTICATION) has examples in the"
        " flows file, and no classifier agent is configured",
        "current_flow_id": 2,
        "current_flow_label": "AUTHENTICATION",
        "allowed_intents": ["authenticate", "otp_verify", "verify_identity"],
    }
    assert await snapshot(classifying) == before
    assert model.asked == []
    assert len(posts(classifying)) == 1


async def test_service_without_examples_requires_an_intent_from_the_first_turn(
    tmp_path: Path, make_service: ServiceFactory
) -> None:
    path = tmp_path / "flows.toml"
    path.write_text(flows_text({}), encoding="utf-8")
    service = await make_service(flows_file=path)

    refused = await unclassified(service, "hello")

    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "intent_required"
    assert await service.redis.keys("*") == []
    assert posts(service) == []


async def test_replay_gives_the_same_answer_without_classifying_again(
    classifying: Service, model: FakeModel
) -> None:
    # Words without personal data: a replay masks the agent's words as the trail does.
    first = await unclassified(classifying, "hello there", **{"Idempotency-Key": "k-1"})
    model.found = UNSURE  # a second classification would now be a no-match
    again = await unclassified(classifying, "hello there", **{"Idempotency-Key": "k-1"})

    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(model.asked) == 1
    assert len(posts(classifying)) == 1


async def test_no_match_goes_to_the_fallback_agent_and_the_call_stays(
    classifying: Service, model: FakeModel
) -> None:
    model.found = UNSURE

    answer = await unclassified(classifying, "what is the weather like")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["intent"] == "no_match"
    assert body["intent_source"] == "classifier"
    assert body["no_match_reason"] == "low_confidence"
    assert body["intent_confidence"] == 0.15
    assert [a["intent"] for a in body["intent_alternatives"]] == ["welcome", "greeting"]
    assert body["next_flow_id"] == 1
    assert posts(classifying) == [classifying.settings.agent_urls["fallback"]]
    [step] = (await classifying.http.get("/session/CALL-001/steps")).json()
    assert (step["intent"], step["fallback"], step["agent_role"]) == ("no_match", True, "fallback")


async def test_three_no_matches_in_a_row_take_the_call_to_closing(
    classifying: Service, model: FakeModel
) -> None:
    model.found = UNSURE

    answers = [(await unclassified(classifying, f"weather {n}?")).json() for n in range(3)]

    assert [a["next_flow_id"] for a in answers] == [1, 1, 5]
    assert (await classifying.http.get("/session/CALL-001")).json()["current_flow_id"] == 5
    closing = (await classifying.turn("closing", "bye")).json()
    assert closing["is_complete"] is True
    summary = closing["session_summary"]
    assert summary["outcome"] == "no_match"
    assert [s["outcome"] for s in summary["stages"]] == [
        "no_match", "pending", "pending", "pending", "success",
    ]  # fmt: skip


# The classifier agent.


class ClassifierAgent(Recording):
    """Answers every question with `answer` as a data part; keeps the data parts it was sent."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__()
        self.answer_data = answer
        self.questions: list[Any] = []

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        self.questions.extend(get_data_parts(ctx.message.parts))
        await queue.enqueue_event(new_data_message(self.answer_data, context_id=ctx.context_id))


async def with_classifier_agent(
    tmp_path: Path, make_service: ServiceFactory, agent: Any
) -> Service:
    path = tmp_path / "flows.toml"
    path.write_text(flows_text(EXAMPLES, extra_roles=["classifier"]), encoding="utf-8")
    urls = agent_urls() | {"classifier": f"{AGENTS_BASE}/classifier/"}
    return await make_service(agents={"classifier": agent}, flows_file=path, agent_urls=urls)


def sent_to(service: Service, role: str) -> list[dict[str, Any]]:
    url = service.settings.agent_urls[role]
    return [json.loads(r.read()) for r in service.agent_requests if str(r.url) == url]


async def test_classifier_agent_chooses_with_its_own_message_id_and_the_call_context(
    tmp_path: Path, make_service: ServiceFactory, model: FakeModel
) -> None:
    agent = ClassifierAgent({"intent": "welcome", "confidence": 0.88})
    service = await with_classifier_agent(tmp_path, make_service, agent)

    answer = await unclassified(service, "hi, about my account", **{"Idempotency-Key": "k-1"})

    assert answer.status_code == 200, answer.text
    assert (answer.json()["intent"], answer.json()["intent_confidence"]) == ("welcome", 0.88)
    assert model.asked == []
    [step] = (await service.http.get("/session/CALL-001/steps")).json()
    assert step["intent_classifier"] == "agent"
    assert agent.seen.texts == ["hi, about my account"]
    assert agent.questions[0]["task"] == "classify_intent"
    assert [i["intent"] for i in agent.questions[0]["intents"]] == ["greeting", "welcome"]
    context = agent.seen.metadata[0]
    assert (context["call_identify_id"], context["flow_label"]) == ("CALL-001", "GREETING")
    [asked] = sent_to(service, "classifier")
    classify_id = asked["params"]["message"]["messageId"]
    assert classify_id == str(uuid.uuid5(MESSAGE_IDS, f"{step['a2a_message_id']}|classify"))
    assert classify_id != step["a2a_message_id"]


async def test_classifier_agent_fault_leaves_the_choice_to_the_model(
    tmp_path: Path, make_service: ServiceFactory, model: FakeModel
) -> None:
    service = await with_classifier_agent(tmp_path, make_service, RaisingAgent())

    answer = await unclassified(service, "hello")

    assert answer.status_code == 200, answer.text
    assert answer.json()["intent"] == "greeting"
    [step] = (await service.http.get("/session/CALL-001/steps")).json()
    assert step["intent_classifier"] == "model"
    assert len(model.asked) == 1
    metrics = (await service.http.get("/metrics")).text
    assert 'orch_classifier_agent_fallbacks_total{code="agent_error"} 1.0' in metrics


async def test_with_a_classifier_agent_every_stage_takes_turns_without_intent(
    tmp_path: Path, make_service: ServiceFactory, model: FakeModel
) -> None:
    agent = ClassifierAgent({"intent": "verify_identity", "confidence": 0.9})
    service = await with_classifier_agent(tmp_path, make_service, agent)
    await service.turn("greeting")

    answer = await unclassified(service, "it is me")

    assert answer.status_code == 200, answer.text
    assert answer.json()["intent"] == "verify_identity"
    assert answer.json()["intent_flow_id"] == 2


class LeaseReadingClassifier(ClassifierAgent):
    """Answers as ClassifierAgent does, and first reads how long the turn's lease has left."""

    def __init__(self, service_box: list[Service]) -> None:
        super().__init__({"intent": "greeting", "confidence": 0.9})
        self.service_box = service_box
        self.lease_left_ms: list[int] = []

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        redis = self.service_box[0].redis
        self.lease_left_ms.append(await redis.pttl("orch:{CALL-001}:lease"))
        await super().answer(ctx, queue)


async def test_turn_asking_the_classifier_agent_holds_its_lease_for_both_agents_deadlines(
    tmp_path: Path, make_service: ServiceFactory, model: FakeModel
) -> None:
    box: list[Service] = []
    agent = LeaseReadingClassifier(box)
    path = tmp_path / "flows.toml"
    path.write_text(flows_text(EXAMPLES, extra_roles=["classifier"]), encoding="utf-8")
    urls = agent_urls() | {"classifier": f"{AGENTS_BASE}/classifier/"}
    service = await make_service(
        agents={"classifier": agent},
        flows_file=path,
        agent_urls=urls,
        a2a_timeout_sec=10,
        turn_lease_margin_sec=5,
    )
    box.append(service)

    answer = await unclassified(service, "hello")

    assert answer.status_code == 200, answer.text
    # Asked first, the classifier may take its 10 s, then the greeting agent its own 10 s.
    [left] = agent.lease_left_ms
    assert left > 2 * 10 * 1000
