"""The operations page in a real browser: its figures follow the service's turns live, from
its feed, without a reload."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.integration.conftest import Caller
from tests.support.browser import Tabs, sign_in
from tests.support.service import KEYS


async def test_the_operations_page_follows_new_turns_without_a_reload(
    tabs: Tabs, service: Caller
) -> None:
    tab = await tabs.open()
    await sign_in(tab, KEYS["monitor"])
    page = tab.page
    await expect(page).to_have_url(tabs.url("/console/operations"))
    started, completed = page.locator("#calls-started"), page.locator("#calls-completed")
    # Counts since the service started: other tests' calls are in them too.
    before = int(await started.inner_text()), int(await completed.inner_text())
    await page.evaluate("window.__same_page = true")  # gone if the page were loaded again

    await service.walk(6)
    await service.walk(1, call_id="CALL-002")

    await expect(started).to_have_text(str(before[0] + 2))
    await expect(completed).to_have_text(str(before[1] + 1))
    await expect(page.locator('#circuits tr[data-agent="greeting"] td')).to_have_text("closed")
    # The turns chart draws each stage's line once the feed has given it two points.
    lines = page.locator("#turns-chart polyline")
    await expect(lines).to_have_count(5)
    await expect(lines.first).to_have_attribute("points", re.compile(r"\S \S"))
    assert await page.evaluate("window.__same_page") is True
    assert tab.errors == [] and tab.refused_by_csp == []
    await tab.screenshot("operations")
