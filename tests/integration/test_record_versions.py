"""Records in a real Redis across releases: a call stored before records carried a version goes
on as if nothing happened; one stored by a newer release is refused with a 503 that changes
nothing and is logged (on one redis-server and on a Redis Cluster)."""

from __future__ import annotations

import json

import orjson
import pytest

from orchestrator_flows.core.records import STATE, STEP
from tests.integration.conftest import CALL_ID, HAPPY_PATH, Agents, Caller, RedisView, call_key
from tests.support.records import CLASSIFIER_FIELDS

pytestmark = pytest.mark.integration
KEYED = {"Idempotency-Key": "turn-1"}


# What format version 2 added (intent classification): gone from a record written before it.
ADDED_IN_2 = {*CLASSIFIER_FIELDS, "no_match_streak", "escalation"}


def unversioned(raw: bytes) -> bytes:
    record = json.loads(raw)
    assert record.pop("v") >= 1
    return orjson.dumps({k: v for k, v in record.items() if k not in ADDED_IN_2})


def as_before_versions(store: RedisView, call_id: str = CALL_ID) -> None:
    """Rewrites the call's records as the release before versions wrote them (the same, without
    "v"), keeping their expiry and the count of the bytes the call holds (steps and answers)."""
    client, counted = store.client, 0
    state = call_key(call_id, "state")
    client.set(state, unversioned(client.get(state)), keepttl=True)
    steps = call_key(call_id, "steps")
    for index, raw in enumerate(client.lrange(steps, 0, -1)):
        client.lset(steps, index, old := unversioned(raw))
        counted += len(raw) - len(old)
    answers = call_key(call_id, "idempotency")
    for key, raw in client.hgetall(answers).items():
        client.hset(answers, key, old := unversioned(raw))
        counted += len(raw) - len(old)
    client.decrby(call_key(call_id, "bytes"), counted)


def from_a_newer_release(record: dict, version: int) -> bytes:
    return orjson.dumps({**record, "v": version})


def unreadable_lines(err: str) -> list[dict]:
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [event for event in events if event.get("event") == "stored_record_unreadable"]


async def test_a_call_stored_before_record_versions_goes_on_and_its_new_records_carry_one(
    service: Caller, store: RedisView
) -> None:
    first = await service.turn(*HAPPY_PATH[0], headers=KEYED)
    as_before_versions(store)
    assert "v" not in store.state() and all("v" not in step for step in store.steps())

    replayed = await service.turn(*HAPPY_PATH[0], headers=KEYED)
    second = await service.turn(*HAPPY_PATH[1])
    session = await service.http.get(f"/session/{CALL_ID}")
    steps = await service.http.get(f"/session/{CALL_ID}/steps")

    assert replayed.status_code == 200 and replayed.content == first.content
    assert second.status_code == 200, second.text
    assert session.status_code == 200 and steps.status_code == 200
    assert [step["seq"] for step in session.json()["steps"]] == [1, 2]
    assert steps.json() == session.json()["steps"]  # versions are Redis's, not the API's
    assert store.state()["v"] == STATE.version and store.state()["step_count"] == 2
    assert [step.get("v") for step in store.steps()] == [None, STEP.version]
    assert session.json()["steps"][0]["intent_source"] == "client"  # read as version 2


async def test_a_state_from_a_newer_release_is_503_changes_nothing_and_is_logged(
    service: Caller, store: RedisView, agents: Agents, capsys: pytest.CaptureFixture[str]
) -> None:
    await service.walk(1)
    newer_version = STATE.version + 1
    newer = from_a_newer_release(store.state() | {"stage_now": 2}, newer_version)  # a field added
    store.client.set(call_key(CALL_ID, "state"), newer, keepttl=True)
    before, heard = store.snapshot(), list(agents.executors["auth"].seen.texts)
    capsys.readouterr()

    turn = await service.turn(*HAPPY_PATH[1])
    retry = await service.turn(*HAPPY_PATH[1])  # refused the same way: no lease was left behind
    session = await service.http.get(f"/session/{CALL_ID}")

    for answer in (turn, retry, session):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] | {"message": ""} == {
            "code": "store_record_unreadable",
            "message": "",
            "call_identify_id": CALL_ID,
            "record": "state",
            "version": newer_version,
            "reason": "newer_version",
        }
        assert int(answer.headers["Retry-After"]) >= 1
    assert store.snapshot() == before
    assert agents.executors["auth"].seen.texts == heard  # the agent was not called
    logged = unreadable_lines(capsys.readouterr().err)
    assert len(logged) == 3
    assert {(line["call_identify_id"], line["record"], line["version"]) for line in logged} == {
        (CALL_ID, "state", newer_version)
    }


async def test_a_step_from_a_newer_release_is_503_when_the_trail_is_read(
    service: Caller, store: RedisView
) -> None:
    await service.walk(1)
    newer = from_a_newer_release(store.steps()[0] | {"seq": 2}, 3)
    store.client.rpush(call_key(CALL_ID, "steps"), newer)

    for path in (f"/session/{CALL_ID}", f"/session/{CALL_ID}/steps"):
        answer = await service.http.get(path)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_record_unreadable"
        assert (answer.json()["error"]["record"], answer.json()["error"]["version"]) == ("step", 3)
