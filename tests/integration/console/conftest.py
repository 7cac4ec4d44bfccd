"""Fixtures for the console's browser tests: the system's Chromium, and tabs on it opened
against the integration tests' real service (real redis-server, real a2a-sdk agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import Caller
from tests.support.browser import Tabs, chromium_binary, tabs_on


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary Playwright is given, or the test is skipped with the reason."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    return binary


@pytest.fixture
async def tabs(chromium: str, service: Caller) -> AsyncIterator[Tabs]:
    """Tabs on the default service, over an empty Redis."""
    async with tabs_on(chromium, str(service.http.base_url)) as opened:
        yield opened
