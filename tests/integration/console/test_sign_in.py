"""Signing in and out of the console in a real browser: who may, who is refused and how, that
signing out ends the session for good, and that the keyboard alone can sign in."""

from __future__ import annotations

from playwright.async_api import expect

from tests.support.browser import Tabs, sign_in
from tests.support.service import KEYS

# Where the calls page sends a browser without a session: the sign-in, then back.
SIGN_IN_FIRST = "/console/sign-in?after=%2Fconsole%2Fcalls"


async def test_an_auditor_signs_in_and_lands_on_the_calls(tabs: Tabs) -> None:
    tab = await tabs.open()
    await tab.page.goto("/console/sign-in")
    await tab.screenshot("sign-in")

    await sign_in(tab, KEYS["auditor"])

    await expect(tab.page).to_have_url(tabs.url("/console/calls"))
    await expect(tab.page.get_by_role("heading", name="Calls")).to_be_visible()
    nav = tab.page.get_by_role("navigation", name="Console")
    await expect(nav.get_by_role("link")).to_have_text(["Calls", "Operations", "Flows"])
    # The key itself is not kept by the browser: only the signed session id is.
    cookies = await tab.context.cookies()
    assert not any(KEYS["auditor"] in cookie["value"] for cookie in cookies)
    session = next(cookie for cookie in cookies if cookie["name"] == "orch_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict"


async def test_a_client_key_is_refused_with_a_clear_message(tabs: Tabs) -> None:
    tab = await tabs.open()

    await sign_in(tab, KEYS["client"])

    problem = tab.page.get_by_role("alert")
    await expect(problem).to_contain_text("This key's role (client) may not use the console")
    await expect(tab.page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    assert "orch_console" not in {cookie["name"] for cookie in await tab.context.cookies()}
    # Nothing behind the sign-in opens without a session.
    await tab.page.goto("/console/calls")
    await expect(tab.page).to_have_url(tabs.url(SIGN_IN_FIRST))


async def test_an_unknown_key_is_refused(tabs: Tabs) -> None:
    tab = await tabs.open()

    await sign_in(tab, "not-a-key-of-this-service")

    await expect(tab.page.get_by_role("alert")).to_have_text("This API key is not known.")


async def test_a_monitor_sees_the_operations_only(tabs: Tabs) -> None:
    tab = await tabs.open()

    await sign_in(tab, KEYS["monitor"])

    await expect(tab.page).to_have_url(tabs.url("/console/operations"))
    nav = tab.page.get_by_role("navigation", name="Console")
    await expect(nav.get_by_role("link")).to_have_text(["Operations"])
    for page in ("/console/calls", "/console/flows"):
        answer = await tab.page.goto(page)
        assert answer is not None and answer.status == 403
    await expect(tab.page.locator("#error-message")).to_contain_text("monitor")


async def test_signing_out_ends_the_session_even_for_its_old_cookie(tabs: Tabs) -> None:
    tab = await tabs.open()
    await sign_in(tab, KEYS["auditor"])
    cookies = await tab.context.cookies()

    async with tab.page.expect_navigation():
        await tab.page.get_by_role("button", name="Sign out").click()

    await expect(tab.page.get_by_role("status")).to_have_text("You are signed out.")
    # A browser that kept the cookie (copied before signing out) is signed out too.
    stale = await tabs.open()
    await stale.context.add_cookies(cookies)
    await stale.page.goto("/console/calls")
    await expect(stale.page).to_have_url(tabs.url(SIGN_IN_FIRST))


async def test_the_keyboard_alone_signs_in_and_reaches_the_navigation(tabs: Tabs) -> None:
    tab = await tabs.open()
    page = tab.page
    await page.goto("/console/sign-in")
    key_field = page.get_by_label("API key")
    await page.locator("body").focus()

    for _ in range(10):  # the skip link first, then the field; a bound, not a wait
        await page.keyboard.press("Tab")
        if await key_field.evaluate("field => field === document.activeElement"):
            break
    await expect(key_field).to_be_focused()
    await page.keyboard.type(KEYS["auditor"])
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")

    await expect(page).to_have_url(tabs.url("/console/calls"))
    # Then, from the top of the page, Tab walks the skip link, the navigation and sign-out.
    await page.locator("body").focus()
    focused = []
    for _ in range(5):
        await page.keyboard.press("Tab")
        focused.append(await page.evaluate("document.activeElement.textContent.trim()"))
    assert focused == ["Skip to content", "Calls", "Operations", "Flows", "Sign out"]
