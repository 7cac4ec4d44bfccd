"""The console's operations page and its live feed (Server-Sent Events).

The page is drawn by the server from a snapshot (figures even without JavaScript); then
console.js listens to /console/operations/events, which sends `event: snapshot` with the
figures and the rates since the previous snapshot every CONSOLE_REFRESH_SEC seconds. A feed
ends after CONSOLE_STREAM_SEC (the browser reconnects, and its session is checked again),
when the client leaves, or when the server shuts down (sse-starlette watches uvicorn's exit
signal, so an open page never holds a shutdown).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import State

from orchestrator_flows.core.errors import StoreUnavailable
from orchestrator_flows.core.transitions import iso
from orchestrator_flows.infra.redis_store import RedisStore
from orchestrator_flows.ops.snapshot import OpsRates, OpsSnapshot, RedisHealth, rates, snapshot_of

Clock = Callable[[], float]


@dataclass(frozen=True)
class Reading:
    """A snapshot, when it was taken (wall clock, for the page) and the rates since the last."""

    at: datetime
    snapshot: OpsSnapshot
    rates: OpsRates | None  # None for a feed's first reading: no interval yet

    def as_json(self) -> bytes:
        return orjson.dumps({"at": iso(self.at), "snapshot": self.snapshot, "rates": self.rates})


async def redis_health(store: RedisStore, clock: Clock = time.perf_counter) -> RedisHealth:
    """One PING through the store, timed; its StoreUnavailable reason when Redis fails."""
    started = clock()
    try:
        await store.ping()
    except StoreUnavailable as exc:
        return RedisHealth(round_trip_ms=None, unavailable=exc.details.get("reason", "error"))
    return RedisHealth(round_trip_ms=round((clock() - started) * 1000, 2))


async def read_snapshot(state: State) -> OpsSnapshot:
    """The app's figures now: its metrics, this worker's circuits and turns, Redis's ping."""
    circuits = state.breakers.snapshot()
    return snapshot_of(
        state.metrics.samples(),
        circuits={role: circuit["state"] for role, circuit in circuits.items()},
        in_flight=state.metrics.turns_in_flight(),
        redis=await redis_health(state.store),
    )


async def readings(
    read: Callable[[], Awaitable[OpsSnapshot]],
    *,
    every_sec: float,
    count: int,
    clock: Clock = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AsyncIterator[Reading]:
    """`count` readings, the first at once, then one every `every_sec` seconds."""
    previous: tuple[float, OpsSnapshot] | None = None
    for index in range(count):
        if index:
            await asyncio.sleep(every_sec)
        snapshot, taken = await read(), clock()
        since = rates(previous[1], snapshot, taken - previous[0]) if previous else None
        yield Reading(at=now(), snapshot=snapshot, rates=since)
        previous = (taken, snapshot)


def feed_length(every_sec: float, stream_sec: float) -> int:
    """Readings in one feed: as many as fit in `stream_sec`, at least one."""
    return max(1, int(stream_sec // every_sec))


def snapshot_feed(
    read: Callable[[], Awaitable[OpsSnapshot]],
    *,
    every_sec: float,
    stream_sec: float,
    headers: dict[str, str] | None = None,
) -> EventSourceResponse:
    # The browser reconnects one refresh after a feed ends.
    retry_ms = int(every_sec * 1000)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for reading in readings(
            read, every_sec=every_sec, count=feed_length(every_sec, stream_sec)
        ):
            yield ServerSentEvent(data=reading.as_json().decode(), event="snapshot", retry=retry_ms)

    return EventSourceResponse(events(), headers=headers)


def figures(reading: Reading) -> dict[str, Any]:
    """A reading as the page's template and console.js both read it."""
    return orjson.loads(reading.as_json())
