"""Headless Chromium for the console's browser tests.

The browser is the system's (Debian's `chromium`, or CHROMIUM_PATH), never one downloaded by
`playwright install`. It starts once per test session as a plain process serving the DevTools
protocol; each test drives it with Playwright's async API from its own event loop (Playwright's
objects belong to the loop that made them, and every integration test has a loop of its own),
in fresh browser contexts: no cookie or storage leaks from one test to the next.

Set CONSOLE_SCREENSHOTS=<dir> to have the tests write their screenshots there
(`CONSOLE_SCREENSHOTS=docs/console pytest tests/integration/console` makes the docs' images).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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
class Chromium:
    """A running headless Chromium and the address of its DevTools endpoint."""

    process: subprocess.Popen
    endpoint: str

    def stop(self) -> None:
        # Asked to end first, so that it ends its renderer and helper processes with it.
        self.process.terminate()
        try:
            self.process.wait(DEADLINE_SEC)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_chromium(binary: str, profile: Path) -> Chromium:
    """Starts the browser with an empty profile in `profile`; the DevTools port it chose is the
    first line of the profile's DevToolsActivePort file once it is listening."""
    # Scrollbars hidden as Playwright's own headless launch does: the window's width is then
    # the page's (no scrollbar to take from it), in layouts and in screenshots alike.
    command = [binary, "--headless", "--hide-scrollbars", "--remote-debugging-port=0"]
    command.append(f"--user-data-dir={profile}")
    process = subprocess.Popen(
        [*command, *CHROMIUM_ARGS, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + DEADLINE_SEC
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{binary} did not open its DevTools port")
        time.sleep(0.02)
    port = port_file.read_text().split()[0]
    return Chromium(process, f"http://127.0.0.1:{port}")


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
async def tabs_on(chromium: Chromium, base_url: str) -> AsyncIterator[Tabs]:
    """Tabs for one test; its contexts close when it ends (the browser keeps running)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(chromium.endpoint)
        try:
            yield Tabs(browser, base_url)
        finally:
            # Over CDP, close() closes the contexts this connection made, then disconnects.
            await browser.close()


async def sign_in(tab: Tab, key: str) -> None:
    """Signs in to the console with `key` as a person would: the field labelled "API key",
    then the button "Sign in"; returns once the answer to the form has loaded."""
    page = tab.page
    await page.goto("/console/sign-in")
    await page.get_by_label("API key").fill(key)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
