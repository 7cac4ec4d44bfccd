"""A call's page, its export and its deletion, as an auditor and an admin see them."""

from __future__ import annotations

import pytest

from tests.support.console import browser_client, csrf_token, sign_in
from tests.support.service import Service


@pytest.fixture
async def browser(service: Service):
    async with browser_client(service.app) as http:
        yield http


async def test_the_call_page_shows_the_track_and_every_step(browser, service: Service) -> None:
    await service.turn("greeting", "Hello there")
    await service.turn("verify_identity", "my code is 123456")
    await sign_in(browser, "auditor")
    page = await browser.get("/console/calls/CALL-001")
    assert page.status_code == 200
    for label in ("GREETING", "AUTHENTICATION", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING"):
        assert label in page.text
    assert 'class="stage done" data-stage="1"' in page.text
    assert "Hello there" in page.text
    assert "123456" not in page.text  # the trail is masked, and the page shows the trail


async def test_what_a_caller_said_is_text_never_markup(browser, service: Service) -> None:
    await service.turn("greeting", '<script>alert(1)</script><img src=x onerror="alert(2)">')
    await sign_in(browser, "auditor")
    page = await browser.get("/console/calls/CALL-001")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text


async def test_an_unknown_call_is_a_404_page(browser) -> None:
    await sign_in(browser, "auditor")
    page = await browser.get("/console/calls/NO-SUCH-CALL")
    assert page.status_code == 404
    assert "call_not_found" in page.text.replace(" ", "_")


async def test_the_export_is_the_calls_json(browser, service: Service) -> None:
    await service.turn("greeting")
    await sign_in(browser, "auditor")
    export = await browser.get("/console/calls/CALL-001/export")
    assert export.status_code == 200
    assert export.headers["content-disposition"] == 'attachment; filename="CALL-001.json"'
    api = await service.http.get("/session/CALL-001")
    assert export.json() == api.json()


async def test_an_auditor_may_not_delete(browser, service: Service) -> None:
    await service.turn("greeting")
    await sign_in(browser, "auditor")
    page = await browser.get("/console/calls/CALL-001")
    assert "Delete this call" not in page.text
    assert (await browser.get("/console/calls/CALL-001/delete")).status_code == 403


async def test_an_admin_deletes_a_call_after_confirming(browser, service: Service) -> None:
    await service.turn("greeting")
    await sign_in(browser, "admin")
    confirm = await browser.get("/console/calls/CALL-001/delete")
    assert confirm.status_code == 200
    assert "cannot be undone" in confirm.text
    assert (await service.http.get("/session/CALL-001")).status_code == 200  # not yet
    done = await browser.post(
        "/console/calls/CALL-001/delete", data={"csrf_token": csrf_token(confirm.text)}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/console/calls?deleted=CALL-001"
    assert (await service.http.get("/session/CALL-001")).status_code == 404


async def test_the_flows_page_draws_every_stage_and_route(browser, service: Service) -> None:
    await sign_in(browser, "auditor")
    page = await browser.get("/console/flows")
    assert page.status_code == 200
    flows = service.app.state.flows
    for table in flows.stages.values():
        for intent, role in table.items():
            assert f'<span class="intent">{intent}</span>' in page.text
            assert f'<span class="role">{role}</span>' in page.text
