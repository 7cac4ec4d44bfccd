"""Streamed turns (`Accept: text/event-stream`): the agent's words reach the caller as the agent
speaks them, then the turn's answer, over real HTTP from real a2a-sdk agents (A2A 1.0 and 0.3)
and from agents that stream badly."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    CALL_ID,
    Agents,
    AgentServer,
    Caller,
    MisbehaverServer,
    RedisView,
    ServiceFactory,
    flows_with_idempotent_greeting,
    turn_body,
)
from tests.support.agents import (
    WORDS,
    EchoingStreamer,
    FailingTaskAgent,
    MessageAgent,
    ProgressAgent,
    RaisingAgent,
    RepeatingAgent,
    StreamingAgent,
    TaskAgent,
)
from tests.support.misbehavers import (
    STREAMED_CHUNKS,
    AnyAgent,
    CutMidStream,
    GarbageMidStream,
    HugeEvent,
    JsonRpcError,
    StallsMidStream,
)
from tests.support.streams import StreamReader, is_stream, read_stream, without_ids
from tests.support.timing import DEADLINE_SEC, Gate, eventually

pytestmark = pytest.mark.integration

# Only for the agent that stalls: long enough for its first chunk to arrive on a loaded machine.
A2A_TIMEOUT_SEC = 2.0


@pytest.fixture(params=["a2a-1.0", "a2a-0.3"])
def v03(request: pytest.FixtureRequest) -> bool:
    """Whether the a2a-sdk agent speaks A2A 0.3 (message/stream) rather than 1.0."""
    return request.param == "a2a-0.3"


def greeted_by(make_service: ServiceFactory, url: str, **settings: Any) -> Caller:
    """A service whose first stage (greeting) is served by the agent at `url`."""
    return make_service(agent_urls={"greeting": url}, **settings)


async def test_words_reach_the_caller_while_the_agent_is_still_speaking(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    gate: Gate,
    store: RedisView,
    v03: bool,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1, closing="Anything else?")
    caller = greeted_by(make_service, serve_agent(agent, v03=v03))

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = StreamReader(response)
        first = await stream.until("chunk")
        # The caller has the first chunk while the agent, held at the gate, has not finished.
        await gate.arrived()
        assert agent.finished == 0
        gate.open()
        await stream.to_end()

    assert response.status_code == 200
    assert is_stream(response)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert "idempotent-replayed" not in response.headers
    assert first.data == {"text": WORDS[0]}
    assert stream.chunks == [*WORDS, "\nAnything else?"]
    turn = stream.turn
    assert "".join(stream.chunks) == turn["response"]["text"] == agent.text
    assert (turn["status"], turn["response_status"], turn["step_seq"]) == ("success", "success", 1)
    assert turn["next_flow_id"] == 2
    # The agent's task states as they change: working before its first words.
    assert stream.statuses == ["submitted", "working", "completed"]
    assert turn["response"]["task_state"] == "completed"
    working = stream.events.index(next(e for e in stream.events if e.data == {"state": "working"}))
    assert working < stream.names.index("chunk")
    step = store.steps()[0]
    assert (step["seq"], step["response_status"]) == (1, "success")
    assert step["response_data"]["text"] == agent.text
    assert store.state()["current_flow_id"] == 2
    assert len(agent.seen.texts) == 1
    assert await metric_total(caller, "orch_streamed_turns_total") == 1
    assert await metric_total(caller, "orch_agent_first_chunk_seconds_count") == 1


async def test_streamed_turn_ends_with_what_the_same_turn_answers_without_streaming(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    # Two artifacts, each in appended chunks with lastChunk on its last, then a status message.
    agent = StreamingAgent(("Your ", "refund"), ("is ", "approved."), closing="Bye.")
    caller = greeted_by(make_service, serve_agent(agent, v03=v03))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert plain.status_code == 200, plain.text
    assert stream.chunks == ["Your ", "refund", "\nis ", "approved.", "\nBye."]
    assert "".join(stream.chunks) == "Your refund\nis approved.\nBye."
    assert without_ids(stream.turn) == without_ids(plain.json())
    assert stream.turn["call_identify_id"] == CALL_ID
    assert stream.turn["response"]["task_id"] != plain.json()["response"]["task_id"]
    assert [s["response_data"]["text"] for s in store.steps()] == [agent.text]


ANSWER_KINDS = {
    "message": lambda: MessageAgent("greeting"),
    "task_with_an_artifact": lambda: TaskAgent("greeting"),
    "text_and_data_parts": RepeatingAgent,
    "failed_task": FailingTaskAgent,
    "raises_at_once": RaisingAgent,
}


@pytest.mark.parametrize("kind", ANSWER_KINDS)
async def test_every_kind_of_answer_streamed_ends_as_the_same_turn_unstreamed(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    store: RedisView,
    v03: bool,
    kind: str,
) -> None:
    caller = greeted_by(make_service, serve_agent(ANSWER_KINDS[kind](), v03=v03))

    plain = await caller.turn("greeting", "card 4111 1111 1111 1111", call_id="CALL-JSON")
    async with (
        asyncio.timeout(DEADLINE_SEC),
        caller.stream("greeting", "card 4111 1111 1111 1111") as response,
    ):
        stream = await read_stream(response)

    assert plain.status_code == response.status_code == 200
    assert without_ids(stream.turn) == without_ids(plain.json())
    if stream.turn["status"] == "success":
        assert "".join(stream.chunks) == stream.turn["response"]["text"]
    steps = [store.steps(call_id)[0] for call_id in ("CALL-JSON", CALL_ID)]
    assert steps[0]["response_data"] == steps[1]["response_data"] | {
        key: steps[0]["response_data"][key]
        for key in ("task_id", "context_id")
        if key in steps[0]["response_data"]
    }


@pytest.mark.xfail(
    strict=True,
    reason="service: a working status message is told as words when streamed, but is not in "
    "the unstreamed answer's text (only the artifacts and the final status message are)",
)
async def test_progress_the_agent_reports_is_in_the_same_text_streamed_or_not(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    caller = greeted_by(make_service, serve_agent(ProgressAgent(), v03=v03))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert "".join(stream.chunks) == stream.turn["response"]["text"]
    assert stream.turn["response"]["text"] == plain.json()["response"]["text"]


async def test_agent_asking_for_input_streams_its_words_then_its_question(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    agent = StreamingAgent(("Let me ", "check. "), closing="Which order is it?", asks=True)
    caller = greeted_by(make_service, serve_agent(agent, v03=v03))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    turn = stream.turn
    assert "".join(stream.chunks) == turn["response"]["text"] == agent.text
    assert agent.text == "Let me check. \nWhich order is it?"
    assert (turn["response_status"], turn["response"]["task_state"]) == (
        "input_required",
        "input_required",
    )
    assert stream.statuses == ["submitted", "working", "input_required"]
    assert without_ids(turn) == without_ids(plain.json())
    assert store.steps()[0]["response_status"] == "input_required"


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


async def metric_total(caller: Caller, name: str) -> float:
    """The sum of a metric's samples over all its labels; 0 when it has none yet."""
    text = (await caller.http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


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


async def test_agent_that_does_not_stream_gives_its_whole_text_in_one_chunk(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    # Its card says streaming: false; a2a-sdk refuses it a streamed request.
    agent = StreamingAgent(("Your ", "refund"), ("is ", "approved."), closing="Bye.")
    caller = greeted_by(make_service, serve_agent(agent, v03=v03, streaming=False))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert response.status_code == 200
    assert stream.chunks == [agent.text]
    assert stream.names[-2:] == ["chunk", "turn"]
    assert stream.turn["status"] == "success"
    assert stream.turn["response"]["text"] == agent.text
    assert without_ids(stream.turn) == without_ids(plain.json())
    assert len(agent.seen.texts) == 2


async def test_long_silence_before_the_first_words_is_kept_alive_with_pings(
    make_service: ServiceFactory, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    agent = StreamingAgent(gate=gate, held_after=0)
    caller = greeted_by(make_service, serve_agent(agent), stream_ping_sec=0.05)
    before_words: list[str] = []
    after: list[str] = []

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        lines = response.aiter_lines()
        # The agent is held before its first word: whatever comes now is the service's own.
        while not (line := await anext(lines)).startswith(":"):
            before_words.append(line)
        gate.open()
        after = [line async for line in lines]

    assert line.startswith(": ping")
    assert not any(seen.startswith("event: chunk") for seen in before_words)
    assert any(seen.startswith("event: chunk") for seen in after)
    assert [seen for seen in after if seen.startswith("event: ")][-1] == "event: turn"
    assert len(store.steps()) == 1


async def test_a_question_and_its_answer_stream_within_one_agent_task(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    store: RedisView,
    v03: bool,
) -> None:
    agent = StreamingAgent(("Let me ", "check. "), closing="Which code did we send?", asks=True)
    caller = make_service(agent_urls={"auth": serve_agent(agent, v03=v03)})
    await caller.walk(1)

    async with asyncio.timeout(DEADLINE_SEC):
        async with caller.stream("verify_identity", "it is me") as response:
            question = await read_stream(response)
        async with caller.stream("otp_verify", "the code is 123456") as response:
            answer = await read_stream(response)

    asked, done = question.turn, answer.turn
    assert (asked["response_status"], asked["next_flow_id"]) == ("input_required", 2)
    assert (done["response_status"], done["next_flow_id"]) == ("success", 3)
    assert "".join(question.chunks) == asked["response"]["text"] == agent.text
    assert "".join(answer.chunks) == done["response"]["text"] == agent.text
    # The reply went to the task that asked: the agent continued it rather than start another.
    assert done["response"]["task_id"] == asked["response"]["task_id"]
    assert answer.statuses[-1] == "completed"
    assert agent.finished == 2
    assert store.state()["completed_flows"] == [1, 2]


async def test_agent_answering_with_one_message_streams_it_as_one_chunk(
    service: Caller, agents: Agents, store: RedisView
) -> None:
    # The default greeting agent's card says it streams; it answers with a plain message.
    async with asyncio.timeout(DEADLINE_SEC), service.stream("greeting", "hi") as response:
        stream = await read_stream(response)

    assert stream.names == ["chunk", "turn"]
    assert stream.chunks == ["greeting: heard 'hi' at GREETING"]
    assert stream.turn["response"]["text"] == stream.chunks[0]
    assert (stream.turn["response"]["kind"], stream.turn["response"]["task_state"]) == (
        "message",
        None,
    )
    assert agents.executors["greeting"].seen.texts == ["hi"]


async def test_concurrent_streams_each_carry_only_their_own_callers_words(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView
) -> None:
    caller = greeted_by(make_service, serve_agent(EchoingStreamer()))
    calls = {f"CALL-{n:02d}": f"caller {n} says {'la ' * n}bye" for n in range(16)}

    async def streamed(call_id: str, words: str) -> StreamReader:
        async with caller.stream("greeting", words, call_id=call_id) as response:
            return await read_stream(response)

    async with asyncio.timeout(DEADLINE_SEC):
        streams = await asyncio.gather(*(streamed(c, w) for c, w in calls.items()))

    for (call_id, words), stream in zip(calls.items(), streams, strict=True):
        assert stream.chunks == re.findall(r"\S+\s*", words)
        assert (stream.turn["call_identify_id"], stream.turn["response"]["text"]) == (
            call_id,
            words,
        )
        assert [s["response_data"]["text"] for s in store.steps(call_id)] == [words]


async def test_personal_data_spoken_across_chunks_reaches_the_caller_but_is_stored_masked(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView
) -> None:
    card = "4111 1111 1111 1111"
    # The card number split across three chunks: no one chunk holds it whole.
    agent = StreamingAgent(
        ("Refunded to card 4111 ", "1111 1111 ", "1111, thank you."),
    )
    caller = greeted_by(make_service, serve_agent(agent))

    key = {"Idempotency-Key": "key-1"}  # the answer is kept for replays too
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", headers=key) as response:
        stream = await read_stream(response)

    assert card in stream.turn["response"]["text"] == "".join(stream.chunks)
    stored = "\n".join(v for values in store.stored().values() for v in values)
    assert CALL_ID in stored  # the search did look at the call
    assert card not in stored
    assert card.replace(" ", "") not in stored
    assert "****1111" in store.steps()[0]["response_data"]["text"]


async def test_turn_whose_client_left_still_holds_its_place_in_the_workers_limit(
    make_service: ServiceFactory, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
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
