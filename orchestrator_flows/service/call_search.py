"""The console's search over the calls Redis holds: one page of rows, newest first."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator_flows.core.call_search import CallQuery, CallRow, matches, page_of_states
from orchestrator_flows.core.errors import StoredRecordUnreadable, StoreUnavailable
from orchestrator_flows.infra.redis_store import LiveCalls, RedisStore


@dataclass(frozen=True)
class CallPage:
    rows: tuple[CallRow, ...]  # rows offset to offset + limit of those matching, newest first
    total: int  # calls matching, among those read
    offset: int
    limit: int
    truncated: bool  # Redis held more calls than the scan limit: some were not searched
    unreadable: int = 0  # calls whose state this release cannot read: not searched


async def search_calls(
    store: RedisStore, query: CallQuery, *, offset: int, limit: int, scan_limit: int
) -> CallPage:
    """The page of calls that answer `query`. A call id is read directly; otherwise the states
    of at most `scan_limit` calls are read and filtered. StoreUnavailable when Redis is down."""
    if query.call_id is not None:
        states, truncated, unreadable = await _one_call(store, query.call_id)
    else:
        states, truncated, unreadable = await store.live_calls(scan_limit=scan_limit)
    found = [state for state in states if matches(query, state)]
    page = page_of_states(found, offset, limit)
    return CallPage(tuple(page), len(found), offset, limit, truncated, unreadable)


async def _one_call(store: RedisStore, call_id: str) -> LiveCalls:
    try:
        found = await store.read_call(call_id)
    except StoredRecordUnreadable:  # logged by the store
        return LiveCalls([], truncated=False, unreadable=1)
    return LiveCalls([found[0]] if found else [], truncated=False, unreadable=0)


@dataclass(frozen=True)
class CallCount:
    """The calls Redis holds, and those of them not yet complete: the calls in progress."""

    in_progress: int
    live: int
    truncated: bool  # more calls than the scan limit: both are at least these


class CallCensus:
    """Calls in progress, counted at most once every `every_sec` however many pages ask:
    counting reads every live call's state (bench/RESULTS.md, "Console: live-call search")."""

    def __init__(
        self,
        store: Callable[[], RedisStore],
        *,
        every_sec: float,
        scan_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._every_sec = every_sec
        self._scan_limit = scan_limit
        self._clock = clock
        self._lock = asyncio.Lock()
        self._latest: CallCount | None = None
        self._taken = -math.inf

    async def latest(self) -> CallCount | None:
        """The latest count, counted again when it is older than `every_sec`; the last one
        known (None before any) while Redis does not answer."""
        async with self._lock:  # one count at a time; those who waited take its result
            if self._clock() - self._taken < self._every_sec:
                return self._latest
            self._taken = self._clock()  # a failed count is not retried before every_sec either
            try:
                live = await self._store().live_calls(scan_limit=self._scan_limit)
            except StoreUnavailable:
                return self._latest
            in_progress = sum(not state["is_complete"] for state in live.states)
            self._latest = CallCount(in_progress, len(live.states), live.truncated)
            return self._latest
