"""Headless Chromium for the console's browser tests.

The browser is the system's (Debian's `chromium`, or CHROMIUM_PATH), given to Playwright as
`executable_path`: never one downloaded by `playwright install`. Each test launches it from its
own event loop (Playwright's objects belong to the loop that made them, and every integration
test has a loop of its own) and opens fresh browser contexts on it: no cookie or storage leaks
from one test to the next.

Set CONSOLE_SCREENSHOTS=<dir> to have the tests write their screenshots there
(`CONSOLE_SCREENSHOTS=docs/console pytest tests/integration/console` makes the docs' images).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Dialog, Page, async_playwright, expect

from tests.support.timing import DEADLINE_SEC

# Root has no sandbox to drop into; the rest keep a browser on a closed network from reaching
# for Google's hosts (updates, sync, field trials) and from a GPU it does not have.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}
SCREENSHOTS = "CONSOLE_SCREENSHOTS"
# A page waited for (`expect(...)`, a click) may take this long on two loaded cores; only a
# failing test waits it out.
expect.set_options(timeout=DEADLINE_SEC * 1000)


def chromium_binary() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")


@dataclass
class Tab:
    """One page in a browser context of its own, and what happened in it: console messages,
    uncaught script errors and dialogs (each dismissed, so that none blocks the page)."""

    page: Page
    context: BrowserContext
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", lambda message: self.console.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", self._dismiss)

    @property
    def refused_by_csp(self) -> list[str]:
        """What the page's Content-Security-Policy stopped: the browser says so on its console."""
        return [message for message in self.console if "Content Security Policy" in message]

    async def _dismiss(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    async def screenshot(self, name: str) -> None:
        """Writes `<name>.png` in the CONSOLE_SCREENSHOTS directory when it is set."""
        directory = os.environ.get(SCREENSHOTS)
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            await self.page.screenshot(path=Path(directory) / f"{name}.png", full_page=True)


class Tabs:
    """Opens tabs on the session's browser, each in a fresh context whose relative URLs are the
    service's."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url.rstrip("/")

    def url(self, path: str) -> str:
        """The absolute URL of a path on the service, as the browser's address bar shows it."""
        return self.base_url + path

    async def open(self, viewport: dict[str, int] = DESKTOP) -> Tab:
        context = await self.browser.new_context(viewport=viewport, base_url=self.base_url)
        context.set_default_timeout(DEADLINE_SEC * 1000)
        return Tab(await context.new_page(), context)


@asynccontextmanager
async def tabs_on(binary: str, base_url: str) -> AsyncIterator[Tabs]:
    """Tabs for one test on a Chromium of its own, closed when the test ends. Playwright's
    headless launch hides scrollbars: the window's width is the page's, in layouts and in
    screenshots alike."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=binary, args=list(CHROMIUM_ARGS), timeout=DEADLINE_SEC * 1000
        )
        try:
            yield Tabs(browser, base_url)
        finally:
            await browser.close()


async def sign_in(tab: Tab, key: str) -> None:
    """Signs in to the console with `key` as a person would: the field labelled "API key",
    then the button "Sign in"; returns once the answer to the form has loaded."""
    page = tab.page
    await page.goto("/console/sign-in")
    await page.get_by_label("API key").fill(key)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
