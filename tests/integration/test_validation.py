"""Malformed turns are refused before any agent or Redis key is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import ACCOUNT_ID, CALL_ID, Agents, Caller, RedisView

pytestmark = pytest.mark.integration

VALID_TURN = {
    "call_identify_id": CALL_ID,
    "account_id": ACCOUNT_ID,
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"eci": None}, "eci", id="missing-field"),
        pytest.param({"account_id": ""}, "account_id", id="empty-string"),
        pytest.param({"call_identify_id": "CALL 001"}, "call_identify_id", id="id-with-space"),
        pytest.param({"call_identify_id": "C" * 129}, "call_identify_id", id="id-too-long"),
        pytest.param({"intent": "Greeting"}, "intent", id="intent-uppercase"),
        pytest.param({"input_message": "x" * 4001}, "input_message", id="message-too-long"),
    ],
)
async def test_malformed_turn_is_refused_naming_the_field(
    service: Caller, store: RedisView, agents: Agents, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in (VALID_TURN | change).items() if v is not None}

    answer = await service.http.post("/orchestrate", json=body)

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert [f["loc"] for f in error["fields"]] == [["body", field]]
    assert store.keys() == []
    assert agents.executors["greeting"].seen.texts == []


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


@pytest.mark.parametrize("chunked", [False, True], ids=["declared-length", "chunked"])
async def test_body_over_64_kib_is_refused(
    service: Caller, store: RedisView, agents: Agents, chunked: bool
) -> None:
    body = ('{"input_message": "' + "x" * 70_000 + '"}').encode()
    content = _chunks(body) if chunked else body

    answer = await service.http.post(
        "/orchestrate", content=content, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"
    assert store.keys() == []
    assert agents.executors["greeting"].seen.texts == []
