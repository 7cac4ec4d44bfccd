"""A2AClient with a listener: streamed answers from real a2a-sdk agents (A2A 1.0 and 0.3), and
hand-written streams for every way a stream can go wrong."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentDisconnected,
    AgentError,
    AgentTaskFailed,
)
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.infra.a2a_client import A2AClient
from orchestrator_flows.infra.a2a_stream import StreamAssembly
from tests.support.agents import MessageAgent, OtpAgent, Recording, TaskAgent, agent_app

AGENT = "http://agent.test/"
METADATA = {"call_identify_id": "CALL-1", "account_id": "ACC-1", "flow_label": "GREETING"}
WORDS = ["Your ", "refund ", "is ", "on ", "its ", "way."]


class Heard:
    """A listener: every state and chunk, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def status(self, state: str) -> None:
        self.events.append(("status", state))

    def chunk(self, text: str) -> None:
        self.events.append(("chunk", text))

    @property
    def chunks(self) -> list[str]:
        return [text for kind, text in self.events if kind == "chunk"]


class WordsAgent(Recording):
    """Streams WORDS as one artifact grown by appended parts, then a closing status message."""

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.start_work()
        for n, word in enumerate(WORDS):
            await up.add_artifact(
                [new_text_part(word)],
                artifact_id="answer",
                append=n > 0,
                last_chunk=n == len(WORDS) - 1,
            )
        await up.complete(up.new_agent_message([new_text_part("Anything else?")]))


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., tuple[A2AClient, list[httpx.Request]]]]:
    opened: list[httpx.AsyncBaseTransport] = []

    def build(app: Any = None, handler: Any = None, **options: Any):
        inner = httpx.ASGITransport(app=app) if app else httpx.MockTransport(handler)
        sent: list[httpx.Request] = []

        class Recorded(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                sent.append(request)
                return await inner.handle_async_request(request)

        opened.append(inner)
        settings = {"timeout": 5.0, "max_response_bytes": 1_000_000} | options
        return A2AClient(Recorded(), **settings), sent

    yield build
    for transport in opened:
        await transport.aclose()


async def streamed(client: A2AClient, heard: Heard, **options: Any) -> AgentReply:
    return await client.send_message(
        AGENT, "refund please", METADATA, message_id="msg-1", listener=heard, **options
    )


# Real a2a-sdk agents.


@pytest.mark.parametrize("v03", [False, True], ids=["a2a-1.0", "a2a-0.3"])
async def test_streamed_words_arrive_in_order_and_make_the_reply(client, v03: bool) -> None:
    agent_client, sent = client(agent_app(AGENT, WordsAgent(), v03=v03))
    heard = Heard()

    reply = await streamed(agent_client, heard)

    assert heard.chunks == [*WORDS, "\nAnything else?"]
    assert "".join(heard.chunks) == reply.text == "Your refund is on its way.\nAnything else?"
    states = [text for kind, text in heard.events if kind == "status"]
    assert states == ["submitted", "working", "completed"]
    assert (reply.kind, reply.task_state) == ("task", "completed")
    post = next(r for r in sent if r.method == "POST")
    assert json.loads(post.read())["method"] == (
        "message/stream" if v03 else "SendStreamingMessage"
    )
    assert post.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("v03", [False, True], ids=["a2a-1.0", "a2a-0.3"])
async def test_streamed_and_one_shot_answers_of_an_agent_are_the_same_text(client, v03) -> None:
    agent_client, _ = client(agent_app(AGENT, WordsAgent(), v03=v03))

    streamed_reply = await streamed(agent_client, Heard())
    one_shot = await agent_client.send_message(AGENT, "refund please", METADATA, message_id="m2")

    assert streamed_reply.text == one_shot.text


@pytest.mark.parametrize(
    "agent, text, state",
    [
        (MessageAgent("greeting"), "greeting: heard 'refund please' at GREETING", None),
        (TaskAgent("refund"), "refund done for ACC-1", "completed"),
        (OtpAgent(), "Please tell me the one-time code we sent you.", "input_required"),
    ],
    ids=["message", "task", "input-required"],
)
async def test_every_kind_of_answer_streams_as_it_reads_unstreamed(
    client, agent, text: str, state: str | None
) -> None:
    agent_client, _ = client(agent_app(AGENT, agent))
    heard = Heard()

    reply = await streamed(agent_client, heard)

    assert (reply.text, reply.task_state) == (text, state)
    assert heard.chunks == [text]


async def test_agent_that_does_not_stream_is_asked_once_and_told_whole(client) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"capabilities": {"streaming": False}})
        rpc = json.loads(request.content)
        message = {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "all at once"}]}
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": rpc["id"], "result": {"message": message}}
        )

    agent_client, sent = client(handler=handler)
    heard = Heard()

    reply = await streamed(agent_client, heard)

    assert heard.chunks == ["all at once"] and reply.text == "all at once"
    assert json.loads(sent[-1].read())["method"] == "SendMessage"


async def test_without_a_listener_a_streaming_agent_is_asked_once(client) -> None:
    agent_client, sent = client(agent_app(AGENT, WordsAgent()))

    reply = await agent_client.send_message(AGENT, "hi", METADATA, message_id="m")

    assert reply.text == "Your refund is on its way.\nAnything else?"
    assert json.loads(next(r for r in sent if r.method == "POST").read())["method"] == "SendMessage"


async def test_agent_that_raises_mid_stream_is_an_agent_error_after_its_words(client) -> None:
    class Breaks(Recording):
        async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
            await queue.enqueue_event(new_task_from_user_message(ctx.message))
            up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
            await up.add_artifact([new_text_part("Let me ")], artifact_id="a")
            raise RuntimeError("model crashed")

    agent_client, _ = client(agent_app(AGENT, Breaks()))
    heard = Heard()

    with pytest.raises(AgentError, match="model crashed"):
        await streamed(agent_client, heard)
    assert heard.chunks == ["Let me "]


# Hand-written streams.


def sse(*results: Any, tail: str = "") -> bytes:
    lines = []
    for n, result in enumerate(results):
        body = result if isinstance(result, str) else json.dumps(result)
        if isinstance(result, dict) and "error" not in result:
            body = json.dumps({"jsonrpc": "2.0", "id": n, "result": result})
        lines.append(f"data: {body}\n\n")
    return ("".join(lines) + tail).encode()


def streaming_agent(body: bytes, content_type: str = "text/event-stream") -> Callable:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"capabilities": {"streaming": True}})
        calls.append(1)
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


TASK = {"task": {"id": "t-1", "contextId": "c-1", "status": {"state": "TASK_STATE_SUBMITTED"}}}


def chunk(text: str, artifact: str = "a", append: bool = True) -> dict[str, Any]:
    update = {"taskId": "t-1", "artifact": {"artifactId": artifact, "parts": [{"text": text}]}}
    return {"artifactUpdate": update | ({"append": True} if append else {})}


def state(name: str, *said: str) -> dict[str, Any]:
    status: dict[str, Any] = {"state": f"TASK_STATE_{name}"}
    if said:
        status["message"] = {"role": "ROLE_AGENT", "parts": [{"text": t} for t in said]}
    return {"statusUpdate": {"taskId": "t-1", "status": status}}


async def test_each_new_artifact_and_message_starts_a_new_line(client) -> None:
    body = sse(
        TASK,
        chunk("one ", append=False),
        chunk("two"),
        chunk("three", artifact="b", append=False),
        {"artifactUpdate": {"artifact": {"artifactId": "b", "parts": [{"data": {"ref": 7}}]}}},
        state("COMPLETED", "four", "five"),
    )
    agent_client, _ = client(handler=streaming_agent(body))
    heard = Heard()

    reply = await streamed(agent_client, heard)

    assert heard.chunks == ["one ", "two", "\nthree", "\nfour", "\nfive"]
    assert reply.text == "one two\nthree\nfour\nfive"
    assert reply.data == [{"ref": 7}]


async def test_stream_that_ends_before_its_final_event_is_agent_disconnected(client) -> None:
    handler = streaming_agent(sse(TASK, state("WORKING"), chunk("half ", append=False), chunk("a")))
    agent_client, _ = client(handler=handler, max_attempts=3)
    heard = Heard()

    with pytest.raises(AgentDisconnected):
        await streamed(agent_client, heard, idempotent=True)
    assert heard.chunks == ["half ", "a"]
    assert len(handler.calls) == 1  # words were told: asking again would tell them twice


async def test_garbage_mid_stream_is_agent_bad_response(client) -> None:
    agent_client, _ = client(handler=streaming_agent(sse(TASK, chunk("ok"), "{not json")))
    heard = Heard()

    with pytest.raises(AgentBadResponse, match="not JSON"):
        await streamed(agent_client, heard)
    assert heard.chunks == ["ok"]


async def test_error_event_mid_stream_is_agent_error(client) -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "exploded"}}
    body = sse(TASK, chunk("so"), tail=f"event: error\ndata: {json.dumps(error)}\n\n")
    agent_client, _ = client(handler=streaming_agent(body))

    with pytest.raises(AgentError, match="-32603: exploded"):
        await streamed(agent_client, Heard())


async def test_refusal_before_the_first_event_is_plain_json(client) -> None:
    refusal = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32004, "message": "no streaming"}}
    handler = streaming_agent(json.dumps(refusal).encode(), "application/json")
    agent_client, _ = client(handler=handler)
    heard = Heard()

    with pytest.raises(AgentError, match="-32004"):
        await streamed(agent_client, heard)
    assert heard.events == []


async def test_failed_task_at_the_end_of_a_stream_is_agent_task_failed(client) -> None:
    body = sse(TASK, chunk("trying", append=False), state("FAILED", "cannot refund"))
    agent_client, _ = client(handler=streaming_agent(body))

    with pytest.raises(AgentTaskFailed, match="cannot refund"):
        await streamed(agent_client, Heard())


async def test_stream_over_the_size_limit_is_agent_bad_response(client) -> None:
    body = sse(TASK, *(chunk("x" * 100) for _ in range(20)), state("COMPLETED"))
    agent_client, _ = client(handler=streaming_agent(body), max_response_bytes=1_000)

    with pytest.raises(AgentBadResponse, match="over 1000 bytes"):
        await streamed(agent_client, Heard())


async def test_events_after_the_final_one_are_not_read(client) -> None:
    body = sse(TASK, chunk("done", append=False), state("COMPLETED"), chunk(" more"))
    agent_client, _ = client(handler=streaming_agent(body))

    assert (await streamed(agent_client, Heard())).text == "done"


def test_0_3_events_end_at_the_final_flag() -> None:
    heard = Heard()
    assembly = StreamAssembly(heard)
    update = {"taskId": "t", "contextId": "c", "kind": "artifact-update"}
    assembly.take({"kind": "task", "id": "t", "contextId": "c", "status": {"state": "submitted"}})
    assembly.take(
        update | {"artifact": {"artifactId": "a", "parts": [{"kind": "text", "text": "hi"}]}}
    )
    assembly.take(
        {
            "kind": "status-update",
            "taskId": "t",
            "status": {"state": "input-required"},
            "final": True,
        }
    )

    assert assembly.finished
    assert assembly.reply().task_state == "input_required"
    assert heard.events == [("status", "submitted"), ("chunk", "hi"), ("status", "input_required")]


def test_event_that_is_no_kind_of_update_is_agent_bad_response() -> None:
    with pytest.raises(AgentBadResponse):
        StreamAssembly(Heard()).take({"something": "else"})


async def test_event_that_never_ends_is_cut_off_at_the_size_limit(client) -> None:
    endless = b"data: " + b"x" * 5_000  # no end of line: never a whole event
    agent_client, _ = client(handler=streaming_agent(endless), max_response_bytes=1_000)

    with pytest.raises(AgentBadResponse, match="over 1000 bytes"):
        await streamed(agent_client, Heard())
