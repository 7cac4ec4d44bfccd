"""The console's call search over the calls a service recorded (fakeredis, in-process agents)."""

from __future__ import annotations

import orjson

from orchestrator_flows.core.call_search import CallQuery
from orchestrator_flows.core.records import STATE
from orchestrator_flows.infra.redis_store import RedisStore, call_keys
from orchestrator_flows.service.call_search import CallCensus, CallCount, CallPage, search_calls
from tests.support.records import call_state
from tests.support.service import HAPPY_PATH, Service

TURNS = HAPPY_PATH


async def walk(service: Service, call_id: str, account_id: str, turns: int) -> None:
    for intent, words in TURNS[:turns]:
        answer = await service.turn(intent, words, call_identify_id=call_id, account_id=account_id)
        assert answer.status_code == 200, answer.text


async def search(
    service: Service, offset: int = 0, limit: int = 20, scan_limit: int = 100, **params: str
) -> CallPage:
    store: RedisStore = service.app.state.store
    query = CallQuery.from_params(params)
    return await search_calls(store, query, offset=offset, limit=limit, scan_limit=scan_limit)


def ids(page: CallPage) -> list[str]:
    return [row.call_identify_id for row in page.rows]


async def three_calls(service: Service) -> None:
    await walk(service, "CALL-A", "ACC-1", 6)  # complete
    await walk(service, "CALL-B", "ACC-2", 3)  # at INTENT_CAPTURE
    await walk(service, "CALL-C", "ACC-1", 1)  # at AUTHENTICATION


async def test_a_search_without_filters_lists_every_call_newest_first(service: Service) -> None:
    await three_calls(service)

    page = await search(service)

    assert ids(page) == ["CALL-C", "CALL-B", "CALL-A"]
    assert (page.total, page.truncated, page.unreadable) == (3, False, 0)
    complete = page.rows[2]
    assert (complete.outcome, complete.stages_completed, complete.step_count) == (
        "completed",
        (1, 2, 3, 4, 5),
        6,
    )


async def test_each_filter_finds_the_calls_it_names(service: Service) -> None:
    await three_calls(service)

    assert ids(await search(service, account_id="ACC-1")) == ["CALL-C", "CALL-A"]
    assert ids(await search(service, stage="3")) == ["CALL-B"]
    assert ids(await search(service, outcome="completed")) == ["CALL-A"]
    assert ids(await search(service, outcome="in_progress")) == ["CALL-C", "CALL-B"]
    assert ids(await search(service, intent="otp_verify")) == ["CALL-B", "CALL-A"]
    assert ids(await search(service, agent="refund")) == ["CALL-A"]
    assert ids(await search(service, account_id="ACC-2", outcome="completed")) == []


async def test_pages_split_the_matching_calls_and_count_them_all(service: Service) -> None:
    await three_calls(service)

    first = await search(service, limit=2)
    second = await search(service, offset=2, limit=2)

    assert (ids(first), ids(second)) == (["CALL-C", "CALL-B"], ["CALL-A"])
    assert first.total == second.total == 3


async def test_a_call_id_is_read_directly_past_the_scan_limit(service: Service) -> None:
    await three_calls(service)

    found = await search(service, call_id="CALL-A", scan_limit=1)
    scanned = await search(service, scan_limit=1)

    assert (ids(found), found.truncated) == (["CALL-A"], False)
    assert (scanned.total, scanned.truncated) == (1, True)


async def test_a_call_id_that_fails_another_filter_or_is_unknown_finds_nothing(
    service: Service,
) -> None:
    await three_calls(service)

    assert (await search(service, call_id="CALL-A", outcome="in_progress")).total == 0
    assert (await search(service, call_id="CALL-Z")).total == 0


async def test_an_unreadable_call_is_left_out_and_counted(service: Service) -> None:
    await three_calls(service)
    newer = orjson.dumps({"v": STATE.version + 1, **call_state(call_identify_id="CALL-N")})
    await service.redis.set(call_keys("orch", "CALL-N").state, newer)

    listed = await search(service)
    by_id = await search(service, call_id="CALL-N")

    assert (listed.total, listed.unreadable) == (3, 1)
    assert (by_id.total, by_id.unreadable) == (0, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def census_of(service: Service, clock: Clock, scan_limit: int = 100) -> CallCensus:
    return CallCensus(
        lambda: service.app.state.store, every_sec=30, scan_limit=scan_limit, clock=clock
    )


async def test_the_census_counts_live_calls_not_yet_complete(service: Service) -> None:
    await walk(service, "DONE-1", "ACC-1", len(TURNS))
    await walk(service, "OPEN-1", "ACC-1", 2)
    await walk(service, "OPEN-2", "ACC-2", 4)

    count = await census_of(service, Clock()).latest()

    assert count == CallCount(in_progress=2, live=3, truncated=False)


async def test_the_census_counts_again_only_when_its_count_is_old(service: Service) -> None:
    clock = Clock()
    census = census_of(service, clock)
    await walk(service, "OPEN-1", "ACC-1", 1)
    assert (await census.latest()).in_progress == 1

    await walk(service, "OPEN-2", "ACC-1", 1)
    clock.now = 29.0
    assert (await census.latest()).in_progress == 1  # the count of 29 s ago
    clock.now = 30.0
    assert (await census.latest()).in_progress == 2


async def test_the_census_keeps_its_last_count_while_redis_is_down(service: Service) -> None:
    clock = Clock()
    census = census_of(service, clock)
    assert await census.latest() == CallCount(0, 0, False)
    await walk(service, "OPEN-1", "ACC-1", 1)
    service.server.connected = False
    clock.now = 60.0
    assert await census.latest() == CallCount(0, 0, False)


async def test_the_census_says_when_the_scan_limit_cut_it(service: Service) -> None:
    for n in range(3):
        await walk(service, f"OPEN-{n}", "ACC-1", 1)
    count = await census_of(service, Clock(), scan_limit=2).latest()
    assert count == CallCount(in_progress=2, live=2, truncated=True)
