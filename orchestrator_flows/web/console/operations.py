"""The console's operations page and its live feed (Server-Sent Events).

The page is drawn by the server from a snapshot (figures even without JavaScript); then
console.js listens to /console/operations/events, which sends `event: snapshot` with the
figures and the rates since the previous snapshot every CONSOLE_REFRESH_SEC seconds. A feed
ends after CONSOLE_STREAM_SEC (the browser reconnects, and its session is checked again),
when the client leaves, or when the server shuts down, so an open page never holds a shutdown:
sse-starlette watches uvicorn's exit signal, and a server run without signal handlers
(cli.ServerThread) sets `app.state.stopping`, which the feed reads at every tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from fastapi import FastAPI, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import State

from orchestrator_flows.core.errors import StoreUnavailable
from orchestrator_flows.core.transitions import iso
from orchestrator_flows.infra.redis_store import RedisStore
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.ops.metrics import LATENCY_BUCKETS
from orchestrator_flows.ops.snapshot import (
    OUTCOMES,
    AgentLatency,
    OpsRates,
    OpsSnapshot,
    RedisHealth,
    rates,
    snapshot_of,
)
from orchestrator_flows.web.console.pages import Monitor
from orchestrator_flows.web.console.rendering import render

Clock = Callable[[], float]
NONE = "—"  # no figure: no interval yet, or no turns in it
# A quantile past the last histogram bound has no upper bound to show: "over" this.
LATENCY_CEILING_MS = LATENCY_BUCKETS[-1] * 1000


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
    snapshot = snapshot_of(
        state.metrics.samples(),
        circuits={role: circuit["state"] for role, circuit in circuits.items()},
        in_flight=state.metrics.turns_in_flight(),
        redis=await redis_health(state.store),
    )
    count = await state.call_census.latest()
    if count is None:
        return snapshot
    return dataclasses.replace(
        snapshot,
        calls_in_progress=count.in_progress,
        live_calls=count.live,
        calls_counted_all=not count.truncated,
    )


async def readings(
    read: Callable[[], Awaitable[OpsSnapshot]],
    *,
    every_sec: float,
    count: int,
    clock: Clock = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncIterator[Reading]:
    """`count` readings, the first at once, then one every `every_sec` seconds; none once
    `stopping()` says the server is shutting down."""
    previous: tuple[float, OpsSnapshot] | None = None
    for index in range(count):
        if index:
            await asyncio.sleep(every_sec)
        if stopping():
            return
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
    stopping: Callable[[], bool] = lambda: False,
) -> EventSourceResponse:
    # The browser reconnects one refresh after a feed ends.
    retry_ms = int(every_sec * 1000)
    count = feed_length(every_sec, stream_sec)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for reading in readings(read, every_sec=every_sec, count=count, stopping=stopping):
            yield ServerSentEvent(data=reading.as_json().decode(), event="snapshot", retry=retry_ms)

    return EventSourceResponse(events())


def add_operations(console: FastAPI, settings: Settings) -> None:
    @console.get("/operations")
    async def operations_page(request: Request, session: Monitor) -> Response:
        snapshot = await read_snapshot(request.app.state)
        reading = Reading(at=datetime.now(UTC), snapshot=snapshot, rates=None)
        context = {
            "at": iso(reading.at),
            "figures": shown(reading),
            "turns": turn_rows(snapshot),
            "outcomes": outcome_rows(snapshot),
            "agents": agent_rows(snapshot),
            "refresh_sec": settings.console_refresh_sec,
            "latency_ceiling_ms": LATENCY_CEILING_MS,
        }
        return render(request, "operations.html", context)

    @console.get("/operations/events")
    async def operations_events(request: Request, session: Monitor) -> Response:
        feed = snapshot_feed(
            functools.partial(read_snapshot, request.app.state),
            every_sec=settings.console_refresh_sec,
            stream_sec=settings.console_stream_sec,
            stopping=lambda: request.app.state.stopping,
        )
        del feed.headers["cache-control"]  # SecurityHeaders sends the console's one
        return feed


def shown(reading: Reading) -> dict[str, str]:
    """The page's headline figures as text; console.js writes them the same way."""
    s, r = reading.snapshot, reading.rates
    return {
        "turns-per-sec": per_sec(r.total) if r else NONE,
        "error-rate": share(r.error_rate) if r else NONE,
        "rejection-rate": share(r.rejection_rate) if r else NONE,
        "in-flight": str(s.in_flight),
        "calls-in-progress": in_progress(s),
        "calls-started": str(s.calls_started),
        "calls-completed": str(s.calls_completed),
        "redis-health": redis_text(s.redis),
    }


def in_progress(snapshot: OpsSnapshot) -> str:
    """Calls in progress "of" those live, "+" where the scan limit cut the count."""
    if snapshot.calls_in_progress is None:
        return NONE
    more = "" if snapshot.calls_counted_all else "+"
    return f"{snapshot.calls_in_progress}{more} of {snapshot.live_calls}{more} live"


def turn_rows(snapshot: OpsSnapshot) -> list[tuple[str, int]]:
    """Each stage and its turns since start."""
    return [(stage, sum(by.values())) for stage, by in snapshot.turns.items()]


def outcome_rows(snapshot: OpsSnapshot) -> list[tuple[str, int]]:
    """Each outcome and its turns since start, over all stages."""
    totals = dict.fromkeys(OUTCOMES, 0)
    for by_outcome in snapshot.turns.values():
        for outcome, count in by_outcome.items():
            totals[outcome] = totals.get(outcome, 0) + count
    return list(totals.items())


def agent_rows(snapshot: OpsSnapshot) -> list[dict[str, str]]:
    """Each agent, with calls or a circuit: its figures as text, its circuit's state."""
    rows = []
    for role in sorted({*snapshot.agents, *snapshot.circuits}):
        agent = snapshot.agents.get(role) or AgentLatency(0, 0, None, None)
        rows.append(
            {
                "role": role,
                "calls": str(agent.calls),
                "faults": str(agent.faults),
                "p50": latency(agent.p50_ms, agent.calls),
                "p95": latency(agent.p95_ms, agent.calls),
                "circuit": snapshot.circuits.get(role, "closed"),
            }
        )
    return rows


def latency(ms: float | None, calls: int) -> str:
    if not calls:
        return NONE
    return f"over {LATENCY_CEILING_MS:g} ms" if ms is None else f"{ms:g} ms"


def per_sec(value: float) -> str:
    return f"{value:.2f}"


def share(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f} %"


def redis_text(health: RedisHealth) -> str:
    if health.unavailable is not None:
        return f"unavailable ({health.unavailable})"
    return f"ok, {health.round_trip_ms:.2f} ms"
