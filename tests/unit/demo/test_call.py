"""The demo's scripted call says which turn failed and how, instead of only that it failed."""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator_flows.demo.call import TURNS, walk_call


def service_failing_at(number: int, failure: httpx.Response) -> httpx.MockTransport:
    """A service whose turns pass until turn `number`, which answers `failure`."""
    turns: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/orchestrate":
            return httpx.Response(404)
        turns.append(json.loads(request.content))
        if len(turns) == number:
            return failure
        sent = turns[-1]
        if "intent" in sent:
            return httpx.Response(200, json=passed_turn(sent["intent"]))
        return httpx.Response(200, json=classified_turn("refund_request", 0.91))

    return httpx.MockTransport(answer)


def classified_turn(intent: str, confidence: float) -> dict:
    return passed_turn(intent) | {"intent_source": "classifier", "intent_confidence": confidence}


def passed_turn(intent: str) -> dict:
    return {
        "intent_flow_id": 1,
        "flow_label": "GREETING",
        "intent": intent,
        "intent_source": "client",
        "intent_confidence": None,
        "agent_role": "greeting",
        "response_status": "success",
        "status": "success",
        "response": {"text": "ok"},
        "next_flow_label": "AUTHENTICATION",
    }


def test_a_refused_turn_is_named_with_its_status_and_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = httpx.Response(
        503, json={"error": {"code": "store_unavailable", "message": "retry shortly"}}
    )

    failure = walk_call("http://demo", "c", "a", transport=service_failing_at(3, refused))

    assert failure == f"turn 3 of {len(TURNS)} ({TURNS[2][0]}): HTTP 503 store_unavailable"
    assert "turn refused: HTTP 503" in capsys.readouterr().out


def test_turns_sent_without_an_intent_print_the_classifiers_choice_and_confidence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = httpx.Response(503, json={"error": {"code": "store_unavailable", "message": "x"}})
    unclassified = next(n for n, (intent, _) in enumerate(TURNS, 1) if intent is None)

    walk_call("http://demo", "c", "a", transport=service_failing_at(unclassified + 1, refused))

    printed = capsys.readouterr().out
    assert "intent=refund_request (classified, confidence 0.91)" in printed


def test_an_agent_fault_is_named_with_the_agent_and_its_code() -> None:
    fault = passed_turn("otp_verify") | {
        "agent_role": "auth",
        "status": "error",
        "response_status": "error",
        "response": {"error": {"code": "agent_timeout", "message": "no answer in 15 s"}},
    }

    failure = walk_call(
        "http://demo", "c", "a", transport=service_failing_at(2, httpx.Response(200, json=fault))
    )

    assert (
        failure == f"turn 2 of {len(TURNS)} ({TURNS[1][0]}): the auth agent's fault agent_timeout"
    )


def test_a_service_that_does_not_answer_is_a_failure_not_a_traceback() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    failure = walk_call("http://demo", "c", "a", transport=httpx.MockTransport(unreachable))

    assert failure is not None and failure.startswith(
        f"turn 1 of {len(TURNS)} (greeting): no answer"
    )
