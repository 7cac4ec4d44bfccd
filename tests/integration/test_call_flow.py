"""A call's way through the five stages, and the turns the service refuses, against real parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from tests.integration.conftest import (
    ACCOUNT_ID,
    CALL_ID,
    HAPPY_PATH,
    NEXT_STAGES,
    OTP_QUESTION,
    Agents,
    Caller,
    RedisView,
    ServiceFactory,
    call_key,
)

pytestmark = pytest.mark.integration

STAGE_3_INTENTS = [
    "account_inquiry",
    "balance_inquiry",
    "billing_inquiry",
    "booking_request",
    "complaint",
    "refund_request",
]


@pytest.fixture
def flows_without_fallback(tmp_path: Path) -> Path:
    lines = DEFAULT_FLOWS_FILE.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "flows.toml"
    path.write_text("\n".join(x for x in lines if not x.startswith("fallback_agent")) + "\n")
    return path


async def test_first_turn_creates_the_call_at_the_greeting_stage(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    answer = await service.turn("greeting", "hello there")

    assert answer.status_code == 200
    body = answer.json()
    assert body["intent_flow_id"] == 1
    assert body["flow_label"] == "GREETING"
    assert body["status"] == "success"
    assert body["response"]["text"] == "greeting: heard 'hello there' at GREETING"
    assert (body["next_flow_id"], body["next_flow_label"]) == (2, "AUTHENTICATION")
    assert body["step_seq"] == 1
    state = store.state()
    assert state["account_id"] == ACCOUNT_ID
    assert (state["current_flow_id"], state["completed_flows"]) == (2, [1])
    [step] = store.steps()
    assert (step["seq"], step["intent_flow_id"], step["response_status"]) == (1, 1, "success")
    assert all(ttl > 0 for ttl in store.ttls())
    assert store.keys() == [call_key(CALL_ID, kind) for kind in ("bytes", "state", "steps")]
    assert agents.executors["greeting"].seen.metadata[0]["account_id"] == ACCOUNT_ID


async def test_first_turn_with_a_later_stage_intent_is_refused_and_creates_nothing(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    answer = await service.turn("refund_request", "refund me")

    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "intent_not_allowed"
    assert error["current_flow_id"] == 1
    assert error["allowed_intents"] == ["greeting", "welcome"]
    assert store.keys() == []
    assert agents.executors["refund"].seen.texts == []


async def test_whole_call_runs_through_all_five_stages(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    answers = [a.json() for a in await service.walk(len(HAPPY_PATH))]

    assert [a["next_flow_id"] for a in answers] == NEXT_STAGES
    assert [a["response_status"] for a in answers] == ["success", "input_required"] + [
        "success"
    ] * 4
    assert [a["step_seq"] for a in answers] == [1, 2, 3, 4, 5, 6]
    assert [a["is_complete"] for a in answers] == [False] * 5 + [True]
    assert answers[2]["response"]["text"] == "identity verified"
    summary = answers[-1]["session_summary"]
    assert summary["completed_flows"] == [1, 2, 3, 4, 5]
    assert [s["flow_id"] for s in summary["stages"]] == [1, 2, 3, 4, 5]
    assert all(s["outcome"] == "success" for s in summary["stages"])
    assert (summary["total_steps"], summary["error_steps"]) == (6, 0)

    otp_task = answers[1]["response"]["task_id"]
    assert otp_task and answers[2]["response"]["task_id"] == otp_task
    # The SDK names the new task on the first request; had the second not carried the task id,
    # the agent would have started another task with another id.
    assert agents.executors["auth"].seen.task_ids == [otp_task, otp_task]

    state = store.state()
    assert state["is_complete"] is True
    assert state["completed_flows"] == [1, 2, 3, 4, 5]
    assert state["session_summary"] == summary
    steps = store.steps()
    assert [s["seq"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [s["intent_flow_id"] for s in steps] == [1, 2, 2, 3, 4, 5]
    assert [s["response_status"] for s in steps] == [a["response_status"] for a in answers]
    assert [s["a2a_task_id"] for s in steps[1:3]] == [otp_task, otp_task]
    assert all(ttl > 0 for ttl in store.ttls())

    session = (await service.http.get(f"/session/{CALL_ID}")).json()
    assert session["is_complete"] is True
    assert (session["current_flow_id"], session["step_count"]) == (5, 6)
    assert session["session_summary"] == summary
    assert len(session["steps"]) == 6

    trail = (await service.http.get(f"/session/{CALL_ID}/steps")).json()
    assert [s["seq"] for s in trail] == [1, 2, 3, 4, 5, 6]
    assert [s["intent"] for s in trail] == [intent for intent, _ in HAPPY_PATH]
    roles = ["greeting", "auth", "auth", "refund", "refund", "closing"]
    assert [s["a2a_agent_url"] for s in trail] == [agents.urls[r] for r in roles]


async def test_agent_asking_for_input_keeps_the_call_at_its_stage(
    service: Caller, store: RedisView
) -> None:
    await service.walk(1)

    answer = await service.turn("verify_identity", "it's me")
    retry = await service.turn("otp_verify", "I forgot the code")

    for body in (answer.json(), retry.json()):
        assert body["status"] == "success"
        assert body["response_status"] == "input_required"
        assert body["response"]["text"] == OTP_QUESTION
        assert (body["intent_flow_id"], body["next_flow_id"]) == (2, 2)
    state = store.state()
    assert (state["current_flow_id"], state["completed_flows"]) == (2, [1])
    assert state["pending_tasks"]["auth"]["task_id"] == answer.json()["response"]["task_id"]
    assert [s["response_status"] for s in store.steps()][1:] == ["input_required"] * 2
    assert all(ttl > 0 for ttl in store.ttls())


async def test_unknown_intent_goes_to_the_fallback_agent_and_does_not_move_the_call(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(1)

    answer = await service.turn("ask_weather", "will it rain?")

    assert answer.status_code == 200
    body = answer.json()
    assert body["agent_role"] == "fallback"
    assert body["status"] == "success"
    assert body["response"]["text"] == "fallback: heard 'will it rain?' at AUTHENTICATION"
    assert (body["intent_flow_id"], body["next_flow_id"]) == (2, 2)
    assert agents.executors["fallback"].seen.texts == ["will it rain?"]
    state = store.state()
    assert (state["current_flow_id"], state["completed_flows"]) == (2, [1])
    step = store.steps()[-1]
    assert (step["fallback"], step["agent_role"], step["intent_flow_id"]) == (True, "fallback", 2)
    assert all(ttl > 0 for ttl in store.ttls())


async def test_unknown_intent_without_a_fallback_agent_is_refused(
    make_service: ServiceFactory, flows_without_fallback: Path, store: RedisView, agents: Agents
) -> None:
    strict = make_service(flows_file=flows_without_fallback)
    await strict.walk(1)
    before = store.snapshot()

    answer = await strict.turn("ask_weather", "will it rain?")

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "unknown_intent"
    assert error["current_flow_id"] == 2
    assert error["allowed_intents"] == ["authenticate", "otp_verify", "verify_identity"]
    assert store.snapshot() == before
    assert all(ttl > 0 for ttl in store.ttls())
    assert agents.executors["fallback"].seen.texts == []


async def test_known_intent_at_the_wrong_stage_changes_nothing(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(3)
    before = store.snapshot()

    answer = await service.turn("closing", "bye")

    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "intent_not_allowed"
    assert (error["current_flow_id"], error["intent_flow_id"]) == (3, 5)
    assert error["allowed_intents"] == STAGE_3_INTENTS
    assert agents.executors["closing"].seen.texts == []
    assert store.snapshot() == before
    assert len(store.steps()) == 3
    assert all(ttl > 0 for ttl in store.ttls())


async def test_turn_for_a_complete_call_is_refused_and_changes_nothing(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(len(HAPPY_PATH))
    before = store.snapshot()

    answer = await service.turn("closing", "one more thing")

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "call_complete"
    assert store.snapshot() == before
    assert all(ttl > 0 for ttl in store.ttls())
    assert agents.executors["closing"].seen.texts == ["thanks, bye"]


async def test_turn_from_another_account_is_refused_and_changes_nothing(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(1)
    before = store.snapshot()

    answer = await service.turn("verify_identity", "it's me", account_id="ACC-OTHER")

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "account_mismatch"
    assert store.snapshot() == before
    assert store.state()["account_id"] == ACCOUNT_ID
    assert all(ttl > 0 for ttl in store.ttls())
    assert agents.executors["auth"].seen.texts == []
