"""A2AClient: real a2a-sdk agents in-process, and small misbehaving servers for every fault."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from a2a.helpers import get_data_parts
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentDisconnected,
    AgentError,
    AgentFault,
    AgentHttpError,
    AgentTaskFailed,
    AgentTimeout,
    AgentUnreachable,
)
from orchestrator_flows.core.models import PendingTask
from orchestrator_flows.infra.a2a_client import (
    A2AClient,
    AgentReply,
    protocol_from_card,
    retry_after_seconds,
)
from orchestrator_flows.infra.agent_transport import PoolLimits, agent_transport
from tests.support.agents import (
    DEMO_OTP,
    FailingTaskAgent,
    MessageAgent,
    OtpAgent,
    RaisingAgent,
    RecordingTransport,
    TaskAgent,
    agent_app,
    free_port,
)
from tests.support.timing import DEADLINE_SEC

AGENT = "http://agent.test/"
METADATA = {
    "call_identify_id": "CALL-1",
    "account_id": "ACC-1",
    "eci": "ECI-1",
    "flow_id": 2,
    "flow_label": "AUTHENTICATION",
    "intent": "otp_verify",
}
Handler = Callable[[httpx.Request], Any]


@dataclass
class Wire:
    """The client under test and every request it put on the wire."""

    client: A2AClient
    sent: list[httpx.Request]

    async def send(
        self, text: str = "hello", url: str = AGENT, continues: PendingTask | None = None
    ) -> AgentReply:
        return await self.client.send_message(
            url, text, METADATA, message_id=f"msg-{len(self.sent)}", continues=continues
        )

    def posts(self) -> list[dict[str, Any]]:
        return [json.loads(r.read()) for r in self.sent if r.method == "POST"]

    def card_reads(self) -> list[str]:
        return [str(r.url) for r in self.sent if r.method == "GET"]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Wire]]:
    """connect(asgi_app) or connect(handler=...) -> a Wire over an in-process transport."""
    opened: list[httpx.AsyncBaseTransport] = []

    def build(
        app: Any = None,
        *,
        handler: Handler | None = None,
        timeout: float = 5.0,
        max_response_bytes: int = 1_000_000,
        max_attempts: int = 3,
    ) -> Wire:
        inner = httpx.ASGITransport(app=app) if app else httpx.MockTransport(handler)
        transport = RecordingTransport(inner)
        opened.append(transport)
        client = A2AClient(
            transport,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_attempts=max_attempts,
        )
        return Wire(client, transport.requests)

    yield build
    for transport in opened:
        await transport.aclose()


def no_card(answer_post: Handler) -> Handler:
    """A server with no agent card that answers every POST with `answer_post`."""

    def handler(request: httpx.Request) -> Any:
        if request.method == "GET":
            return httpx.Response(404)
        return answer_post(request)

    return handler


def rpc_result(result: dict[str, Any]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        rpc_id = json.loads(request.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc_id, "result": result})

    return no_card(answer)


AGENT_MESSAGE = {"message": {"messageId": "m-1", "role": "ROLE_AGENT", "parts": [{"text": "hi"}]}}


# Real a2a-sdk agents, served in-process.


async def test_message_reply_carries_the_agents_words(connect) -> None:
    agent = MessageAgent("greeting")
    wire = connect(agent_app(AGENT, agent))

    reply = await wire.send("good morning")

    assert reply.kind == "message"
    assert reply.text == "greeting: heard 'good morning' at AUTHENTICATION"
    assert reply.task_state is None
    assert reply.needs_input is False
    assert reply.context_id


async def test_metadata_reaches_the_agent(connect) -> None:
    agent = MessageAgent("greeting")
    wire = connect(agent_app(AGENT, agent))

    await wire.send("good morning")

    assert agent.seen.texts == ["good morning"]
    seen = agent.seen.metadata[0]
    assert {k: seen[k] for k in ("call_identify_id", "account_id", "eci", "flow_label")} == {
        "call_identify_id": "CALL-1",
        "account_id": "ACC-1",
        "eci": "ECI-1",
        "flow_label": "AUTHENTICATION",
    }
    assert seen["flow_id"] == 2  # a protobuf Struct: the number comes back as 2.0


async def test_completed_task_reply_carries_the_artifact_text(connect) -> None:
    wire = connect(agent_app(AGENT, TaskAgent("refund")))

    reply = await wire.send("refund order 7")

    assert reply.kind == "task"
    assert reply.task_state == "completed"
    assert reply.text == "refund done for ACC-1"
    assert reply.task_id
    assert reply.needs_input is False


async def test_input_required_then_continuation_completes_the_same_task(connect) -> None:
    agent = OtpAgent()
    wire = connect(agent_app(AGENT, agent))

    question = await wire.send("it is me")
    pending = PendingTask(task_id=question.task_id, context_id=question.context_id)
    answer = await wire.send(f"the code is {DEMO_OTP}", continues=pending)

    assert question.task_state == "input_required"
    assert question.needs_input is True
    assert question.text == "Please tell me the one-time code we sent you."
    assert answer.task_state == "completed"
    assert answer.task_id == question.task_id
    assert answer.text == "identity verified"
    assert agent.seen.texts == ["it is me", f"the code is {DEMO_OTP}"]
    assert agent.seen.task_ids[1] == question.task_id
    first, continued = (post["params"]["message"] for post in wire.posts())
    assert "taskId" not in first
    assert continued["taskId"] == question.task_id
    assert continued["contextId"] == question.context_id


async def test_agent_that_raises_is_an_agent_error(connect) -> None:
    wire = connect(agent_app(AGENT, RaisingAgent()))

    with pytest.raises(AgentError) as caught:
        await wire.send()

    assert caught.value.code == "agent_error"
    assert "agent exploded" in caught.value.message


async def test_failed_task_is_agent_task_failed(connect) -> None:
    wire = connect(agent_app(AGENT, FailingTaskAgent()))

    with pytest.raises(AgentTaskFailed) as caught:
        await wire.send()

    assert caught.value.code == "agent_task_failed"
    assert caught.value.task_state == "failed"
    assert caught.value.task_id
    assert "cannot do that" in caught.value.message


async def test_agent_speaking_only_0_3_is_sent_message_send(connect) -> None:
    agent = MessageAgent("legacy")
    wire = connect(agent_app(AGENT, agent, v03=True))

    reply = await wire.send("hello there")

    assert reply.kind == "message"
    assert reply.text == "legacy: heard 'hello there' at AUTHENTICATION"
    post = next(r for r in wire.sent if r.method == "POST")
    body = json.loads(post.read())
    assert body["method"] == "message/send"
    assert "A2A-Version" not in post.headers
    assert body["params"]["message"]["role"] == "user"
    assert body["params"]["message"]["parts"] == [{"kind": "text", "text": "hello there"}]
    assert agent.seen.metadata[0]["account_id"] == "ACC-1"


async def test_0_3_agent_input_required_then_continuation(connect) -> None:
    wire = connect(agent_app(AGENT, OtpAgent(), v03=True))

    question = await wire.send("it is me")
    pending = PendingTask(task_id=question.task_id, context_id=question.context_id)
    answer = await wire.send(DEMO_OTP, continues=pending)

    assert question.task_state == "input_required"
    assert (answer.task_id, answer.task_state) == (question.task_id, "completed")


# What the client puts on the wire.


async def test_request_for_1_0_is_a_send_message_call(connect) -> None:
    wire = connect(handler=rpc_result(AGENT_MESSAGE))

    await wire.client.send_message(AGENT, "hello", METADATA, message_id="msg-42")

    post = wire.sent[-1]
    body = json.loads(post.read())
    assert post.method == "POST"
    assert str(post.url) == AGENT
    assert post.headers["A2A-Version"] == "1.0"
    assert post.headers["Content-Type"] == "application/json"
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == "msg-42"
    assert body["method"] == "SendMessage"
    message = body["params"]["message"]
    assert message["role"] == "ROLE_USER"
    assert message["parts"] == [{"text": "hello"}]
    assert message["metadata"] == METADATA
    assert message["messageId"] == "msg-42"
    assert "taskId" not in message


QUESTION = {"task": "classify_intent", "flow_id": 3, "intents": [{"intent": "a", "examples": []}]}


async def test_data_goes_after_the_words_as_a_data_part_for_1_0(connect) -> None:
    wire = connect(handler=rpc_result(AGENT_MESSAGE))

    await wire.client.send_message(AGENT, "hello", METADATA, message_id="m-1", data=QUESTION)

    parts = wire.posts()[0]["params"]["message"]["parts"]
    assert parts == [{"text": "hello"}, {"data": QUESTION}]


async def test_data_goes_after_the_words_as_a_data_part_for_0_3(connect) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"name": "old", "protocolVersion": "0.3.0"})
        result = {"kind": "message", "messageId": "m-1", "role": "agent", "parts": [{"text": "x"}]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": "1", "result": result})

    wire = connect(handler=handler)

    await wire.client.send_message(AGENT, "hello", METADATA, message_id="m-1", data=QUESTION)

    parts = wire.posts()[0]["params"]["message"]["parts"]
    assert parts == [{"kind": "text", "text": "hello"}, {"kind": "data", "data": QUESTION}]


class DataReadingAgent(MessageAgent):
    """Answers as MessageAgent does, and keeps the data parts it was sent."""

    def __init__(self) -> None:
        super().__init__("classifier")
        self.data: list[Any] = []

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        self.data.extend(get_data_parts(ctx.message.parts))
        await super().answer(ctx, queue)


@pytest.mark.parametrize("v03", [False, True], ids=["1.0", "0.3"])
async def test_real_agent_reads_the_words_and_the_data_part(connect, v03: bool) -> None:
    agent = DataReadingAgent()
    wire = connect(agent_app(AGENT, agent, v03=v03))

    await wire.client.send_message(AGENT, "hello", METADATA, message_id="m-1", data=QUESTION)

    assert agent.seen.texts == ["hello"]
    assert agent.data == [QUESTION]


async def test_agent_card_is_read_once_per_agent_url(connect) -> None:
    wire = connect(handler=rpc_result(AGENT_MESSAGE))
    other = "http://other.test/a2a/"

    await wire.send(url=AGENT)
    await wire.send(url=AGENT)
    await wire.send(url=other)
    await wire.send(url=other)

    cards = wire.card_reads()
    assert cards.count(AGENT + ".well-known/agent-card.json") == 1
    assert cards.count(other + ".well-known/agent-card.json") == 1
    assert len(wire.posts()) == 4


async def test_real_agent_card_is_read_once(connect) -> None:
    wire = connect(agent_app(AGENT, MessageAgent("greeting")))

    await wire.send()
    await wire.send()

    assert wire.card_reads() == [AGENT + ".well-known/agent-card.json"]


async def test_0_3_card_at_the_legacy_path_is_honoured(connect) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/agent.json":
            return httpx.Response(200, json={"name": "old", "protocolVersion": "0.3.0"})
        if request.method == "GET":
            return httpx.Response(404)
        result = {"kind": "message", "messageId": "m-1", "role": "agent", "parts": [{"text": "x"}]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": "1", "result": result})

    wire = connect(handler=handler)

    reply = await wire.send()

    assert reply.text == "x"
    assert wire.posts()[0]["method"] == "message/send"


async def test_card_is_asked_again_after_the_agent_was_unreachable(connect) -> None:
    card_reads: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            card_reads.append(request.url.path)
            if len(card_reads) <= 3:  # every attempt of the first turn is refused
                raise httpx.ConnectError("refused")
            return httpx.Response(200, json={"name": "old", "protocolVersion": "0.3.0"})
        result = {"kind": "message", "messageId": "m-1", "role": "agent", "parts": [{"text": "x"}]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": "1", "result": result})

    wire = connect(handler=handler)

    with pytest.raises(AgentUnreachable) as caught:
        await wire.send()
    assert caught.value.attempts == 3
    reply = await wire.send()

    assert reply.text == "x"
    assert [post["method"] for post in wire.posts()] == ["message/send"]


async def test_unreadable_card_means_1_0(connect) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, content=b"<html>not a card</html>")
        return rpc_result(AGENT_MESSAGE)(request)

    wire = connect(handler=handler)

    await wire.send()

    assert wire.posts()[0]["method"] == "SendMessage"


JSONRPC_1_0 = {"protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
JSONRPC_0_3 = {"protocolBinding": "JSONRPC", "protocolVersion": "0.3"}
GRPC_1_0 = {"protocolBinding": "GRPC", "protocolVersion": "1.0"}


@pytest.mark.parametrize(
    ("card", "protocol"),
    [
        ({"supportedInterfaces": [JSONRPC_1_0]}, "1.0"),
        ({"supportedInterfaces": [JSONRPC_0_3]}, "0.3"),
        ({"supportedInterfaces": [{"protocolVersion": "0.3"}]}, "0.3"),  # JSONRPC by default
        ({"supportedInterfaces": [JSONRPC_0_3, JSONRPC_1_0]}, "1.0"),
        ({"supportedInterfaces": [GRPC_1_0], "protocolVersion": "0.3.0"}, "0.3"),
        ({"protocolVersion": "0.3.0", "url": "http://old.test/"}, "0.3"),
        ({"protocolVersion": "0.2.5"}, "0.3"),
        ({}, "1.0"),
        ({"supportedInterfaces": "nonsense", "protocolVersion": 3}, "1.0"),
        ([], "1.0"),
        ("card", "1.0"),
        (None, "1.0"),
    ],
)
def test_protocol_from_card(card: Any, protocol: str) -> None:
    assert protocol_from_card(card) == protocol


# Misbehaving agents: every fault becomes one AgentFault with a stable code.


async def fault_of(wire: Wire) -> AgentFault:
    with pytest.raises(AgentFault) as caught:
        await wire.send()
    return caught.value


async def test_http_500_is_agent_http_error(connect) -> None:
    wire = connect(handler=no_card(lambda _: httpx.Response(500, text="oops")))

    fault = await fault_of(wire)

    assert isinstance(fault, AgentHttpError)
    assert fault.code == "agent_http_error"
    assert "500" in fault.message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>Bad gateway</html>", "agent answer is not JSON"),
        (b"", "agent answer is not JSON"),
        (b'{"result": {"message": {}}}', "not a JSON-RPC 2.0 response"),
        (b'[{"jsonrpc": "2.0", "id": 1, "result": {}}]', "not a JSON-RPC 2.0 response"),
        (b'{"jsonrpc": "2.0", "id": 1}', "neither result nor error"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"ok": 1}}', "neither a message nor a task"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {"task": {"id": "t-1"}}}', "no id or no state"),
    ],
    ids=["html", "empty", "no-jsonrpc", "batch", "no-result", "odd-result", "task-no-state"],
)
async def test_malformed_answer_is_agent_bad_response(connect, body: bytes, problem: str) -> None:
    wire = connect(handler=no_card(lambda _: httpx.Response(200, content=body)))

    fault = await fault_of(wire)

    assert isinstance(fault, AgentBadResponse)
    assert fault.code == "agent_bad_response"
    assert problem in fault.message


async def test_answer_over_the_size_limit_is_agent_bad_response(connect) -> None:
    big = {"jsonrpc": "2.0", "id": "1", "result": {"message": {"parts": [{"text": "x" * 5000}]}}}
    wire = connect(
        handler=no_card(lambda _: httpx.Response(200, json=big)), max_response_bytes=1024
    )

    fault = await fault_of(wire)

    assert isinstance(fault, AgentBadResponse)
    assert "over 1024 bytes" in fault.message


async def test_streamed_answer_over_the_size_limit_is_cut_off(connect) -> None:
    chunks_sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc": "2.0", "id": "1", "result": {"message": {"parts": [{"text": "'
        for n in range(1000):
            chunks_sent.append(n)
            yield b"x" * 512

    wire = connect(
        handler=no_card(lambda _: httpx.Response(200, content=endless())), max_response_bytes=4096
    )

    fault = await fault_of(wire)

    assert isinstance(fault, AgentBadResponse)
    assert "over 4096 bytes" in fault.message
    assert len(chunks_sent) < 20


async def test_answer_just_under_the_size_limit_is_read(connect) -> None:
    wire = connect(handler=rpc_result(AGENT_MESSAGE), max_response_bytes=1024)

    reply = await wire.send()

    assert reply.text == "hi"


async def test_json_rpc_error_is_agent_error(connect) -> None:
    error = {"code": -32001, "message": "Task nope not found"}
    wire = connect(
        handler=no_card(
            lambda _: httpx.Response(200, json={"jsonrpc": "2.0", "id": "1", "error": error})
        )
    )

    fault = await fault_of(wire)

    assert isinstance(fault, AgentError)
    assert fault.message == "agent JSON-RPC error -32001: Task nope not found"


@pytest.mark.parametrize(
    ("state", "fault_type", "code"),
    [
        ("TASK_STATE_WORKING", AgentBadResponse, "agent_bad_response"),
        ("TASK_STATE_SUBMITTED", AgentBadResponse, "agent_bad_response"),
        ("TASK_STATE_REJECTED", AgentTaskFailed, "agent_task_failed"),
        ("TASK_STATE_CANCELED", AgentTaskFailed, "agent_task_failed"),
    ],
)
async def test_unfinished_or_refused_task_is_a_fault(
    connect, state: str, fault_type: type[AgentFault], code: str
) -> None:
    task = {"task": {"id": "t-1", "contextId": "c-1", "status": {"state": state}}}
    wire = connect(handler=rpc_result(task))

    fault = await fault_of(wire)

    assert type(fault) is fault_type
    assert fault.code == code
    assert fault.task_id == "t-1"
    assert fault.task_state == state.removeprefix("TASK_STATE_").lower()


async def test_auth_required_task_asks_the_caller(connect) -> None:
    task = {"task": {"id": "t-1", "status": {"state": "TASK_STATE_AUTH_REQUIRED"}}}
    wire = connect(handler=rpc_result(task))

    reply = await wire.send()

    assert reply.task_state == "auth_required"
    assert reply.needs_input is True


async def gzip_agent(document: dict[str, Any]) -> asyncio.Server:
    """An agent that answers every request, card reads included, with `document` gzipped."""
    body = gzip.compress(json.dumps(document).encode())
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n"
    answer = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def ask(server: asyncio.Server, max_response_bytes: int) -> AgentReply:
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, agent_transport(PoolLimits()) as transport:
        client = A2AClient(transport, timeout=5.0, max_response_bytes=max_response_bytes)
        return await client.send_message(url, "hello", METADATA, message_id="msg-1")


async def test_compressed_answer_is_read_decoded() -> None:
    agent = await gzip_agent({"jsonrpc": "2.0", "id": "msg-1", "result": AGENT_MESSAGE})

    reply = await ask(agent, max_response_bytes=1024)

    assert reply.text == "hi"


async def test_compressed_answer_is_held_to_the_size_limit_once_decoded() -> None:
    text = "x" * 50_000  # gzipped, well under the limit
    rpc = {"jsonrpc": "2.0", "id": "msg-1", "result": {"message": {"parts": [{"text": text}]}}}
    agent = await gzip_agent(rpc)

    with pytest.raises(AgentBadResponse, match="over 1024 bytes"):
        await ask(agent, max_response_bytes=1024)


async def test_unread_error_answer_gives_its_connection_back() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):  # each answer begun, never finished
                writer.write(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhi\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, agent_transport(PoolLimits(total=1)) as transport:
        client = A2AClient(transport, timeout=2.0, max_response_bytes=1024)
        faults = []
        for n in range(3):  # with one connection: each call waits for the one before to free it
            with pytest.raises(AgentHttpError) as caught:
                await client.send_message(url, "hello", METADATA, message_id=f"msg-{n}")
            faults.append(caught.value.status)

    assert faults == [500, 500, 500]


async def test_closed_port_is_agent_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    async with agent_transport(PoolLimits()) as transport:
        client = A2AClient(transport, timeout=2.0, max_response_bytes=1_000_000)

        with pytest.raises(AgentUnreachable) as caught:
            await client.send_message(url, "hello", METADATA, message_id="msg-1")

    assert caught.value.code == "agent_unreachable"


@pytest.mark.parametrize("slow_path", ["/.well-known/agent-card.json", "/"])
async def test_slow_agent_is_agent_timeout(connect, slow_path: str) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == slow_path:
            await asyncio.Event().wait()  # never answers
        return rpc_result(AGENT_MESSAGE)(request)

    wire = connect(handler=handler, timeout=0.2)

    # The client's own timeout ends the call; the test's deadline only bounds a failure.
    fault = await asyncio.wait_for(fault_of(wire), DEADLINE_SEC)

    assert isinstance(fault, AgentTimeout)
    assert fault.code == "agent_timeout"


@pytest.mark.parametrize(
    ("error", "fault_type"),
    [
        (httpx.ReadTimeout("read timed out"), AgentTimeout),
        (httpx.ConnectError("refused"), AgentUnreachable),
        (httpx.ReadError("connection reset"), AgentDisconnected),
        (httpx.RemoteProtocolError("peer closed"), AgentDisconnected),
        (httpx.UnsupportedProtocol("bad scheme"), AgentUnreachable),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
async def test_transport_error_becomes_its_agent_fault(
    connect, error: Exception, fault_type: type[AgentFault]
) -> None:
    def fail(_: httpx.Request) -> httpx.Response:
        raise error

    wire = connect(handler=no_card(fail))

    fault = await fault_of(wire)

    assert type(fault) is fault_type
    assert isinstance(fault.__cause__, httpx.HTTPError)


# Retries: only when the agent cannot have acted, with one messageId, inside the deadline.


def failing_first(times: int, failure: Callable[[], Any]) -> tuple[Handler, list[str]]:
    """Answers `failure()` to the first `times` POSTs, then a message; records messageIds."""
    message_ids: list[str] = []

    def answer(request: httpx.Request) -> Any:
        body = json.loads(request.content)
        message_ids.append(body["params"]["message"]["messageId"])
        if len(message_ids) <= times:
            return failure()
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "result": AGENT_MESSAGE}
        )

    return no_card(answer), message_ids


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_agent_that_did_not_take_the_request_is_retried_with_the_same_message_id(
    connect, status: int
) -> None:
    handler, message_ids = failing_first(1, lambda: httpx.Response(status))
    wire = connect(handler=handler)

    reply = await wire.send()

    assert reply.text == "hi"
    assert reply.attempts == 2
    assert len(set(message_ids)) == 1 and len(message_ids) == 2


async def test_refused_connection_is_retried(connect) -> None:
    def refused() -> Any:
        raise httpx.ConnectError("refused")

    handler, message_ids = failing_first(2, refused)
    wire = connect(handler=handler)

    reply = await wire.send()

    assert reply.attempts == 3
    assert len(message_ids) == 3


@pytest.mark.parametrize(
    "failure, fault",
    [
        (lambda: httpx.Response(500), AgentHttpError),
        (lambda: (_ for _ in ()).throw(httpx.ReadError("reset")), AgentDisconnected),
        (lambda: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), AgentTimeout),
    ],
    ids=["http-500", "reset", "timeout"],
)
async def test_agent_that_may_have_acted_is_not_retried(connect, failure, fault) -> None:
    handler, message_ids = failing_first(1, failure)
    wire = connect(handler=handler)

    with pytest.raises(fault) as caught:
        await wire.send()

    assert caught.value.attempts == 1
    assert len(message_ids) == 1


async def test_idempotent_agent_is_retried_after_a_reset(connect) -> None:
    def reset() -> Any:
        raise httpx.ReadError("reset")

    handler, message_ids = failing_first(1, reset)
    wire = connect(handler=handler)

    reply = await wire.client.send_message(
        AGENT, "hello", METADATA, message_id="m-same", idempotent=True
    )

    assert reply.attempts == 2
    assert message_ids == ["m-same", "m-same"]


async def test_attempts_stop_at_the_configured_maximum(connect) -> None:
    handler, message_ids = failing_first(10, lambda: httpx.Response(503))
    wire = connect(handler=handler, max_attempts=2)

    with pytest.raises(AgentHttpError) as caught:
        await wire.send()

    assert caught.value.attempts == 2
    assert len(message_ids) == 2


async def test_fault_after_several_attempts_keeps_what_the_agent_said(connect) -> None:
    handler, message_ids = failing_first(
        10, lambda: httpx.Response(503, headers={"Retry-After": "0"})
    )
    wire = connect(handler=handler, max_attempts=3)

    with pytest.raises(AgentHttpError) as caught:
        await wire.send()

    fault = caught.value
    assert (fault.attempts, fault.status, fault.retry_after) == (3, 503, 0)
    assert fault.may_have_acted is False
    assert str(fault) == "agent answered HTTP 503"
    assert len(message_ids) == 3


async def test_retry_after_beyond_the_deadline_gives_up_at_once(connect) -> None:
    handler, message_ids = failing_first(
        1, lambda: httpx.Response(503, headers={"Retry-After": "60"})
    )
    wire = connect(handler=handler, timeout=1.0)

    with pytest.raises(AgentHttpError) as caught:
        await wire.send()

    assert caught.value.attempts == 1  # waiting 60 s would overrun the turn's deadline
    assert len(message_ids) == 1
    assert caught.value.retry_after == 60


@pytest.mark.parametrize(
    "header, seconds",
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(header, seconds) -> None:
    assert retry_after_seconds(header) == seconds
