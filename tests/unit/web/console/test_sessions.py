"""Console sign-in: a key exchanged for a session cookie, roles, CSRF, sign-out."""

from __future__ import annotations

import pytest

from tests.support.console import browser_client, csrf_token, sign_in
from tests.support.service import Service


@pytest.fixture
async def browser(service: Service):
    async with browser_client(service.app) as http:
        yield http


async def test_an_auditor_signs_in_and_lands_on_the_calls(browser, service: Service) -> None:
    answer = await sign_in(browser, "auditor")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/calls"
    cookie = answer.headers["set-cookie"]
    assert "orch_console=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = await browser.get("/console/flows")
    assert page.status_code == 200
    assert "auditor" in page.text


async def test_the_key_itself_is_never_in_a_cookie_or_in_redis(browser, service: Service) -> None:
    from tests.support.service import KEYS

    answer = await sign_in(browser, "admin")
    assert KEYS["admin"] not in answer.headers["set-cookie"]
    stored = [await service.redis.get(key) for key in await service.redis.keys("*console*")]
    assert stored and all(KEYS["admin"].encode() not in value for value in stored)


async def test_over_https_the_cookie_is_secure(service: Service) -> None:
    async with browser_client(service.app, "https://svc") as http:
        answer = await sign_in(http, "auditor")
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_client_key_is_refused_with_a_reason(browser) -> None:
    answer = await sign_in(browser, "client")
    assert answer.status_code == 403
    assert "may not use the console" in answer.text
    assert "orch_console=" not in answer.headers.get("set-cookie", "")


async def test_an_unknown_key_is_refused(browser) -> None:
    form = await browser.get("/console/sign-in")
    answer = await browser.post(
        "/console/sign-in",
        data={"api_key": "not-a-known-key-at-all", "csrf_token": csrf_token(form.text)},
    )
    assert answer.status_code == 401
    assert "This API key is not known." in answer.text


async def test_a_sign_in_without_its_form_token_is_refused(browser) -> None:
    from tests.support.service import KEYS

    answer = await browser.post("/console/sign-in", data={"api_key": KEYS["admin"]})
    assert answer.status_code == 403
    assert "orch_console=" not in answer.headers.get("set-cookie", "")


async def test_a_monitor_sees_operations_but_not_calls(browser) -> None:
    answer = await sign_in(browser, "monitor")
    assert answer.headers["location"] == "/console/operations"
    for page in ("/console/calls", "/console/calls/CALL-001", "/console/flows"):
        refused = await browser.get(page)
        assert refused.status_code == 403
        assert "may not read calls" in refused.text
    assert (await browser.get("/console/operations")).status_code == 200


async def test_a_page_without_a_session_sends_to_sign_in_and_back(browser) -> None:
    answer = await browser.get("/console/flows")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?after=%2Fconsole%2Fflows"
    signed_in = await sign_in(browser, "auditor", after="/console/flows")
    assert signed_in.headers["location"] == "/console/flows"


async def test_sign_in_never_sends_to_another_site(browser) -> None:
    answer = await sign_in(browser, "auditor", after="//evil.example/console/")
    assert answer.headers["location"] == "/console/calls"


async def test_signing_out_ends_the_session_for_its_old_cookie(browser, service: Service) -> None:
    await sign_in(browser, "auditor")
    cookie = browser.cookies["orch_console"]
    page = await browser.get("/console/flows")
    answer = await browser.post("/console/sign-out", data={"csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303
    async with browser_client(service.app) as replay:
        replay.cookies.set("orch_console", cookie, domain="svc", path="/console")
        again = await replay.get("/console/flows")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/sign-in")


async def test_a_post_without_the_csrf_token_changes_nothing(browser, service: Service) -> None:
    await service.turn("greeting")
    await sign_in(browser, "admin")
    answer = await browser.post("/console/calls/CALL-001/delete", data={})
    assert answer.status_code == 403
    assert "csrf" in answer.text
    assert (await service.http.get("/session/CALL-001")).status_code == 200


async def test_every_console_page_sends_a_strict_content_security_policy(browser) -> None:
    for path in ("/console/sign-in", "/console/does-not-exist"):
        answer = await browser.get(path)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_forged_session_cookie_opens_nothing(browser) -> None:
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer("not-the-service-key", salt="orch-console").dumps("any-id")
    browser.cookies.set("orch_console", forged, domain="svc", path="/console")
    answer = await browser.get("/console/calls")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")


async def test_a_session_whose_record_expired_from_redis_is_over(browser, service) -> None:
    await sign_in(browser, "auditor")
    for key in await service.redis.keys("*:console:*"):
        await service.redis.delete(key)  # as its TTL would
    answer = await browser.get("/console/calls")
    assert answer.status_code == 303


async def test_with_authentication_disabled_any_key_signs_in_with_every_role(make_service) -> None:
    service = await make_service(auth_disabled=True, api_keys=None)
    async with browser_client(service.app) as http:
        form = await http.get("/console/sign-in")
        answer = await http.post(
            "/console/sign-in",
            data={"api_key": "anything", "csrf_token": csrf_token(form.text)},
        )
        assert answer.status_code == 303
        assert (await http.get("/console/calls")).status_code == 200


@pytest.mark.parametrize(
    ("sent_from", "status", "call_after"),
    [
        # Another site, even with the page's token: refused, nothing deleted.
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, 200),
        # The console's own page behind a proxy that passes Host without its port: taken.
        ({"Origin": "http://svc:8000", "Sec-Fetch-Site": "same-origin"}, 303, 404),
    ],
    ids=["cross-site", "behind-a-proxy"],
)
async def test_a_post_is_taken_only_from_the_consoles_own_host(
    browser, service: Service, sent_from: dict[str, str], status: int, call_after: int
) -> None:
    await service.turn("greeting")
    await sign_in(browser, "admin")
    page = await browser.get("/console/calls/CALL-001/delete")
    answer = await browser.post(
        "/console/calls/CALL-001/delete",
        data={"csrf_token": csrf_token(page.text)},
        headers=sent_from,
    )
    assert answer.status_code == status
    assert (await service.http.get("/session/CALL-001")).status_code == call_after
