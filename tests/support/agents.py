"""Real A2A agents for the tests, built with the official a2a-sdk (A2A 1.0 JSON-RPC).

Each executor shows one way an agent can answer: a plain message, a completed task, a question
(input-required) then completion, an answer held until the test opens a gate, an exception, a
failed task, an answer streamed word by word. `agent_app` builds the Starlette app for one
executor; `agents_router` mounts several under paths for in-process tests.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from a2a.helpers import (
    new_data_message,
    new_data_part,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.support.timing import DEADLINE_SEC, Gate

DEMO_OTP = "123456"


@dataclass
class Seen:
    """What an agent received: the caller's words and the metadata, one entry per request."""

    texts: list[str] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    task_ids: list[str | None] = field(default_factory=list)

    def record(self, ctx: RequestContext) -> None:
        self.texts.append(ctx.get_user_input())
        self.metadata.append(dict(ctx.message.metadata) if ctx.message else {})
        self.task_ids.append(ctx.message.task_id or None if ctx.message else None)


class Recording(AgentExecutor):
    def __init__(self) -> None:
        self.seen = Seen()

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        self.seen.record(ctx)
        await self.answer(ctx, queue)

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        raise NotImplementedError

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        await TaskUpdater(queue, ctx.task_id, ctx.context_id).cancel()


class MessageAgent(Recording):
    """Answers with a plain Message naming the stage it was told about."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        meta = ctx.message.metadata
        text = f"{self.name}: heard {ctx.get_user_input()!r} at {meta['flow_label']}"
        await queue.enqueue_event(new_text_message(text, context_id=ctx.context_id))


class TaskAgent(Recording):
    """Completes a task with an artifact on the first turn."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        text = f"{self.name} done for {ctx.message.metadata['account_id']}"
        await up.add_artifact([new_text_part(text)], name="answer")
        await up.complete()


class OtpAgent(Recording):
    """Asks for a one-time code (input-required); completes when given the demo code."""

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        if ctx.current_task is None:
            await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        if ctx.current_task is None or DEMO_OTP not in ctx.get_user_input():
            ask = "Please tell me the one-time code we sent you."
            await up.requires_input(up.new_agent_message([new_text_part(ask)]))
            return
        await up.add_artifact([new_text_part("identity verified")], name="answer")
        await up.complete()


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SPOKEN_DIGITS = {word: str(digit) for digit, word in enumerate(_DIGIT_WORDS)}
_SPOKEN = re.compile(r"\b(?:oh|" + "|".join(_SPOKEN_DIGITS) + r")\b", re.I)
_NUMBER = re.compile(r"[0-9](?:[^\w]{0,3}[0-9])*")
_STANDING_NUMBER = re.compile(r"(?<![^\W\d_])[0-9](?:[^\w]{0,3}[0-9])*")


def numbers_heard(words: str, *, glued: bool = True) -> list[str]:
    """The digits of each number in `words`, however written: Unicode digits, digits spelled
    out, any separators ("4111, 1111" -> "41111111"); with `glued` False, not the digits of
    a word ("cvv2", "exp1226"). Written apart from the service's own reading, so that a test
    can check what the service stored with it."""
    chars = []
    for char in unicodedata.normalize("NFKC", words):
        if unicodedata.category(char) == "Cf":
            continue
        chars.append(str(unicodedata.digit(char)) if char.isdigit() else char)
    text = _SPOKEN.sub(lambda m: _SPOKEN_DIGITS.get(m[0].lower(), "0"), "".join(chars))
    numbers = (_NUMBER if glued else _STANDING_NUMBER).findall(text)
    return [re.sub(r"[^0-9]", "", number) for number in numbers]


class RepeatingAgent(Recording):
    """Repeats what it heard in its own way, as a careless agent might: the caller's words
    quoted, then each number in pairs with commas and spelled out, and all of it again in a
    data part (the words upper-cased, each number in threes with dashes)."""

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        words = ctx.get_user_input()
        numbers = numbers_heard(words, glued=False)
        text = f'You said: "{words}". I noted: ' + "; ".join(
            f"{_grouped(n, 2, ', ')} ({' '.join(_SPELLED[d] for d in n)})" for n in numbers
        )
        data = {"heard": words.upper(), "numbers": [_grouped(n, 3, "-") for n in numbers]}
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.add_artifact([new_text_part(text), new_data_part(data)], name="answer")
        await up.complete()


_SPELLED = {digit: word for word, digit in _SPOKEN_DIGITS.items()}


def _grouped(digits: str, size: int, separator: str) -> str:
    return separator.join(digits[i : i + size] for i in range(0, len(digits), size))


class GatedAgent(Recording):
    """Answers "finally" once `gate` is open: until then the turn is inside the agent call
    (never opened, the agent is one that does not answer)."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await self.gate.pass_through()
        await queue.enqueue_event(new_text_message("finally", context_id=ctx.context_id))


class ClassifierAgent(Recording):
    """A classifier agent (docs/flows.md): reads the question from the message's data part and
    answers with a data part `decide(words, question)` gives; `questions` keeps each question."""

    def __init__(self, decide: Callable[[str, dict], Any]) -> None:
        super().__init__()
        self.decide = decide
        self.questions: list[dict] = []

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        parts = ctx.message.parts if ctx.message else []
        data = [MessageToDict(p.data) for p in parts if p.WhichOneof("content") == "data"]
        question = data[0] if data else {}
        self.questions.append(question)
        answer = self.decide(ctx.get_user_input(), question)
        await queue.enqueue_event(new_data_message(answer, context_id=ctx.context_id))


class RaisingAgent(Recording):
    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        raise RuntimeError("agent exploded")


class FailingTaskAgent(Recording):
    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.failed(up.new_agent_message([new_text_part("cannot do that")]))


class StreamingAgent(Recording):
    """Speaks its answer word by word: each of `artifacts` (its chunks) as artifact updates of one
    artifact id (the first chunk opens it, the others append, the last is marked lastChunk), then
    completes with `closing` as its status message. With `asks`, a new task asks for input with
    it instead, and the caller's reply (the same task continued) completes it.

    With a `gate`, it waits there after `held_after` chunks: the caller may have those while the
    agent is not done. With `raises_after`, it raises after that many chunks (a2a-sdk then ends
    the stream with `event: error`). `finished` counts the answers it gave to the end.
    """

    def __init__(
        self,
        *artifacts: Sequence[str],
        closing: str | None = None,
        asks: bool = False,
        gate: Gate | None = None,
        held_after: int = 1,
        raises_after: int | None = None,
    ) -> None:
        super().__init__()
        self.artifacts = artifacts or (WORDS,)
        self.closing = closing
        self.asks = asks
        self.gate = gate
        self.held_after = held_after
        self.raises_after = raises_after
        self.finished = 0

    @property
    def chunks(self) -> list[str]:
        return [chunk for artifact in self.artifacts for chunk in artifact]

    @property
    def text(self) -> str:
        """The whole answer as a caller reads it: each artifact, then the status message, on a
        line of its own."""
        pieces = ["".join(artifact) for artifact in self.artifacts]
        return "\n".join(pieces + ([self.closing] if self.closing else []))

    def artifacts_for(self, ctx: RequestContext) -> Sequence[Sequence[str]]:
        return self.artifacts

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        continued = ctx.current_task is not None
        if not continued:
            await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.start_work()
        sent = 0
        for number, artifact in enumerate(self.artifacts_for(ctx), 1):
            for index, chunk in enumerate(artifact):
                if self.gate is not None and sent == self.held_after:
                    await self.gate.pass_through()
                if sent == self.raises_after:
                    raise RuntimeError("agent exploded mid-stream")
                await up.add_artifact(
                    [new_text_part(chunk)],
                    artifact_id=f"answer-{number}",
                    name="answer",
                    append=index > 0 or None,
                    last_chunk=index == len(artifact) - 1 or None,
                )
                sent += 1
        message = up.new_agent_message([new_text_part(self.closing)]) if self.closing else None
        if self.asks and not continued:
            await up.requires_input(message)
        else:
            await up.complete(message)
        self.finished += 1


class ProgressAgent(Recording):
    """Says "One moment..." in a working status message, then completes with an artifact, as
    an agent that reports its progress does."""

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        progress = up.new_agent_message([new_text_part("One moment...")])
        await up.update_status(TaskState.TASK_STATE_WORKING, message=progress)
        await up.add_artifact([new_text_part("Your refund is on its way.")], name="answer")
        await up.complete()


class EchoingStreamer(StreamingAgent):
    """Streams the caller's own words back, one chunk a word: each caller hears only its own."""

    def artifacts_for(self, ctx: RequestContext) -> Sequence[Sequence[str]]:
        return [re.findall(r"\S+\s*", ctx.get_user_input())]


# An answer as a language model speaks it: a few words at a time.
WORDS = ("Your refund ", "of 42 euros ", "is on ", "its way.")


def agent_card(
    url: str, name: str, protocol_version: str = "1.0", *, streaming: bool = True
) -> AgentCard:
    return AgentCard(
        name=name,
        description=f"test agent {name}",
        version="1",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=protocol_version)
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=name, name=name, description=name, tags=["test"])],
    )


def agent_app(
    url: str,
    executor: AgentExecutor,
    *,
    name: str = "agent",
    v03: bool = False,
    streaming: bool = True,
):
    """The agent's Starlette app; `streaming` is what its card says (a2a-sdk then refuses
    SendStreamingMessage when False)."""
    card = agent_card(url, name, "0.3" if v03 else "1.0", streaming=streaming)
    handler = DefaultRequestHandler(
        agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(
        handler, rpc_url="/", enable_v0_3_compat=v03
    )
    return Starlette(routes=routes)


def agents_router(base: str, executors: dict[str, AgentExecutor]) -> Starlette:
    """One ASGI app serving each executor under /<role>/, for httpx.ASGITransport."""
    mounts = [
        Mount(f"/{role}", app=agent_app(f"{base}/{role}/", ex, name=role))
        for role, ex in executors.items()
    ]
    return Starlette(routes=mounts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(
    app_for_url: Callable[[str], object], **options: Any
) -> tuple[str, Callable[[], None]]:
    """Serves an ASGI app with uvicorn (and its `options`) on a free loopback port; returns
    (url, stop)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    config = uvicorn.Config(
        app_for_url(url), host="127.0.0.1", port=port, log_level="warning", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_SEC
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"test server on {url} did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)

    return url, stop


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)
