"""Turns that arrive together: one call's turns never overlap, different calls never mix."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    CALL_ID,
    HAPPY_PATH,
    Agents,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
    call_key,
)
from tests.support.agents import GatedAgent
from tests.support.timing import DEADLINE_SEC, Gate, eventually

pytestmark = pytest.mark.integration


async def test_second_turn_at_the_same_moment_is_told_to_retry(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, gate: Gate
) -> None:
    agent = GatedAgent(gate)
    caller = make_service(agent_urls={"greeting": serve_agent(agent)})

    turns = {asyncio.create_task(caller.turn("greeting")) for _ in range(2)}
    first, running = await asyncio.wait(
        turns, timeout=DEADLINE_SEC, return_when=asyncio.FIRST_COMPLETED
    )
    # One turn answered while the agent held the other: it was not kept waiting.
    assert len(first) == 1, "neither turn was answered while the other was in the agent"
    busy = first.pop().result()
    gate.open()
    done = await running.pop()

    assert (done.status_code, busy.status_code) == (200, 409)
    assert busy.json()["error"]["code"] == "turn_in_progress"
    assert int(busy.headers["Retry-After"]) >= 1
    assert [s["seq"] for s in store.steps()] == [1]
    assert store.state()["step_count"] == 1
    assert all(ttl > 0 for ttl in store.ttls())
    assert agent.seen.texts == ["hello"]


async def test_lease_left_by_a_dead_turn_blocks_until_it_expires(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(1)
    lease = call_key(CALL_ID, "lease")
    store.client.set(lease, "dead-turn", px=30_000)

    blocked = await service.turn("verify_identity", "it's me")
    left_ms = store.client.pttl(lease)

    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "turn_in_progress"
    # Retry-After is the lease's remaining life, in whole seconds rounded up.
    assert -(-left_ms // 1000) <= int(blocked.headers["Retry-After"]) <= 30
    assert len(store.steps()) == 1
    assert agents.executors["auth"].seen.texts == []

    store.client.pexpire(lease, 100)  # the rest of its life, shortened
    await eventually(lambda: not store.client.exists(lease), "the dead turn's lease to expire")
    later = await service.turn("verify_identity", "it's me")

    assert later.status_code == 200
    assert later.json()["step_seq"] == 2
    assert store.keys() == [call_key(CALL_ID, kind) for kind in ("bytes", "state", "steps")]


async def test_fifty_calls_at_once_each_keep_their_own_ordered_trail(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    call_ids = [f"CALL-{n:03d}" for n in range(50)]

    await asyncio.gather(*(service.walk(len(HAPPY_PATH), call_id=c) for c in call_ids))

    for call_id in call_ids:
        steps = store.steps(call_id)
        assert [s["seq"] for s in steps] == [1, 2, 3, 4, 5, 6], call_id
        assert [s["intent_flow_id"] for s in steps] == [1, 2, 2, 3, 4, 5], call_id
        assert store.state(call_id)["is_complete"] is True
        assert all(ttl > 0 for ttl in store.ttls(call_id))
    greeted = [m["call_identify_id"] for m in agents.executors["greeting"].seen.metadata]
    assert sorted(greeted) == call_ids


async def test_a_burst_past_the_redis_connections_waits_and_no_turn_is_refused(
    make_service: ServiceFactory, store: RedisView
) -> None:
    # Four Redis connections for 200 first turns released at once: before the store's slots,
    # redis-py refused the 101st concurrent command with MaxConnectionsError (a 503).
    narrow = make_service(redis_max_connections=4)
    call_ids = [f"BURST-{n:03d}" for n in range(200)]

    answers = await asyncio.gather(*(narrow.turn(*HAPPY_PATH[0], call_id=c) for c in call_ids))

    assert sorted({answer.status_code for answer in answers}) == [200]
    assert all(len(store.steps(call_id)) == 1 for call_id in call_ids)
    text = (await narrow.http.get("/metrics")).text
    waits = {
        sample.labels["pool"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "orch_pool_wait_seconds_count"
    }
    assert waits["redis"] > 0  # the burst did queue for the four connections
