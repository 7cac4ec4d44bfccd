"""The console's call search against a real redis-server and a real Redis Cluster: calls
started through the service, found by account, stage reached, outcome and call id; and a call
on every slot of the cluster (so on every primary), all found."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from orchestrator_flows.core.call_search import CallQuery
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.core.records import STATE
from orchestrator_flows.core.transitions import new_call
from orchestrator_flows.infra.redis_store import RedisStore, connect, disconnect
from orchestrator_flows.service.call_search import CallPage, search_calls
from tests.integration.conftest import HAPPY_PATH, Caller, RedisTarget, RedisView, call_key

pytestmark = pytest.mark.integration


@pytest.fixture
async def calls(redis_target: RedisTarget, store: RedisView) -> AsyncIterator[RedisStore]:
    """A store of the test's own over the service's (emptied) Redis, as the console reads it."""
    client = connect(redis_target.url, 5.0, cluster=redis_target.cluster)
    yield RedisStore(client, prefix="orch", ttl_sec=3600, lease_sec=5, max_call_bytes=1 << 20)
    await disconnect(client)


async def walk(service: Caller, call_id: str, account_id: str, turns: int) -> None:
    for intent, words in HAPPY_PATH[:turns]:
        answer = await service.turn(intent, words, call_id=call_id, account_id=account_id)
        assert answer.status_code == 200, answer.text


async def search(calls: RedisStore, scan_limit: int = 100, **params: str) -> CallPage:
    query = CallQuery.from_params(params)
    return await search_calls(calls, query, offset=0, limit=50, scan_limit=scan_limit)


def ids(page: CallPage) -> list[str]:
    return [row.call_identify_id for row in page.rows]


async def test_calls_started_through_the_service_are_found_by_each_filter(
    service: Caller, calls: RedisStore
) -> None:
    await walk(service, "CALL-DONE", "ACC-1", 6)
    await walk(service, "CALL-AUTH", "ACC-2", 2)
    await walk(service, "CALL-ASKS", "ACC-1", 4)

    everything = await search(calls)
    assert ids(everything) == ["CALL-ASKS", "CALL-AUTH", "CALL-DONE"]
    assert ids(await search(calls, account_id="ACC-1")) == ["CALL-ASKS", "CALL-DONE"]
    assert ids(await search(calls, stage="2")) == ["CALL-AUTH"]
    assert ids(await search(calls, stage="FULFILLMENT")) == ["CALL-ASKS"]
    assert ids(await search(calls, outcome="completed")) == ["CALL-DONE"]
    assert ids(await search(calls, outcome="in_progress")) == ["CALL-ASKS", "CALL-AUTH"]
    assert ids(await search(calls, call_id="CALL-AUTH")) == ["CALL-AUTH"]
    done = (await search(calls, call_id="CALL-DONE")).rows[0]
    assert (done.stages_completed, done.current_stage, done.is_complete) == (
        (1, 2, 3, 4, 5),
        5,
        True,
    )


def one_call_per_slot() -> list[str]:
    """Call ids whose keys lie on every slot of a Redis Cluster, one each."""
    by_slot: dict[int, str] = {}
    n = 0
    while len(by_slot) < REDIS_CLUSTER_HASH_SLOTS:
        call_id = f"CALL-{n}"
        by_slot.setdefault(key_slot(call_key(call_id, "state").encode()), call_id)
        n += 1
    return list(by_slot.values())


async def test_a_call_on_every_slot_is_found_and_a_lower_limit_says_the_list_is_cut(
    calls: RedisStore, store: RedisView
) -> None:
    call_ids = one_call_per_slot()
    now = datetime.now(UTC)
    with store.client.pipeline(transaction=False) as pipe:
        for call_id in call_ids:
            turn = OrchestrateRequest(
                call_identify_id=call_id, account_id="ACC-1", eci="ECI-1", input_message="hi"
            )
            pipe.set(call_key(call_id, "state"), STATE.write(new_call(turn, now)), ex=3600)
        pipe.execute()

    found = await calls.live_calls(scan_limit=len(call_ids))
    cut = await search(calls, scan_limit=len(call_ids) - 1)

    assert sorted(s["call_identify_id"] for s in found.states) == sorted(call_ids)
    assert (found.truncated, found.unreadable) == (False, 0)
    assert (cut.total, cut.truncated) == (len(call_ids) - 1, True)
