"""Streamed turns whose agent fails before or while it speaks (raises, cut, garbage, stalls,
over the size limit, a JSON-RPC error): the stream ends with an error turn, recorded as a step,
and words already told are never told twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import (
    AgentServer,
    MisbehaverServer,
    RedisView,
    ServiceFactory,
    flows_with_idempotent_greeting,
    greeted_by,
    metric_total,
)
from tests.support.agents import WORDS, StreamingAgent
from tests.support.misbehavers import (
    STREAMED_CHUNKS,
    AnyAgent,
    CutMidStream,
    GarbageMidStream,
    HugeEvent,
    JsonRpcError,
    StallsMidStream,
)
from tests.support.streams import StreamReader, is_stream, read_stream
from tests.support.timing import DEADLINE_SEC

pytestmark = pytest.mark.integration

# Only for the agent that stalls: long enough for its first chunk to arrive on a loaded machine.
A2A_TIMEOUT_SEC = 2.0


async def test_agent_that_raises_mid_stream_ends_the_stream_with_an_error_turn(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    agent = StreamingAgent(raises_after=2)
    caller = greeted_by(make_service, serve_agent(agent, v03=v03))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert response.status_code == 200
    assert stream.chunks == list(WORDS[:2])
    turn = stream.turn
    assert (turn["status"], turn["response_status"]) == ("error", "error")
    assert turn["response"]["error"]["code"] == plain.json()["response"]["error"]["code"]
    assert turn["response"]["error"]["code"] == "agent_error"
    assert (turn["intent_flow_id"], turn["next_flow_id"]) == (1, 1)
    step = store.steps()[0]
    assert (step["response_status"], step["error"]["code"]) == ("error", "agent_error")


@pytest.fixture(
    params=[
        "cut_abruptly",
        "ended_unfinished",
        "garbage",
        "stalled",
        "event_over_the_size_limit",
        "json_rpc_error_first",
    ]
)
def bad_streamer(request: pytest.FixtureRequest) -> tuple[AnyAgent, int, str]:
    """(an agent that streams badly, the chunks it sends first, the fault code it causes)."""
    return {
        "cut_abruptly": (CutMidStream(abrupt=True), 2, "agent_disconnected"),
        "ended_unfinished": (CutMidStream(abrupt=False), 2, "agent_disconnected"),
        "garbage": (GarbageMidStream(), 1, "agent_bad_response"),
        "stalled": (StallsMidStream(), 1, "agent_timeout"),
        "event_over_the_size_limit": (HugeEvent(), 1, "agent_bad_response"),
        "json_rpc_error_first": (JsonRpcError(streams=True), 0, "agent_error"),
    }[request.param]


async def test_agent_stream_fault_ends_with_an_error_turn_and_is_recorded(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
    bad_streamer: tuple[AnyAgent, int, str],
    tmp_path: Path,
) -> None:
    agent, chunks_sent, code = bad_streamer
    timeout = {"a2a_timeout_sec": A2A_TIMEOUT_SEC} if code == "agent_timeout" else {}
    # An agent safe to ask again: only the words it already spoke keep the service from it.
    flows = flows_with_idempotent_greeting(tmp_path)
    caller = greeted_by(make_service, serve_misbehaver(agent), flows_file=flows, **timeout)

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert response.status_code == 200
    assert is_stream(response)
    assert stream.chunks == list(STREAMED_CHUNKS[:chunks_sent])
    turn = stream.turn
    assert (turn["status"], turn["response_status"]) == ("error", "error")
    assert turn["response"]["error"]["code"] == code
    assert (turn["intent_flow_id"], turn["next_flow_id"], turn["step_seq"]) == (1, 1, 1)
    steps = store.steps()
    assert [(s["response_status"], s["error"]["code"]) for s in steps] == [("error", code)]
    assert store.state()["stages"]["1"]["errors"] == 1
    # Words already spoken are not spoken again: the agent was called once.
    assert agent.requests == 1
    cut = await metric_total(caller, "orch_agent_streams_cut_total")
    assert cut == (1 if chunks_sent else 0)


async def test_stream_cut_before_any_words_is_asked_again_when_the_agent_is_idempotent(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
    tmp_path: Path,
) -> None:
    agent = CutMidStream(abrupt=True, chunks=0, times=1)
    flows = flows_with_idempotent_greeting(tmp_path)
    caller = greeted_by(make_service, serve_misbehaver(agent), flows_file=flows)

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert stream.chunks == list(STREAMED_CHUNKS)
    assert (stream.turn["status"], stream.turn["response"]["text"]) == (
        "success",
        "".join(STREAMED_CHUNKS),
    )
    [step] = store.steps()
    assert (step["response_status"], step["attempts"]) == ("success", 2)
    assert agent.message_ids == [step["a2a_message_id"]] * 2


async def test_after_a_stream_fault_the_same_key_replays_the_fault_and_a_new_key_asks_again(
    make_service: ServiceFactory, serve_misbehaver: MisbehaverServer, store: RedisView
) -> None:
    agent = CutMidStream(abrupt=True, times=1)
    caller = greeted_by(make_service, serve_misbehaver(agent))

    async def streamed(key: str) -> tuple[httpx.Response, StreamReader]:
        headers = {"Idempotency-Key": key}
        async with caller.stream("greeting", headers=headers) as response:
            return response, await read_stream(response)

    async with asyncio.timeout(DEADLINE_SEC):
        _, failed = await streamed("key-1")
        replay, replayed = await streamed("key-1")
        _, asked_again = await streamed("key-2")

    assert failed.turn["response"]["error"]["code"] == "agent_disconnected"
    assert replay.headers["idempotent-replayed"] == "true"
    assert replayed.names == ["turn"]
    assert replayed.turn_event.raw == failed.turn_event.raw
    assert asked_again.turn["status"] == "success"
    assert "".join(asked_again.chunks) == "".join(STREAMED_CHUNKS)
    assert [s["response_status"] for s in store.steps()] == ["error", "success"]
    assert agent.requests == 2
