"""A turn answered as it runs: the agent's task states and words as events, then the answer.

`open_stream` runs the turn in a task of its own and returns once the turn is admitted (every
check before the agent call passed) or over (a replay). What refuses a turn before that is
raised to the caller, who answers it as a JSON turn would be. Past it, the turn's events follow
in order and its answer is the last (`turn`): the JSON body the same turn answers unstreamed, or
the error body of a failure after the agent answered. The task is the service's (`detach`), not
the caller's: a client that leaves mid-stream stops hearing the turn, never the turn itself, which
goes on to its commit (the agent may have acted).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Literal, NamedTuple

import orjson
import structlog

from orchestrator_flows.core.errors import OrchestratorError
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.service.turns import TurnService

log = structlog.get_logger("orchestrator.turns")
INTERNAL = OrchestratorError("internal error; the turn may not have been recorded")


class StreamEvent(NamedTuple):
    name: Literal["status", "chunk", "turn"]
    data: bytes  # compact JSON


class TurnStream:
    """The events of one turn, in order; a `TurnListener` for the turn that makes them."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved here too: a refusal whose client left is nobody's to answer.
        self._opened.add_done_callback(lambda opened: opened.cancelled() or opened.exception())
        self.replayed = False
        self.over = False  # the turn ended: committed, or failed
        self._on_over: list[Callable[[], None]] = []

    def admitted(self) -> None:
        self._opened.set_result(None)

    def status(self, state: str) -> None:
        self._events.put_nowait(StreamEvent("status", orjson.dumps({"state": state})))

    def chunk(self, text: str) -> None:
        self._events.put_nowait(StreamEvent("chunk", orjson.dumps({"text": text})))

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Every event of the turn, the `turn` event last."""
        while True:
            event = await self._events.get()
            yield event
            if event.name == "turn":
                return

    async def next_event(self) -> StreamEvent:
        """The turn's next event; safe to cancel (a wait with a timeout), losing none."""
        return await self._events.get()

    def when_over(self, then: Callable[[], None]) -> None:
        """Runs `then` once the turn has ended (at once if it has)."""
        if self.over:
            then()
        else:
            self._on_over.append(then)

    def _end(self, answer: bytes) -> None:
        self._events.put_nowait(StreamEvent("turn", answer))
        if not self._opened.done():
            self._opened.set_result(None)  # a replay: over before any agent was called
        self._finish()

    def _finish(self) -> None:
        self.over = True
        for then in self._on_over:
            then()

    def _fail(self, exc: BaseException) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)  # refused before the agent: the caller answers
        else:
            if not isinstance(exc, OrchestratorError):
                log.error("streamed_turn_failed", exc_info=exc)
                exc = INTERNAL
            self._events.put_nowait(StreamEvent("turn", orjson.dumps(exc.body())))
        self._finish()


async def open_stream(
    turns: TurnService,
    turn: OrchestrateRequest,
    idempotency_key: str,
    api_key_id: str | None,
) -> TurnStream:
    """The turn's stream, once it is admitted; raises what refused it before the agent call."""
    stream = TurnStream()

    async def run() -> None:
        try:
            answer = await turns.run_turn(turn, idempotency_key, api_key_id, listener=stream)
        except Exception as exc:
            stream._fail(exc)
            return
        stream.replayed = answer.replayed
        stream._end(answer.body)

    turns.detach(run())
    await asyncio.shield(stream._opened)
    return stream
