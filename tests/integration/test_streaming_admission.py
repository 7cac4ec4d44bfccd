"""Streamed turns and the rules around them: refusals before the agent are JSON, one turn at a
time per key and per call, the worker's limit, and a client that leaves mid-stream, whose turn
goes on to its commit and replays by its Idempotency-Key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.conftest import (
    CALL_ID,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
    greeted_by,
    metric_total,
    turn_body,
)
from tests.support.agents import WORDS, StreamingAgent
from tests.support.streams import StreamReader, is_stream, read_stream
from tests.support.timing import DEADLINE_SEC, Gate, eventually

pytestmark = pytest.mark.integration


async def test_client_gone_mid_stream_the_agent_finishes_and_the_key_replays_the_turn(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    gate: Gate,
    store: RedisView,
    v03: bool,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    caller = greeted_by(make_service, serve_agent(agent, v03=v03))
    key = {"Idempotency-Key": "key-1"}

    async with asyncio.timeout(DEADLINE_SEC):
        async with caller.stream("greeting", headers=key) as response:
            first = await StreamReader(response).until("chunk")
        # The caller hung up after the first words; the agent still waits at the gate.
        assert first.data == {"text": WORDS[0]}
        assert (agent.finished, store.steps()) == (0, [])
        gate.open()
        await eventually(lambda: agent.finished == 1, "the agent to finish its answer")
        await eventually(lambda: _committed(caller), "the step to be committed")

    steps = (await caller.http.get(f"/session/{CALL_ID}/steps")).json()
    assert [(s["seq"], s["response_status"]) for s in steps] == [(1, "success")]
    assert steps[0]["response_data"]["text"] == agent.text
    assert store.state()["current_flow_id"] == 2

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", headers=key) as replay:
        replayed = await read_stream(replay)
    as_json = await caller.turn("greeting", headers=key)

    assert replay.status_code == 200
    assert is_stream(replay)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replayed.names == ["turn"]
    turn = replayed.turn
    assert (turn["status"], turn["step_seq"]) == ("success", 1)
    assert turn["response"]["text"] == agent.text
    # The same answer, whichever way it is asked for again.
    assert as_json.headers["idempotent-replayed"] == "true"
    assert as_json.content == replayed.turn_event.raw.encode()
    assert len(agent.seen.texts) == 1
    assert len(store.steps()) == 1
    assert await caller.metric("orch_stream_clients_gone_total") == 1


async def _committed(caller: Caller, call_id: str = CALL_ID) -> bool:
    answer = await caller.http.get(f"/session/{call_id}/steps")
    return answer.status_code == 200 and len(answer.json()) == 1


async def test_same_key_while_the_turn_streams_is_refused_as_json(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    gate: Gate,
    store: RedisView,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    caller = greeted_by(make_service, serve_agent(agent))
    key = {"Idempotency-Key": "key-1"}

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", headers=key) as first:
        stream = StreamReader(first)
        await stream.until("chunk")
        async with caller.stream("greeting", headers=key) as duplicate:
            await duplicate.aread()
        plain_duplicate = await caller.turn("greeting", headers=key)
        async with caller.stream("greeting", headers={"Idempotency-Key": "key-2"}) as other:
            await other.aread()
        gate.open()
        await stream.to_end()

    assert duplicate.status_code == 409
    assert not is_stream(duplicate)
    assert duplicate.headers["content-type"].startswith("application/json")
    assert duplicate.json()["error"]["code"] == plain_duplicate.json()["error"]["code"]
    assert duplicate.json()["error"]["code"] in ("idempotency_key_in_progress", "turn_in_progress")
    assert int(duplicate.headers["Retry-After"]) >= 1
    assert (other.status_code, other.json()["error"]["code"]) == (409, "turn_in_progress")
    assert stream.turn["status"] == "success"
    assert "".join(stream.chunks) == agent.text
    assert len(agent.seen.texts) == 1
    assert len(store.steps()) == 1


REFUSALS = {
    # name: (intent, body fields, headers, whether the client sends its API key)
    "intent_of_a_later_stage": ("refund_request", {}, {}, True),
    "no_api_key": ("greeting", {}, {}, False),
    "invalid_body": ("greeting", {"account_id": None}, {}, True),
    "body_too_large": ("greeting", {"input_message": "x" * 70_000}, {}, True),
    "invalid_idempotency_key": ("greeting", {}, {"Idempotency-Key": "two words"}, True),
}


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_turn_refused_before_the_agent_is_a_json_error_not_a_stream(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    store: RedisView,
    refusal: str,
) -> None:
    agent = StreamingAgent()
    caller = greeted_by(make_service, serve_agent(agent))
    intent, fields, headers, keyed = REFUSALS[refusal]
    body = turn_body(intent, "hello", **fields)

    async with httpx.AsyncClient(
        base_url=caller.http.base_url,
        headers=caller.http.headers if keyed else {},
        timeout=DEADLINE_SEC,
    ) as http:
        plain = await http.post("/orchestrate", json=body, headers=headers)
        streamed = await http.post(
            "/orchestrate", json=body, headers=headers | {"Accept": "text/event-stream"}
        )

    assert plain.status_code >= 400
    assert streamed.status_code == plain.status_code
    assert not is_stream(streamed)
    assert streamed.headers["content-type"].startswith("application/json")
    assert streamed.json()["error"]["code"] == plain.json()["error"]["code"]
    assert streamed.json()["error"]["message"]
    assert agent.seen.texts == []
    assert store.keys() == []


async def test_turn_whose_client_left_still_holds_its_place_in_the_workers_limit(
    make_service: ServiceFactory, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    # Pings far apart: the service learns its client left when it leaves, not at its next
    # write (the agent is held at the gate: there is none until the test opens it).
    caller = greeted_by(make_service, serve_agent(agent), max_turns_in_flight=1)

    async with asyncio.timeout(DEADLINE_SEC):
        async with caller.stream("greeting", call_id="CALL-A") as response:
            await StreamReader(response).until("chunk")
        # The service has seen its client go (it counts it before it lets the request go).
        await eventually(
            lambda: _gone_counted(caller), "the service to see the streamed turn's client go"
        )
        # Refused by its stage's rules, were it admitted: the worker's limit comes first.
        second = await caller.turn("refund_request", call_id="CALL-B")
        in_flight = await caller.metric("orch_turns_in_flight")
        gate.open()
        await eventually(lambda: _committed(caller, "CALL-A"), "the first turn's commit")

    assert (second.status_code, second.json()["error"]["code"]) == (503, "overloaded")
    assert in_flight == 1
    assert agent.finished == 1


async def _gone_counted(caller: Caller) -> bool:
    return await metric_total(caller, "orch_stream_clients_gone_total") == 1


async def test_streamed_turn_past_the_workers_limit_is_refused_as_json(
    make_service: ServiceFactory, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    caller = greeted_by(make_service, serve_agent(agent), max_turns_in_flight=1)

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", call_id="CALL-A") as first:
        stream = StreamReader(first)
        await stream.until("chunk")
        async with caller.stream("greeting", call_id="CALL-B") as second:
            await second.aread()
        gate.open()
        await stream.to_end()

    assert (second.status_code, second.json()["error"]["code"]) == (503, "overloaded")
    assert not is_stream(second)
    assert int(second.headers["Retry-After"]) >= 1
    assert stream.turn["status"] == "success"
    assert store.steps("CALL-B") == []
    assert len(agent.seen.texts) == 1


async def test_a_json_turn_replays_as_a_stream_of_its_one_turn_event(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView
) -> None:
    agent = StreamingAgent()
    caller = greeted_by(make_service, serve_agent(agent))
    key = {"Idempotency-Key": "key-1"}

    plain = await caller.turn("greeting", headers=key)
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", headers=key) as response:
        replayed = await read_stream(response)

    assert plain.status_code == 200
    assert response.headers["idempotent-replayed"] == "true"
    assert replayed.names == ["turn"]
    assert replayed.turn_event.raw.encode() == plain.content
    assert len(agent.seen.texts) == 1
