"""Reading and forgetting a call, and what callers see when Redis is down or frozen."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import (
    CALL_ID,
    Agents,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
)
from tests.support.agents import GatedAgent, free_port
from tests.support.timing import Gate

pytestmark = pytest.mark.integration


async def test_deleted_call_is_gone_from_every_endpoint_and_from_redis(
    service: Caller, store: RedisView
) -> None:
    await service.walk(2)

    deleted = await service.http.delete(f"/session/{CALL_ID}")

    assert (deleted.status_code, deleted.content) == (204, b"")
    assert store.keys() == []
    for method, path in [
        ("GET", f"/session/{CALL_ID}"),
        ("GET", f"/session/{CALL_ID}/steps"),
        ("DELETE", f"/session/{CALL_ID}"),
    ]:
        answer = await service.http.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["code"] == "call_not_found"


async def test_redis_down_answers_503_with_retry_after(
    make_service: ServiceFactory, agents: Agents
) -> None:
    cut_off = make_service(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    turn = await cut_off.turn("greeting")
    session = await cut_off.http.get(f"/session/{CALL_ID}")

    for answer in (turn, session):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
    assert agents.executors["greeting"].seen.texts == []


async def test_turn_still_running_when_its_call_is_deleted_is_not_recorded(
    service: Caller,
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    store: RedisView,
    gate: Gate,
) -> None:
    slow = make_service(agent_urls={"auth": serve_agent(GatedAgent(gate))})
    await service.walk(1)
    running = asyncio.create_task(slow.turn("verify_identity", "it's me"))
    await gate.arrived()  # the turn is inside the agent call

    deleted = await service.http.delete(f"/session/{CALL_ID}")
    gate.open()
    late = await running

    assert deleted.status_code == 204
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "turn_conflict"
    assert store.keys() == []


async def test_turn_still_running_when_its_call_is_deleted_stays_out_of_a_new_call(
    service: Caller,
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    store: RedisView,
    gate: Gate,
) -> None:
    # The DELETE also drops the running turn's lease, and the new call soon has as many steps
    # as the old one had when the turn read it: only the lease tells the two calls apart.
    slow = make_service(agent_urls={"auth": serve_agent(GatedAgent(gate))})
    await service.walk(1)
    running = asyncio.create_task(slow.turn("verify_identity", "it's me"))
    await gate.arrived()  # the turn is inside the agent call
    await service.http.delete(f"/session/{CALL_ID}")

    fresh = await service.turn("greeting", "hello again", account_id="ACC-NEW")
    gate.open()
    late = await running

    assert fresh.status_code == 200
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "turn_conflict"
    assert store.state()["account_id"] == "ACC-NEW"
    assert [(s["seq"], s["input_message"]) for s in store.steps()] == [(1, "hello again")]


async def test_frozen_redis_answers_503_within_the_redis_timeout(
    make_service: ServiceFactory, store: RedisView
) -> None:
    impatient = make_service(redis_timeout_sec=0.3)
    store.pause_writes(60_000)  # frozen until the test thaws it
    try:
        answer = await impatient.turn("greeting")
    finally:
        store.unpause()

    # Answered while Redis was still frozen: the service gave up waiting by itself.
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "store_unavailable"
