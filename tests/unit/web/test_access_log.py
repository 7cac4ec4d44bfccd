"""access_log.py: one `request` line per request, never with its query string (uvicorn's own
access log, which wrote it, is off: tests/integration/test_startup.py and test_deploy.py)."""

from __future__ import annotations

import json

import pytest

from tests.support.leaks import shows_test_card
from tests.support.service import Service


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def requests_in(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["event"] == "request"]


async def test_each_request_is_one_line_with_method_path_status_duration_and_request_id(
    service: Service, capsys
) -> None:
    capsys.readouterr()

    answer = await service.http.get("/healthz", headers={"X-Request-ID": "req-1"})

    [line] = requests_in(lines_of(capsys))
    assert answer.status_code == 200
    assert {key: line[key] for key in ("method", "path", "status", "request_id")} == {
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "request_id": "req-1",
    }
    assert line["duration_ms"] >= 0
    assert line["logger"] == "orchestrator.http"


async def test_a_query_string_with_a_card_number_never_reaches_the_log(
    service: Service, capsys
) -> None:
    await service.http.get("/healthz?pan=4111111111111111")
    await service.http.get("/session/CALL-001/steps?pan=4111111111111111")
    await service.http.post("/orchestrate?pan=4111111111111111", json={})

    logged = capsys.readouterr().err
    assert not shows_test_card(logged)
    assert [line["path"] for line in requests_in(map(json.loads, logged.splitlines()))] == [
        "/healthz",
        "/session/CALL-001/steps",
        "/orchestrate",
    ]


async def test_a_path_no_route_accepts_is_logged_without_its_digits(
    service: Service, capsys
) -> None:
    await service.http.get("/cards/4111111111111111")
    await service.http.get("/session/4111 1111 1111 1111")  # an id the route refuses: 422

    logged = capsys.readouterr().err
    assert not shows_test_card(logged)
    assert [line["path"] for line in requests_in(map(json.loads, logged.splitlines()))] == [
        "/cards/################",
        "/session/#### #### #### ####",
    ]


async def test_a_turn_that_ran_has_its_turn_line_and_no_request_line(
    service: Service, capsys
) -> None:
    capsys.readouterr()

    await service.turn("greeting")

    assert [line["event"] for line in lines_of(capsys)] == ["turn"]


async def test_refused_and_replayed_turns_each_have_a_request_line(
    service: Service, capsys
) -> None:
    key = {"Idempotency-Key": "k-1"}
    await service.turn("greeting", headers=key)
    capsys.readouterr()

    replayed = await service.turn("greeting", headers=key)
    refused = await service.turn("closing")
    unauthenticated = await service.http.post(
        "/orchestrate", json={}, headers={"Authorization": ""}
    )

    lines = requests_in(lines_of(capsys))
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/orchestrate", 200),
        ("/orchestrate", 409),
        ("/orchestrate", 401),
    ]
    assert [line["request_id"] for line in lines] == [
        answer.headers["X-Request-ID"] for answer in (replayed, refused, unauthenticated)
    ]


async def test_a_path_with_a_trailing_slash_is_404_not_a_redirect(service: Service) -> None:
    answer = await service.http.post("/orchestrate/", json={}, headers={"Host": "attacker.example"})
    session = await service.http.get("/session/CALL-001/")

    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
    assert "location" not in answer.headers
    assert (session.status_code, session.json()["error"]["code"]) == (404, "not_found")
