"""Fixtures for the console's browser tests: the session's Chromium, and tabs on it opened
against the integration tests' real service (real redis-server, real a2a-sdk agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.conftest import Caller
from tests.support.browser import Chromium, Tabs, chromium_binary, start_chromium, tabs_on


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    browser = start_chromium(binary, tmp_path_factory.mktemp("chromium"))
    yield browser
    browser.stop()


@pytest.fixture
async def tabs(chromium: Chromium, service: Caller) -> AsyncIterator[Tabs]:
    """Tabs on the default service, over an empty Redis."""
    async with tabs_on(chromium, str(service.http.base_url)) as opened:
        yield opened
