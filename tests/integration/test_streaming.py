"""Streamed turns (`Accept: text/event-stream`): the agent's words reach the caller as the agent
speaks them, then the turn's answer, the same as unstreamed, over real HTTP from real a2a-sdk
agents speaking A2A 1.0 and 0.3."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.integration.conftest import (
    CALL_ID,
    Agents,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
    greeted_by,
    metric_total,
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
from tests.support.streams import StreamReader, is_stream, read_stream, without_ids
from tests.support.timing import DEADLINE_SEC, Gate

pytestmark = pytest.mark.integration


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


async def test_progress_the_agent_reports_while_working_is_heard_only_when_streamed(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView, v03: bool
) -> None:
    # docs/streaming.md: a one-shot answer holds only the artifacts and the last status message.
    caller = greeted_by(make_service, serve_agent(ProgressAgent(), v03=v03))

    plain = await caller.turn("greeting", call_id="CALL-JSON")
    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting") as response:
        stream = await read_stream(response)

    assert stream.chunks == ["One moment...", "\nYour refund is on its way."]
    assert "".join(stream.chunks) == stream.turn["response"]["text"]
    assert plain.json()["response"]["text"] == "Your refund is on its way."
    assert store.steps()[0]["response_data"]["text"] == stream.turn["response"]["text"]


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
