"""The service under test, in-process: its keys, its agents, the handle tests drive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
from a2a.server.agent_execution import AgentExecutor
from fastapi import FastAPI

from orchestrator_flows.infra.settings import Settings
from tests.support.agents import (
    MessageAgent,
    OtpAgent,
    TaskAgent,
)

AGENTS_BASE = "http://agents.test"
ROLES = [
    "greeting", "auth", "refund", "billing", "booking",
    "complaint", "account", "balance", "closing", "fallback",
]  # fmt: skip


# The happy path of a call, one (intent, caller's words) per turn: stages 1, 2, 2, 3, 4, 5.
HAPPY_PATH = [
    ("greeting", "hello"),
    ("verify_identity", "I am the account holder"),
    ("otp_verify", "the code is 123456"),
    ("refund_request", "I want a refund"),
    ("process_refund", "yes, refund it"),
    ("closing", "thanks, bye"),
]


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
