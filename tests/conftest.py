"""Shared fixtures: the service built in-process over fakeredis, with real a2a-sdk agents
served in-process through httpx's ASGI transport (no sockets). Helpers live in tests/support."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from a2a.server.agent_execution import AgentExecutor

from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.ops.logs import configure_logging
from orchestrator_flows.web.app import create_app
from tests.support.agents import RecordingTransport, agents_router
from tests.support.service import (
    AGENTS_BASE,
    API_KEYS,
    Service,
    ServiceFactory,
    agent_urls,
    bearer,
    default_executors,
)

configure_logging("INFO", "json")  # as `uvicorn main:app` does, so tests see the same events


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[ServiceFactory]:
    """Builds a service; pass `agents={role: executor}` to swap agents, settings overrides.
    Its state directory (where the embedded default keeps its secret) is the test's own."""
    stack: list[Any] = []

    async def build(
        agents: dict[str, AgentExecutor] | None = None,
        server: fakeredis.FakeServer | None = None,  # another service's Redis, to share it
        **overrides: Any,
    ) -> Service:
        executors = default_executors() | (agents or {})
        defaults = {"agent_urls": agent_urls(), "api_keys": API_KEYS, "orch_state_dir": tmp_path}
        settings = Settings(**(defaults | overrides))
        server = server or fakeredis.FakeServer()
        redis = fakeredis.FakeAsyncRedis(server=server)
        transport = RecordingTransport(
            httpx.ASGITransport(app=agents_router(AGENTS_BASE, executors))
        )
        app = create_app(settings, redis_client=redis, agent_transport=transport)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=bearer()
        )
        stack.append((lifespan, http))
        return Service(
            http=http,
            redis=redis,
            server=server,
            agents=executors,
            settings=settings,
            agent_requests=transport.requests,
            app=app,
        )

    yield build
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def service(make_service: ServiceFactory) -> Service:
    return await make_service()
