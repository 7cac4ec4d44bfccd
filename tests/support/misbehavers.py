"""Broken A2A agents for the reliability tests: each misbehaves in one way a real agent can.

They are raw ASGI apps (no framework) except the `RawAgent`s, raw TCP servers, because an ASGI
app cannot close the socket without answering. Each one answers the agent card with 404 (the
service then assumes A2A 1.0), or, for those that stream, with a card that says
`capabilities.streaming: true`; records the messageId and metadata of every JSON-RPC request it
receives, and misbehaves on the first `times` requests (all of them when `times` is None),
answering like a healthy agent afterwards. `serve(agent)` puts any of them on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.agents import free_port, serve_in_thread
from tests.support.timing import DEADLINE_SEC, Gate

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JSON_HEADERS = [(b"content-type", b"application/json")]
QUESTION = "Which order is it about?"


def healthy_answer(request: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """A SendMessage answer as a2a-sdk gives it: a plain agent Message."""
    heard = request["params"]["message"]["parts"][0]["text"]
    message = {
        "messageId": str(uuid.uuid4()),
        "role": "ROLE_AGENT",
        "parts": [{"text": text or f"ok: {heard}"}],
    }
    return {"jsonrpc": "2.0", "id": request.get("id"), "result": {"message": message}}


class Recorder:
    """What an agent received, and whether to misbehave on the request just received."""

    streams = False  # whether its card says it streams; no card (404) when False

    def __init__(self, times: int | None = None) -> None:
        self.times = times  # misbehave on this many first requests; None: on every one
        self.message_ids: list[str] = []
        self.metadata: list[dict[str, Any]] = []

    @property
    def requests(self) -> int:
        return len(self.message_ids)

    def heard(self, request: dict[str, Any]) -> bool:
        """Records the JSON-RPC request; True when this one is to be misbehaved on."""
        message = request["params"]["message"]
        self.message_ids.append(message["messageId"])
        self.metadata.append(message.get("metadata", {}))
        return self.times is None or len(self.message_ids) <= self.times


class Misbehaver(Recorder):
    """An ASGI agent: the card's 404, then each JSON-RPC request misbehaved on or answered."""

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["method"] != "POST":
            if self.streams:
                await respond_json(send, streaming_card())
            else:
                await respond(send, 404, b"")
            return
        request = json.loads(await _read_body(receive))
        if self.heard(request):
            await self.misbehave(request, receive, send)
        else:
            await respond_json(send, healthy_answer(request))

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await respond_json(send, healthy_answer(request))


class Answering(Misbehaver):
    """A healthy agent: every request gets a valid message."""

    def __init__(self) -> None:
        super().__init__(times=0)


class Held(Misbehaver):
    """Holds each request at `gate` until the test opens it, then answers "finally"; gives up
    when the caller hangs up first. A gate never opened makes an agent that does not answer."""

    def __init__(self, gate: Gate, times: int | None = None) -> None:
        super().__init__(times)
        self.gate = gate

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        # The body is read: the only message left to receive is the caller hanging up.
        opened = asyncio.ensure_future(self.gate.pass_through())
        hung_up = asyncio.ensure_future(receive())
        await asyncio.wait({opened, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        hung_up.cancel()
        if opened.done():
            await respond_json(send, healthy_answer(request, "finally"))
        opened.cancel()


class InTurn(Misbehaver):
    """Request n misbehaves as `behaviours[n]` does; after the last, answers as a healthy agent."""

    def __init__(self, *behaviours: Misbehaver) -> None:
        super().__init__(times=len(behaviours))
        self.behaviours = behaviours

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await self.behaviours[self.requests - 1].misbehave(request, receive, send)


class HttpStatus(Misbehaver):
    """Answers an HTTP error status (e.g. 500, 503, 429), with Retry-After when given."""

    def __init__(
        self, status: int, *, retry_after: str | None = None, times: int | None = None
    ) -> None:
        super().__init__(times)
        self.status = status
        self.retry_after = retry_after

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = [(b"retry-after", self.retry_after.encode())] if self.retry_after else []
        await respond(send, self.status, b"try later", headers)


class Garbage(Misbehaver):
    """HTTP 200 with a body that is not JSON."""

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await respond(send, 200, b"<html>502 Bad Gateway</html>", [(b"content-type", b"text/html")])


class Huge(Misbehaver):
    """A valid JSON-RPC answer of `size` bytes, streamed in chunks without a Content-Length."""

    def __init__(self, size: int = 2 * 1024 * 1024, times: int | None = None) -> None:
        super().__init__(times)
        self.size = size

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        body = json.dumps(healthy_answer(request, "x" * self.size)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        chunk = 64 * 1024
        try:
            for start in range(0, len(body), chunk):
                more = start + chunk < len(body)
                part = body[start : start + chunk]
                await send({"type": "http.response.body", "body": part, "more_body": more})
        except OSError:
            pass  # the service stopped reading, as it should


class JsonRpcError(Misbehaver):
    """A JSON-RPC error, as a2a-sdk answers when the agent's code raises; to a streamed request
    too when it raises before the first event (plain application/json, not a stream).
    With `streams`, its card says it streams."""

    def __init__(self, times: int | None = None, *, streams: bool = False) -> None:
        super().__init__(times)
        self.streams = streams

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        error = {"code": -32603, "message": "agent exploded"}
        await respond_json(send, {"jsonrpc": "2.0", "id": request.get("id"), "error": error})


class TaskFailed(Misbehaver):
    """A task that ended TASK_STATE_FAILED, with the agent's reason in its status message."""

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await respond_json(send, _task_answer(request, "TASK_STATE_FAILED", "cannot do that"))


class InputRequired(Misbehaver):
    """A task waiting for the caller (TASK_STATE_INPUT_REQUIRED), asking `QUESTION`."""

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await respond_json(send, _task_answer(request, "TASK_STATE_INPUT_REQUIRED", QUESTION))


class Flaky(Misbehaver):
    """Fails with HTTP 500 at random (seeded), before acting; otherwise acts and answers.

    `actions` counts, per (call id, stage), the requests it acted on: a 500 is not an action.
    """

    def __init__(self, failure_rate: float, seed: int) -> None:
        super().__init__(times=None)
        self.failure_rate = failure_rate
        self.random = random.Random(seed)
        self.failures = 0
        self.actions: Counter[tuple[str, int]] = Counter()

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        if self.random.random() < self.failure_rate:
            self.failures += 1
            await respond(send, 500, b"internal error")
            return
        meta = request["params"]["message"]["metadata"]
        self.actions[(meta["call_identify_id"], int(meta["flow_id"]))] += 1
        await respond_json(send, healthy_answer(request))


class RawAgent(Recorder):
    """A raw HTTP/1.1 agent on asyncio streams, for faults an ASGI app cannot produce: it owns
    its sockets. Answers the card GET with 404 and each POST through `answer`; never closes a
    connection itself."""

    quiet_since: float | None = None  # when the connection last answered on went idle

    def serve(self) -> tuple[str, Callable[[], None]]:
        port = free_port()
        started = threading.Event()
        loop_box: list[asyncio.AbstractEventLoop] = []
        stop_box: list[asyncio.Event] = []

        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            stop_box.append(asyncio.Event())
            server = await asyncio.start_server(self._connection, "127.0.0.1", port)
            started.set()
            async with server:
                await stop_box[0].wait()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        if not started.wait(DEADLINE_SEC):
            raise RuntimeError(f"{type(self).__name__} agent did not start")

        def stop() -> None:
            loop_box[0].call_soon_threadsafe(stop_box[0].set)
            thread.join(5)

        return f"http://127.0.0.1:{port}/", stop

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = False
        try:
            while True:
                waited = time.monotonic()
                if served:
                    self.quiet_since = waited
                head = await reader.readuntil(b"\r\n\r\n")
                # How long the connection sat idle before this request (None: its first).
                idle = time.monotonic() - waited if served else None
                served = True
                method, length = _parse_head(head)
                body = await reader.readexactly(length)
                if method != "POST" and self.streams:
                    _write_json(writer, streaming_card())
                elif method != "POST":
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                elif not self.answer(json.loads(body), writer, idle):
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, idle: float | None
    ) -> bool:
        """Writes the answer to one JSON-RPC request; False to drop the connection."""
        self.heard(request)
        _write_json(writer, healthy_answer(request))
        return True


class Resetting(RawAgent):
    """Reads each JSON-RPC request, then resets the connection without answering."""

    def answer(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, idle: float | None
    ) -> bool:
        if not self.heard(request):
            _write_json(writer, healthy_answer(request))
            return True
        _reset(writer)
        return False


class ClosesIdle(RawAgent):
    """An agent behind uvicorn, which closes a connection idle for `idle_timeout` seconds (5 s
    by default).

    A request sent on the connection just as the agent closes it crosses the close on the
    wire: the agent never reads it and the connection is reset. That moment lasts a few
    milliseconds; here every request from `in_flight` seconds before the idle timeout on meets
    it (the agent never closes the connection itself), so that a test hits it every time,
    however late it sends.
    """

    def __init__(self, idle_timeout: float = 5.0, in_flight: float = 0.5) -> None:
        super().__init__(times=0)
        self.resets_after = idle_timeout - in_flight

    def answer(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, idle: float | None
    ) -> bool:
        if idle is not None and idle >= self.resets_after:
            _reset(writer)  # unread: not heard
            return False
        return super().answer(request, writer, idle)

    def closing(self) -> bool:
        """Whether a request sent now on the connection it last answered on would be reset."""
        if self.quiet_since is None:
            return False
        return time.monotonic() - self.quiet_since >= self.resets_after


# Streamed answers (SendStreamingMessage): each SSE event is `data: <a JSON-RPC answer>`, as
# a2a-sdk sends them.
STREAMED_CHUNKS = ("chunk-1 ", "chunk-2 ", "chunk-3")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
]


def streaming_card() -> dict[str, Any]:
    """An A2A 1.0 card saying the agent streams (the service reads the version and that)."""
    interface = {"url": "", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    return {
        "name": "misbehaver",
        "description": "an agent that streams badly",
        "version": "1",
        "supportedInterfaces": [interface],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "s", "name": "s", "description": "s", "tags": ["t"]}],
    }


class StreamedTask:
    """The SSE events of one streamed task, in the order a2a-sdk sends them."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request_id = request.get("id")
        self.task_id, self.context_id = str(uuid.uuid4()), str(uuid.uuid4())

    def event(self, result: dict[str, Any]) -> bytes:
        answer = {"jsonrpc": "2.0", "id": self.request_id, "result": result}
        return b"data: " + json.dumps(answer).encode() + b"\n\n"

    def opened(self) -> bytes:
        """The task, submitted, then working: what precedes the first chunk."""
        task = {"id": self.task_id, "contextId": self.context_id}
        return self.event({"task": task | {"status": {"state": "TASK_STATE_SUBMITTED"}}}) + (
            self.status("TASK_STATE_WORKING")
        )

    def chunk(self, index: int) -> bytes:
        """Chunk `index` of STREAMED_CHUNKS, appended to the one artifact."""
        update = {
            "taskId": self.task_id,
            "contextId": self.context_id,
            "artifact": {"artifactId": "answer", "parts": [{"text": STREAMED_CHUNKS[index]}]},
        }
        if index > 0:
            update["append"] = True
        if index == len(STREAMED_CHUNKS) - 1:
            update["lastChunk"] = True
        return self.event({"artifactUpdate": update})

    def status(self, state: str) -> bytes:
        update = {"taskId": self.task_id, "contextId": self.context_id, "status": {"state": state}}
        return self.event({"statusUpdate": update})


class SseMisbehaver(Misbehaver):
    """Answers a streamed request with a 200 SSE stream, which `stream` writes."""

    streams = True

    async def misbehave(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await self.stream(StreamedTask(request), receive, send)

    async def stream(self, task: StreamedTask, receive: Receive, send: Send) -> None:
        raise NotImplementedError


async def _send_body(send: Send, body: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


class GarbageMidStream(SseMisbehaver):
    """A chunk, then a data line that is not JSON, then the rest of a healthy answer: only a
    caller that reads the garbage as a fault fails the turn."""

    async def stream(self, task: StreamedTask, receive: Receive, send: Send) -> None:
        await _send_body(send, task.opened() + task.chunk(0))
        await _send_body(send, b"data: <html>502 Bad Gateway</html>\n\n")
        await _send_body(send, task.chunk(1) + task.chunk(2))
        await _send_body(send, task.status("TASK_STATE_COMPLETED"), more=False)


class StallsMidStream(SseMisbehaver):
    """A chunk, then silence: the stream never ends until the caller hangs up."""

    async def stream(self, task: StreamedTask, receive: Receive, send: Send) -> None:
        await _send_body(send, task.opened() + task.chunk(0))
        while (await receive())["type"] != "http.disconnect":
            pass


class HugeEvent(SseMisbehaver):
    """A chunk, then an event that never ends: one `data:` line of `size` bytes without a line
    end, sent in 64 KiB pieces, then the end of the body."""

    def __init__(self, size: int = 2 * 1024 * 1024, times: int | None = None) -> None:
        super().__init__(times)
        self.size = size

    async def stream(self, task: StreamedTask, receive: Receive, send: Send) -> None:
        await _send_body(send, task.opened() + task.chunk(0) + b"data: ")
        piece = b"x" * (64 * 1024)
        try:
            for _ in range(self.size // len(piece)):
                await _send_body(send, piece)
            await _send_body(send, b"", more=False)
        except OSError:
            pass  # the service stopped reading, as it should


class CutMidStream(RawAgent):
    """`chunks` chunks (two by default), then the connection closes before the task reaches a
    final state: `abrupt`, in the middle of the chunked body (as a crashed agent's kernel
    closes it); otherwise the HTTP body ends cleanly, the task still working. Past `times`, a
    healthy streamed answer: all of STREAMED_CHUNKS, then completed."""

    streams = True

    def __init__(self, *, abrupt: bool, chunks: int = 2, times: int | None = None) -> None:
        super().__init__(times)
        self.abrupt = abrupt
        self.chunks = chunks

    def answer(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, idle: float | None
    ) -> bool:
        task = StreamedTask(request)
        if not self.heard(request):
            body = task.opened() + b"".join(map(task.chunk, range(len(STREAMED_CHUNKS))))
            body += task.status("TASK_STATE_COMPLETED")
            head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            writer.write(head.encode() + b"content-length: %d\r\n\r\n%s" % (len(body), body))
            return True
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
        writer.write(head.encode() + b"transfer-encoding: chunked\r\n\r\n")
        for part in (task.opened(), *map(task.chunk, range(self.chunks))):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        if not self.abrupt:
            writer.write(b"0\r\n\r\n")
        return not self.abrupt  # an abrupt cut closes the connection mid-body


AnyAgent = Misbehaver | RawAgent


def serve(agent: AnyAgent) -> tuple[str, Callable[[], None]]:
    """Serves a misbehaving agent on a free loopback port; returns (url, stop)."""
    if isinstance(agent, RawAgent):
        return agent.serve()
    return serve_in_thread(lambda _: agent)


def _parse_head(head: bytes) -> tuple[str, int]:
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return method, length


def _write_json(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    writer.write(head.encode() + b"\r\n\r\n" + body)


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0: closing sends a TCP RST, as a crashed agent's kernel would.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _task_answer(request: dict[str, Any], state: str, text: str) -> dict[str, Any]:
    task_id, context_id = str(uuid.uuid4()), str(uuid.uuid4())
    status_message = {
        "messageId": str(uuid.uuid4()),
        "contextId": context_id,
        "taskId": task_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    }
    task = {
        "id": task_id,
        "contextId": context_id,
        "status": {"state": state, "message": status_message},
    }
    return {"jsonrpc": "2.0", "id": request.get("id"), "result": {"task": task}}


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, answer: dict[str, Any]) -> None:
    await respond(send, 200, json.dumps(answer).encode(), JSON_HEADERS)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
