"""The console's calls in a real browser, over calls walked through the real service: finding
one by id, reading its track and its masked trail, deleting it, the caller's markup shown as
text, and the call page on a tablet."""

from __future__ import annotations

from playwright.async_api import expect

from tests.integration.conftest import CALL_ID, Caller, RedisView
from tests.support.browser import TABLET, Tab, Tabs, sign_in
from tests.support.service import KEYS

STAGES = ["GREETING", "AUTHENTICATION", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING"]
OTHER_CALL = "CALL-002"
# Markup in the caller's words that would run if the page rendered it: an inline script and an
# image whose failing load runs its handler. The greeting agent repeats it back, so it is in
# the caller's words and in the agent's answer.
INJECTION = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


async def signed_in(tabs: Tabs, role: str, **open_with: dict[str, int]) -> Tab:
    tab = await tabs.open(**open_with)
    await sign_in(tab, KEYS[role])
    return tab


async def test_an_auditor_finds_a_call_by_id_and_reads_its_track_and_masked_code(
    tabs: Tabs, service: Caller
) -> None:
    await service.walk(4)  # through the one-time code, to FULFILLMENT
    await service.walk(1, call_id=OTHER_CALL)
    tab = await signed_in(tabs, "auditor")
    page = tab.page
    await expect(page.locator("#calls tbody tr")).to_have_count(2)
    await tab.screenshot("calls")

    await page.get_by_label("Call id").fill(CALL_ID)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Search").click()
    rows = page.locator("#calls tbody tr")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#calls-count")).to_contain_text("1 call found")
    async with page.expect_navigation():
        await rows.get_by_role("link", name=CALL_ID).click()

    await expect(page).to_have_url(tabs.url(f"/console/calls/{CALL_ID}"))
    track = page.get_by_role("list", name="Stages")
    await expect(track.locator(".label")).to_have_text(STAGES)
    await expect(track.locator("[aria-current=step]")).to_contain_text("FULFILLMENT")
    await expect(track.locator(".stage.done .label")).to_have_text(STAGES[:3])
    # The code the caller read out is stored masked: the page shows the mask, never the digits.
    await expect(page.locator("#steps")).to_contain_text("the code is ******")
    assert "123456" not in await page.content()
    # The code was asked for, then given: one exchange with the auth agent.
    exchange = page.locator("tbody.asked-for-input")
    await expect(exchange.locator("tr.step")).to_have_count(2)
    await expect(exchange).to_contain_text("Exchange with auth")
    await tab.screenshot("call")
    assert tab.errors == [] and tab.refused_by_csp == []


async def test_an_admin_deletes_a_call_after_confirming_and_it_leaves_redis(
    tabs: Tabs, service: Caller, store: RedisView
) -> None:
    await service.walk(2)
    tab = await signed_in(tabs, "admin")
    page = tab.page
    await page.goto(f"/console/calls/{CALL_ID}")

    async with page.expect_navigation():
        await page.get_by_role("link", name="Delete this call…").click()
    await expect(page.get_by_role("heading", name=f"Delete call {CALL_ID}?")).to_be_visible()
    await tab.screenshot("delete")
    assert store.state(CALL_ID) is not None  # the confirmation page deletes nothing
    async with page.expect_navigation():
        await page.get_by_role("button", name="Delete call").click()

    await expect(page.get_by_role("status").first).to_have_text(f"Call {CALL_ID} was deleted.")
    assert store.state(CALL_ID) is None
    assert store.steps(CALL_ID) == []
    answer = await page.goto(f"/console/calls/{CALL_ID}")
    assert answer is not None and answer.status == 404


async def test_an_auditor_is_not_offered_deletion_and_may_not_delete(
    tabs: Tabs, service: Caller, store: RedisView
) -> None:
    await service.walk(1)
    tab = await signed_in(tabs, "auditor")
    await tab.page.goto(f"/console/calls/{CALL_ID}")
    await expect(tab.page.get_by_role("link", name="Export as JSON")).to_be_visible()
    await expect(tab.page.get_by_role("link", name="Delete this call…")).to_have_count(0)

    answer = await tab.page.goto(f"/console/calls/{CALL_ID}/delete")

    assert answer is not None and answer.status == 403
    assert store.state(CALL_ID) is not None


async def test_markup_in_a_call_is_shown_as_text_and_never_runs(
    tabs: Tabs, service: Caller
) -> None:
    answer = await service.turn("greeting", INJECTION)
    assert answer.status_code == 200, answer.text
    tab = await signed_in(tabs, "auditor")

    await tab.page.goto(f"/console/calls/{CALL_ID}")

    said = tab.page.locator("#step-1-words q.said")
    await expect(said.first).to_have_text(INJECTION)  # the caller's words, as typed
    await expect(said.last).to_contain_text(INJECTION)  # the agent repeating them
    assert await tab.page.locator("#steps img, #steps script").count() == 0
    assert await tab.page.evaluate("typeof window.__pwned") == "undefined"
    assert tab.dialogs == []
    assert tab.errors == []
    assert tab.refused_by_csp == []  # escaped: not even an attempt for the policy to stop


async def test_the_call_page_fits_a_tablet_without_scrolling_sideways(
    tabs: Tabs, service: Caller
) -> None:
    await service.walk(6)
    tab = await signed_in(tabs, "auditor", viewport=TABLET)

    await tab.page.goto(f"/console/calls/{CALL_ID}")

    await expect(tab.page.locator("#call-outcome")).to_have_text("completed")
    # Wider than the window it is shown in (scrollbars aside) = a sideways scroll.
    widths = "[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    width, window = await tab.page.evaluate(widths)
    assert window == TABLET["width"]
    assert width <= window, f"the page is {width}px wide in a {window}px window"
    await tab.screenshot("call-tablet")
