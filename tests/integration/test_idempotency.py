"""Idempotency-Key: a client may send a turn again and trust it is acted on once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import (
    CALL_ID,
    Caller,
    MisbehaverServer,
    RedisView,
    ServiceFactory,
    call_key,
)
from tests.support.misbehavers import Answering, Held, HttpStatus
from tests.support.timing import Gate

pytestmark = pytest.mark.integration


async def _send(
    caller: Caller,
    key: str,
    intent: str = "greeting",
    message: str = "hello",
    call_id: str = CALL_ID,
) -> httpx.Response:
    return await caller.turn(intent, message, call_id, headers={"Idempotency-Key": key})


async def test_same_key_and_body_replay_the_first_answer_byte_for_byte_without_the_agent(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = Answering()
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})

    first = await _send(caller, "key-1")
    again = await _send(caller, "key-1")
    await _send(caller, "key-2", "verify_identity", "it is me")  # the call moves on
    late = await _send(caller, "key-1")

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "success"
    assert "Idempotent-Replayed" not in first.headers
    for replay in (again, late):
        assert replay.status_code == 200
        assert replay.content == first.content
        assert replay.headers["Idempotent-Replayed"] == "true"
    assert agent.requests == 1
    steps = store.steps()
    assert [(s["intent"], s["idempotency_key"]) for s in steps] == [
        ("greeting", "key-1"),
        ("verify_identity", "key-2"),
    ]


async def test_same_key_with_another_body_is_refused_and_writes_nothing(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = Answering()
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})
    await _send(caller, "key-1", message="hello")
    before = store.snapshot()

    reused = await _send(caller, "key-1", message="hello again")

    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert store.snapshot() == before
    assert agent.requests == 1


async def test_same_key_while_the_first_request_runs_is_told_to_retry_later(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView, gate: Gate
) -> None:
    agent = Held(gate)
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})
    first = asyncio.create_task(_send(caller, "key-1"))
    await gate.arrived()  # the first request is inside the agent call

    same_key = await _send(caller, "key-1")
    other_key = await _send(caller, "key-2")
    gate.open()
    done = await first
    after = await _send(caller, "key-1")

    assert same_key.status_code == 409
    assert same_key.json()["error"]["code"] == "idempotency_key_in_progress"
    assert int(same_key.headers["Retry-After"]) >= 1
    assert other_key.status_code == 409
    assert other_key.json()["error"]["code"] == "turn_in_progress"
    assert int(other_key.headers["Retry-After"]) >= 1
    assert done.status_code == 200
    assert done.json()["status"] == "success"
    assert after.content == done.content
    assert after.headers["Idempotent-Replayed"] == "true"
    assert agent.requests == 1
    assert len(store.steps()) == 1


async def test_after_an_agent_fault_a_new_key_asks_again_and_the_same_key_replays_the_fault(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = HttpStatus(500, times=1)
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})

    failed = await _send(caller, "key-1")
    same_key = await _send(caller, "key-1")
    new_key = await _send(caller, "key-2")

    assert failed.json()["response"]["error"]["code"] == "agent_http_error"
    assert same_key.content == failed.content
    assert same_key.headers["Idempotent-Replayed"] == "true"
    assert new_key.json()["status"] == "success"
    assert new_key.json()["next_flow_id"] == 2
    steps = store.steps()
    assert [s["response_status"] for s in steps] == ["error", "success"]
    # The new key reached the agent as a new message, not as a repeat of the failed one.
    assert agent.message_ids == [s["a2a_message_id"] for s in steps]
    assert agent.message_ids[0] != agent.message_ids[1]


async def test_same_key_in_another_call_is_another_request(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = Answering()
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)})

    one = await _send(caller, "turn-1", call_id="CALL-A")
    other = await _send(caller, "turn-1", call_id="CALL-B")

    assert "Idempotent-Replayed" not in other.headers
    assert (one.json()["call_identify_id"], other.json()["call_identify_id"]) == (
        "CALL-A",
        "CALL-B",
    )
    assert agent.requests == 2
    assert agent.message_ids[0] != agent.message_ids[1]


async def test_idempotency_keys_expire_with_the_call_and_go_when_it_is_deleted(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = Answering()
    caller = make_service(agent_urls={"greeting": serve_misbehaver(agent)}, session_ttl_sec=120)
    keys = call_key(CALL_ID, "idempotency")

    await _send(caller, "key-1")

    assert store.client.hexists(keys, "key-1")
    assert 0 < store.client.ttl(keys) <= 120
    assert abs(store.client.ttl(keys) - store.ttls()[0]) <= 1

    deleted = await caller.http.delete(f"/session/{CALL_ID}")
    assert deleted.status_code == 204
    assert store.keys() == []

    again = await _send(caller, "key-1")
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["step_seq"] == 1
    assert agent.requests == 2
