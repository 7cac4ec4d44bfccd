"""Shared fixtures: the service built in-process over fakeredis, with real a2a-sdk agents
served in-process through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from a2a.server.agent_execution import AgentExecutor
from fastapi import FastAPI

from logs import configure_logging
from main import create_app
from settings import Settings
from tests.agents import MessageAgent, OtpAgent, RecordingTransport, TaskAgent, agents_router

configure_logging("INFO", "json")  # as `uvicorn main:app` does, so tests see the same events

AGENTS_BASE = "http://agents.test"
ROLES = [
    "greeting", "auth", "refund", "billing", "booking",
    "complaint", "account", "balance", "closing", "fallback",
]  # fmt: skip


# One key per role. The default test client uses the admin's, which may do everything.
KEYS = {role: f"{role}-test-key-0123456789" for role in ("client", "auditor", "admin", "monitor")}
API_KEYS = ",".join(f"{role}:{key}" for role, key in KEYS.items())
# What every replica of a service over a shared REDIS_URL is given (fingerprints.py).
IDEMPOTENCY_SECRET = "test-idempotency-secret-0123456789abcdef"


def bearer(role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def default_executors() -> dict[str, AgentExecutor]:
    executors: dict[str, AgentExecutor] = {r: TaskAgent(r) for r in ROLES}
    executors |= {
        "greeting": MessageAgent("greeting"),
        "auth": OtpAgent(),
        "closing": MessageAgent("closing"),
        "fallback": MessageAgent("fallback"),
    }
    return executors


def agent_urls(base: str = AGENTS_BASE) -> dict[str, str]:
    return {role: f"{base}/{role}/" for role in ROLES}


@dataclass
class Service:
    """The service under test, its HTTP client, its Redis and the agents behind it."""

    http: httpx.AsyncClient
    redis: fakeredis.FakeAsyncRedis
    server: fakeredis.FakeServer  # `server.connected = False` takes Redis down
    agents: dict[str, AgentExecutor]
    settings: Settings
    agent_requests: list[httpx.Request]  # every request the service sent to an agent
    app: FastAPI

    async def turn(
        self,
        intent: str,
        message: str = "hello",
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        body = {
            "call_identify_id": "CALL-001",
            "account_id": "ACC-1",
            "eci": "ECI-1",
            "input_message": message,
            "intent": intent,
        } | fields
        return await self.http.post("/orchestrate", json=body, headers=headers)


ServiceFactory = Callable[..., Any]


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
