"""Turns that arrive together: one call's turns never overlap, different calls never mix."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

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
from tests.support.agents import SlowAgent

pytestmark = pytest.mark.integration

SLOW_AGENT_SEC = 0.5


async def _timed_turn(caller: Caller, intent: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await caller.turn(intent)
    return answer, time.monotonic() - started


async def test_second_turn_at_the_same_moment_is_told_to_retry(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView
) -> None:
    slow = SlowAgent(delay=SLOW_AGENT_SEC)
    caller = make_service(agent_urls={"greeting": serve_agent(slow)})

    answers = await asyncio.gather(_timed_turn(caller, "greeting"), _timed_turn(caller, "greeting"))

    (done, done_sec), (busy, busy_sec) = sorted(answers, key=lambda a: a[0].status_code)
    assert (done.status_code, busy.status_code) == (200, 409)
    assert busy.json()["error"]["code"] == "turn_in_progress"
    assert int(busy.headers["Retry-After"]) >= 1
    assert done_sec >= SLOW_AGENT_SEC
    assert busy_sec < SLOW_AGENT_SEC / 2
    assert [s["seq"] for s in store.steps()] == [1]
    assert store.state()["step_count"] == 1
    assert all(ttl > 0 for ttl in store.ttls())
    assert slow.seen.texts == ["hello"]


async def test_lease_left_by_a_dead_turn_blocks_until_it_expires(
    service: Caller, store: RedisView, agents: Agents
) -> None:
    await service.walk(1)
    store.client.set(call_key(CALL_ID, "lease"), "dead-turn", px=300)

    blocked = await service.turn("verify_identity", "it's me")

    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "turn_in_progress"
    assert blocked.headers["Retry-After"] == "1"
    assert len(store.steps()) == 1
    assert agents.executors["auth"].seen.texts == []

    await asyncio.sleep(0.35)
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
