"""The store's Redis slots: at most REDIS_MAX_CONNECTIONS operations at once per process; a burst
beyond them waits for a slot (the wait timed) instead of redis-py refusing the command, and a
wait past REDIS_POOL_TIMEOUT_SEC is 503 store_unavailable (reason PoolTimeout), counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from orchestrator_flows.core.errors import StoreUnavailable
from orchestrator_flows.infra.redis_store import RedisStore
from tests.support.timing import eventually


class HeldRedis(fakeredis.FakeAsyncRedis):
    """fakeredis whose scripts wait for `go`, counting how many run at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()
        self.running = 0
        self.most_at_once = 0

    async def evalsha(self, *args: Any) -> Any:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.go.wait()
            return await super().evalsha(*args)
        finally:
            self.running -= 1


@pytest.fixture
async def held() -> AsyncIterator[HeldRedis]:
    client = HeldRedis()
    yield client
    await client.aclose()


def store_over(client: HeldRedis, slots: int, wait_sec: float, waits: list, faults: list):
    return RedisStore(
        client,
        prefix="orch",
        ttl_sec=60,
        lease_sec=5,
        max_call_bytes=1 << 20,
        max_operations=slots,
        slot_wait_sec=wait_sec,
        on_wait=waits.append,
        on_fault=lambda operation, reason: faults.append((operation, reason)),
    )


async def test_a_burst_waits_for_slots_and_every_turn_begins(held: HeldRedis) -> None:
    waits: list[float] = []
    faults: list[tuple[str, str]] = []
    store = store_over(held, slots=3, wait_sec=30, waits=waits, faults=faults)

    burst = [asyncio.create_task(store.begin_turn(f"CALL-{n}")) for n in range(20)]
    await eventually(lambda: held.running == 3, "three operations hold the three slots")
    held.go.set()
    started = await asyncio.gather(*burst)

    assert all(start.lease is not None for start in started)
    assert held.most_at_once == 3
    assert len(waits) == 17 and all(seconds >= 0 for seconds in waits)
    assert faults == []


async def test_a_wait_past_the_pool_timeout_is_503_and_counted(held: HeldRedis) -> None:
    waits: list[float] = []
    faults: list[tuple[str, str]] = []
    store = store_over(held, slots=1, wait_sec=0.05, waits=waits, faults=faults)
    first = asyncio.create_task(store.begin_turn("CALL-1"))
    await eventually(lambda: held.running == 1, "the one slot is taken")

    with pytest.raises(StoreUnavailable) as refused:
        await store.begin_turn("CALL-2")

    assert refused.value.details == {"reason": "PoolTimeout"}
    assert refused.value.headers == {"Retry-After": "1"}
    assert faults == [("begin_turn", "PoolTimeout")]
    assert len(waits) == 1
    held.go.set()
    assert (await first).lease is not None
    assert await held.keys("orch:{CALL-2}:*") == []  # the refused turn wrote nothing
    assert (await store.begin_turn("CALL-2")).lease is not None  # the slot came back


async def test_a_failed_operation_gives_its_slot_back(held: HeldRedis) -> None:
    store = store_over(held, slots=1, wait_sec=0.05, waits=[], faults=[])
    held.go.set()
    await held.set("orch:{CALL-1}:state", b"not json")

    for _ in range(3):  # each refusal frees the only slot for the next
        with pytest.raises(Exception) as caught:
            await store.begin_turn("CALL-1")
        assert getattr(caught.value, "code", "") == "store_record_unreadable"
