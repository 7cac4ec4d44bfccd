"""The flows page in a real browser: the loaded flow table drawn stage by stage."""

from __future__ import annotations

from playwright.async_api import expect

from tests.support.browser import Tabs, sign_in
from tests.support.service import KEYS, ROLES


async def test_an_auditor_reads_each_stage_with_its_intents_and_their_agents(tabs: Tabs) -> None:
    tab = await tabs.open()
    await sign_in(tab, KEYS["auditor"])

    await tab.page.goto("/console/flows")

    stages = tab.page.get_by_role("list", name="Stages, their intents and agents")
    await expect(stages.get_by_role("heading")).to_have_text(
        ["1 GREETING", "2 AUTHENTICATION", "3 INTENT_CAPTURE", "4 FULFILLMENT", "5 CLOSING"]
    )
    authentication = tab.page.locator("#flow-stage-2 .routes li")
    await expect(authentication.filter(has_text="otp_verify")).to_contain_text("auth")
    await expect(tab.page.locator("#flow-agents tbody th")).to_have_text(sorted(ROLES))
    await tab.screenshot("flows")
    assert tab.refused_by_csp == []
