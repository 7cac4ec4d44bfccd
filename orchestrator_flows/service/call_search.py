"""The console's search over the calls Redis holds: one page of rows, newest first."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator_flows.core.call_search import CallQuery, CallRow, matches, page_of_states
from orchestrator_flows.core.errors import StoredRecordUnreadable
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
