"""The operations feed: readings from the live app, their rates, and the Server-Sent Events
that carry them."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.ops.snapshot import OpsSnapshot, RedisHealth, snapshot_of
from orchestrator_flows.web.console.operations import (
    feed_length,
    read_snapshot,
    readings,
    snapshot_feed,
)
from tests.support.console import browser_client, sign_in
from tests.support.service import Service

MOMENT = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def with_greetings(count: int) -> OpsSnapshot:
    m = Metrics({"greeting"}, lambda: {})
    m.turns_by("GREETING", "greeting", "success", "").inc(count)
    return snapshot_of(m.samples(), circuits={}, in_flight=0, redis=RedisHealth(0.5))


def reader(snapshots: list[OpsSnapshot]):
    taken: Iterator[OpsSnapshot] = iter(snapshots)

    async def read() -> OpsSnapshot:
        return next(taken)

    return read


async def test_a_feed_gives_rates_from_its_second_reading_on() -> None:
    seconds = iter([10.0, 12.0, 13.0])
    read = reader([with_greetings(0), with_greetings(4), with_greetings(7)])

    got = [
        r
        async for r in readings(
            read, every_sec=0, count=3, clock=lambda: next(seconds), now=lambda: MOMENT
        )
    ]

    assert got[0].rates is None
    assert got[1].rates.by_stage["GREETING"] == 2.0  # 4 turns in 2 s
    assert got[2].rates.by_stage["GREETING"] == 3.0  # 3 turns in 1 s
    assert [r.snapshot.turns["GREETING"]["success"] for r in got] == [0, 4, 7]


async def test_a_feed_ends_at_its_next_tick_once_the_server_is_stopping() -> None:
    read = reader([with_greetings(n) for n in range(5)])
    got: list = []
    async for reading in readings(read, every_sec=0, count=5, stopping=lambda: len(got) >= 2):
        got.append(reading)

    assert len(got) == 2


@pytest.mark.parametrize(
    ("every_sec", "stream_sec", "count"),
    [(2.0, 300.0, 150), (2.0, 3.0, 1), (5.0, 1.0, 1), (0.5, 2.0, 4)],
)
def test_a_feed_holds_as_many_readings_as_fit_in_its_time(
    every_sec: float, stream_sec: float, count: int
) -> None:
    assert feed_length(every_sec, stream_sec) == count


async def test_the_feed_sends_snapshot_events_of_json_then_ends() -> None:
    counts = itertools.count()

    async def read() -> OpsSnapshot:
        return with_greetings(next(counts))

    async def feed(_: Request):
        return snapshot_feed(read, every_sec=0.001, stream_sec=0.003)

    app = Starlette(routes=[Route("/events", feed)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as http:
        answer = await http.get("/events")

    assert answer.headers["content-type"].startswith("text/event-stream")
    events = parse_events(answer.text)
    assert [e["event"] for e in events] == ["snapshot"] * 3
    figures = [orjson.loads(e["data"]) for e in events]
    assert [f["snapshot"]["turns"]["GREETING"]["success"] for f in figures] == [0, 1, 2]
    assert figures[0]["rates"] is None
    assert figures[2]["rates"]["by_outcome"]["success"] > 0


def parse_events(text: str) -> list[dict[str, str]]:
    """Each event's fields (comments, such as pings, left out)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and ":" in line[1:]
        )
        if "event" in fields:
            events.append(fields)
    return events


async def test_a_reading_counts_the_turns_the_service_took(service: Service) -> None:
    before = await read_snapshot(service.app.state)
    await service.turn("greeting")
    await service.turn("closing")  # refused: wrong stage

    after = await read_snapshot(service.app.state)

    assert before.turns["GREETING"]["success"] == 0
    assert after.turns["GREETING"]["success"] == 1
    assert after.turns["AUTHENTICATION"]["rejected"] == 1
    assert after.calls_started == before.calls_started + 1
    assert after.agents["greeting"].calls == 1
    assert after.circuits["greeting"] == "closed"
    assert after.redis.round_trip_ms is not None and after.redis.unavailable is None


async def test_a_reading_says_why_redis_did_not_answer(service: Service) -> None:
    service.server.connected = False

    got = await read_snapshot(service.app.state)

    assert got.redis.round_trip_ms is None
    assert got.redis.unavailable == "ConnectionError"


# The page and its feed, through the console: a session's cookie is all a browser has.

FAST_FEED = {"console_refresh_sec": 0.001, "console_stream_sec": 0.002}  # two readings a feed


@pytest.fixture
async def fast_service(make_service) -> Service:
    return await make_service(**FAST_FEED)


@pytest.fixture
async def browser(fast_service: Service):
    async with browser_client(fast_service.app) as http:
        yield http


async def feed(browser: httpx.AsyncClient) -> list[dict]:
    answer = await browser.get("/console/operations/events")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [orjson.loads(e["data"]) for e in parse_events(answer.text)]


async def test_the_page_shows_the_figures_before_any_script_runs(
    browser, fast_service: Service
) -> None:
    await fast_service.turn("greeting")
    await fast_service.turn("closing")  # refused: wrong stage
    await sign_in(browser, "monitor")

    page = await browser.get("/console/operations")

    assert page.status_code == 200
    html = page.text
    assert '<dd id="calls-started">1</dd>' in html
    assert '<dd id="calls-in-progress">1 of 1 live</dd>' in html
    assert '<dd id="in-flight">0</dd>' in html
    assert re.search(r'<dd id="redis-health" class="health-ok">ok, [\d.]+ ms</dd>', html)
    assert re.search(r'data-stage="GREETING"><th scope="row">GREETING</th><td class="rate">—</td>'
                     r'<td class="count">1</td>', html)  # fmt: skip
    assert 'data-outcome="rejected"><th scope="row">rejected</th>' in html
    assert re.search(r'data-agent="greeting"><th scope="row">greeting</th><td>1</td><td>0</td>'
                     r"<td>[\d.]+ ms</td>", html)  # fmt: skip
    assert '<td class="circuit-closed">closed</td>' in html
    assert re.search(
        r'<main id="main" data-feed="/console/operations/events" data-updated-at="[^"]+Z"', html
    )


async def test_the_page_runs_only_the_consoles_own_script_and_styles(browser) -> None:
    await sign_in(browser, "monitor")
    html = (await browser.get("/console/operations")).text

    assert '<script src="/console/static/console.js" defer></script>' in html
    assert "<script>" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    script = await browser.get("/console/static/console.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "new EventSource(" in script.text


async def test_the_feed_follows_the_turns_the_service_takes(browser, fast_service: Service) -> None:
    await sign_in(browser, "monitor")
    await fast_service.turn("greeting")
    first = await feed(browser)
    await fast_service.turn("verify_identity")
    await fast_service.turn("otp_verify", "123456")
    second = await feed(browser)

    assert len(first) == len(second) == 2
    assert first[0]["rates"] is None and first[1]["rates"] is not None
    assert first[-1]["snapshot"]["turns"]["GREETING"]["success"] == 1
    after = second[-1]["snapshot"]
    assert after["turns"]["AUTHENTICATION"] == {
        "success": 1, "input_required": 1, "error": 0, "rejected": 0,
    }  # fmt: skip
    assert after["agents"]["auth"]["calls"] == 2
    assert after["circuits"]["auth"] == "closed"
    assert after["redis"]["unavailable"] is None


@pytest.mark.parametrize("role", ["monitor", "auditor", "admin"])
async def test_every_role_that_may_monitor_reads_the_feed(browser, role: str) -> None:
    await sign_in(browser, role)

    assert (await browser.get("/console/operations")).status_code == 200
    assert len(await feed(browser)) == 2


async def test_without_a_session_the_feed_sends_to_sign_in(browser) -> None:
    answer = await browser.get("/console/operations/events")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?after=%2Fconsole%2Foperations%2Fevents"
    assert "text/event-stream" not in answer.headers.get("content-type", "")


async def test_the_feed_carries_the_consoles_security_headers(browser) -> None:
    await sign_in(browser, "monitor")

    answer = await browser.get("/console/operations/events")

    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers.get_list("cache-control") == ["no-store"]
    assert answer.headers["x-content-type-options"] == "nosniff"
