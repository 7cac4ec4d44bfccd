"""Reading the service's streamed turns (Server-Sent Events) in tests, event by event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource

SSE_TYPE = "text/event-stream"


@dataclass(frozen=True)
class Event:
    name: str  # status | chunk | turn
    raw: str  # its data line as sent

    @property
    def data(self) -> Any:
        return json.loads(self.raw)


class StreamReader:
    """One streamed answer, read as far as the test asks; `events` holds what was read."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[Event] = []
        self._source = _events_of(response)

    async def next(self) -> Event:
        event = await anext(self._source)
        self.events.append(event)
        return event

    async def until(self, name: str) -> Event:
        """Reads up to the next event called `name`, and returns it."""
        while (event := await self.next()).name != name:
            pass
        return event

    async def to_end(self) -> StreamReader:
        async for event in self._source:
            self.events.append(event)
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def chunks(self) -> list[str]:
        return [e.data["text"] for e in self.events if e.name == "chunk"]

    @property
    def statuses(self) -> list[str]:
        return [e.data["state"] for e in self.events if e.name == "status"]

    @property
    def turn_event(self) -> Event:
        """The `turn` event, checked to be the last and the only one."""
        assert self.names.count("turn") == 1, self.names
        assert self.events[-1].name == "turn", self.names
        return self.events[-1]

    @property
    def turn(self) -> dict[str, Any]:
        return self.turn_event.data


async def _events_of(response: httpx.Response) -> AsyncIterator[Event]:
    async for sse in EventSource(response).aiter_sse():
        yield Event(sse.event, sse.data)


async def read_stream(response: httpx.Response) -> StreamReader:
    """The whole streamed answer."""
    return await StreamReader(response).to_end()


def is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").partition(";")[0].strip() == SSE_TYPE


def without_ids(answer: dict[str, Any]) -> dict[str, Any]:
    """A turn's answer less what differs from call to call: the call's and the task's ids."""
    response = {k: v for k, v in answer["response"].items() if k not in ("task_id", "context_id")}
    return {k: v for k, v in answer.items() if k != "call_identify_id"} | {"response": response}
