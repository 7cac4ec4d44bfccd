"""The turn endpoint the app serves ahead of FastAPI's router: it must answer as the framework
would, and sit where every other middleware sees it."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fastapi import Request

from orchestrator_flows.web.auth import API_KEY_HEADER, BEARER, presented_key
from orchestrator_flows.web.turn_endpoint import TurnMiddleware
from tests.support.service import KEYS, Service

TURN = {
    "call_identify_id": "CALL-HOT",
    "account_id": "ACC-1",
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [
        ("Bearer k-1", None),
        ("bearer k-1", None),
        ("BEARER   k-1  ", None),
        ("Bearer", "k-2"),
        ("Bearer ", "k-2"),
        ("Basic k-1", "k-2"),
        ("Basic k-1", None),
        ("k-1", None),
        ("", "k-2"),
        (None, "k-2"),
        (None, ""),
        (None, None),
        ("Bearer k-1", "k-2"),
    ],
)
async def test_key_is_read_from_headers_as_fastapis_security_schemes_read_it(
    authorization: str | None, api_key: str | None
) -> None:
    headers = [
        (name.encode(), value.encode())
        for name, value in (("authorization", authorization), ("x-api-key", api_key))
        if value is not None
    ]
    request = Request({"type": "http", "headers": headers})
    bearer, header_key = await BEARER(request), await API_KEY_HEADER(request)
    by_fastapi = bearer.credentials if bearer else header_key

    assert presented_key(authorization, api_key) == by_fastapi


async def test_first_of_repeated_headers_counts_as_in_the_framework(service: Service) -> None:
    answer = await service.http.post(
        "/orchestrate",
        json=TURN,
        headers=[
            ("Authorization", f"Bearer {KEYS['client']}"),
            ("Authorization", "Bearer not-a-known-key"),
            ("X-Request-ID", "first"),
            ("X-Request-ID", "second"),
        ],
    )

    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "first"


async def test_implausible_request_id_is_replaced_by_a_fresh_one(service: Service) -> None:
    answer = await service.http.post("/orchestrate", json=TURN, headers={"X-Request-ID": "a b"})

    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


async def test_error_answers_carry_the_request_id_and_the_error_shape(service: Service) -> None:
    refused = await service.http.post(
        "/orchestrate", json=TURN | {"intent": "closing"}, headers={"X-Request-ID": "req-9"}
    )

    assert refused.status_code == 409
    assert refused.headers["X-Request-ID"] == "req-9"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["code"] == "intent_not_allowed"


async def test_unexpected_failure_is_500_in_the_error_shape_and_logged(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.app.state.turns, "run_turn", broken)

    answer = await service.http.post("/orchestrate", json=TURN)

    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert answer.headers["X-Request-ID"]
    lines = capsys.readouterr().err.splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(e["event"] == "unexpected error" and "a bug" in e["exception"] for e in logged)


async def test_client_gone_before_its_body_gets_no_answer_and_changes_nothing(
    service: Service,
) -> None:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/orchestrate",
        "headers": [(b"authorization", f"Bearer {KEYS['client']}".encode())],
    }
    await service.app(scope, receive, send)

    assert sent == []
    assert await service.redis.keys("*") == []


async def test_turns_are_served_under_a_root_path(service: Service) -> None:
    transport = httpx.ASGITransport(app=service.app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        answer = await http.post(
            "/api/orchestrate", json=TURN, headers={"Authorization": f"Bearer {KEYS['client']}"}
        )

    assert answer.status_code == 200, answer.text
    assert answer.json()["step_seq"] == 1


async def test_other_methods_on_the_turn_path_are_the_frameworks(service: Service) -> None:
    answer = await service.http.get("/orchestrate")

    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.headers["X-Request-ID"]


class StampingMiddleware:
    """A middleware of the kind an operator adds (CORS, trusted hosts, rate limits)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def stamped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamped", b"yes")]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_a_middleware_added_after_create_app_sees_turns_like_every_request(
    service: Service,
) -> None:
    service.app.add_middleware(StampingMiddleware)

    turn = await service.http.post("/orchestrate", json=TURN)
    refused = await service.http.post("/orchestrate", json=TURN | {"intent": "closing"})
    health = await service.http.get("/healthz")

    assert turn.status_code == 200, turn.text
    assert refused.status_code == 409
    assert [a.headers.get("x-stamped") for a in (turn, refused, health)] == ["yes"] * 3


async def test_without_the_turn_middleware_the_documented_route_serves_turns_the_same(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    service.app.user_middleware = [
        m for m in service.app.user_middleware if m.cls is not TurnMiddleware
    ]
    capsys.readouterr()

    ran = await service.http.post("/orchestrate", json=TURN, headers={"X-Request-ID": "req-1"})
    refused = await service.http.post("/orchestrate", json=TURN | {"intent": "closing"})

    assert (ran.status_code, ran.json()["step_seq"]) == (200, 1)
    assert ran.headers["X-Request-ID"] == "req-1"
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "intent_not_allowed")
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e.get("status")) for e in logged] == [("turn", None), ("request", 409)]
