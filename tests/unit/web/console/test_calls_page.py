"""The calls list: search by the form's fields, newest first, paged; bad searches explained."""

from __future__ import annotations

import re

import pytest

from tests.support.agents import DEMO_OTP
from tests.support.console import browser_client, sign_in
from tests.support.service import Service


@pytest.fixture
async def browser(service: Service):
    async with browser_client(service.app) as http:
        await sign_in(http, "auditor")
        yield http


def listed(page: str) -> list[str]:
    return re.findall(r'<a class="id" href="/console/calls/([^"]+)"', page)


async def start_calls(service: Service, count: int, account: str = "ACC-1") -> list[str]:
    ids = [f"CALL-{n:03d}" for n in range(count)]
    for call_id in ids:
        answer = await service.turn("greeting", call_identify_id=call_id, account_id=account)
        assert answer.status_code == 200
    return ids


async def test_the_list_shows_live_calls_newest_first(browser, service: Service) -> None:
    ids = await start_calls(service, 3)
    page = await browser.get("/console/calls")
    assert page.status_code == 200
    assert listed(page.text) == list(reversed(ids))
    assert "3 calls found" in page.text


async def test_a_search_by_call_id_finds_that_call_only(browser, service: Service) -> None:
    await start_calls(service, 3)
    page = await browser.get("/console/calls", params={"call_id": "CALL-001"})
    assert listed(page.text) == ["CALL-001"]


async def test_a_search_by_account_and_stage(browser, service: Service) -> None:
    await start_calls(service, 2, account="ACC-A")
    await service.turn("greeting", call_identify_id="OTHER-1", account_id="ACC-B")
    other = {"call_identify_id": "OTHER-1", "account_id": "ACC-B"}
    await service.turn("verify_identity", "it is me", **other)
    await service.turn("verify_identity", f"the code is {DEMO_OTP}", **other)  # to stage 3
    by_account = await browser.get("/console/calls", params={"account_id": "ACC-B"})
    assert listed(by_account.text) == ["OTHER-1"]
    at_stage_2 = await browser.get("/console/calls", params={"stage": "2"})
    assert listed(at_stage_2.text) == ["CALL-001", "CALL-000"]
    at_stage_3 = await browser.get("/console/calls", params={"stage": "3"})
    assert listed(at_stage_3.text) == ["OTHER-1"]


async def test_pages_neither_repeat_nor_skip_a_call(browser, service: Service) -> None:
    ids = await start_calls(service, 30)
    first = await browser.get("/console/calls")
    link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert link is not None
    second = await browser.get(link.group(1).replace("&amp;", "&"))
    seen = listed(first.text) + listed(second.text)
    assert seen == list(reversed(ids))
    assert 'rel="next"' not in second.text


async def test_a_bad_search_is_explained_and_lists_nothing(browser, service: Service) -> None:
    await start_calls(service, 1)
    page = await browser.get("/console/calls", params={"stage": "9", "from": "yesterday"})
    assert page.status_code == 422
    assert 'id="search-problems"' in page.text
    assert "stage" in page.text and "from" in page.text
    assert listed(page.text) == []


async def test_a_deleted_call_is_announced(browser) -> None:
    page = await browser.get("/console/calls", params={"deleted": "<b>X</b>"})
    assert "&lt;b&gt;X&lt;/b&gt;" in page.text
