"""The demo's scripted call prints the agent's words as they stream in, then the turn's summary,
and says which turn failed and how, instead of only that it failed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from orchestrator_flows.demo.call import TURNS, walk_call

SSE = {"content-type": "text/event-stream; charset=utf-8"}
SAID = ["All ", "good ", "here."]


def event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def streamed(turn: dict, words: Iterable[str] = SAID) -> httpx.Response:
    """A streamed turn as the service answers it: the agent's state, its words, the turn."""
    body = event("status", {"state": "working"})
    body += b"".join(event("chunk", {"text": word}) for word in words)
    return httpx.Response(200, headers=SSE, content=body + event("turn", turn))


def service_answering(number: int, answer: httpx.Response) -> httpx.MockTransport:
    """A service whose turns pass, streamed, but turn `number`, which answers `answer`."""
    turns: list[dict] = []

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/orchestrate":
            return httpx.Response(404)
        assert request.headers["accept"] == "text/event-stream"
        turns.append(json.loads(request.content))
        if len(turns) == number:
            return answer
        sent = turns[-1]
        if "intent" in sent:
            return streamed(passed_turn(sent["intent"]))
        return streamed(classified_turn("refund_request", 0.91))

    return httpx.MockTransport(serve)


def classified_turn(intent: str, confidence: float) -> dict:
    return passed_turn(intent) | {"intent_source": "classifier", "intent_confidence": confidence}


def passed_turn(intent: str, text: str = "".join(SAID)) -> dict:
    return {
        "intent_flow_id": 1,
        "flow_label": "GREETING",
        "intent": intent,
        "intent_source": "client",
        "intent_confidence": None,
        "agent_role": "greeting",
        "response_status": "success",
        "status": "success",
        "response": {"text": text},
        "next_flow_label": "AUTHENTICATION",
    }


REFUSED = httpx.Response(503, json={"error": {"code": "store_unavailable", "message": "x"}})


def test_the_agents_words_are_printed_as_they_arrive_before_the_turns_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed_before_next_event: list[str] = []

    def words_then_turn() -> Iterator[bytes]:
        for word in SAID:
            yield event("chunk", {"text": word})
            printed_before_next_event.append(capsys.readouterr().out)
        yield event("turn", passed_turn("greeting"))

    first = httpx.Response(200, headers=SSE, content=words_then_turn())
    walk_call("http://demo", "c", "a", transport=service_answering(1, first))

    printed = "".join(printed_before_next_event) + capsys.readouterr().out
    assert printed_before_next_event[0].endswith("agent:  All ")
    assert printed_before_next_event[1] == "good "
    assert printed.index("agent:  All good here.\n") < printed.index("[1 GREETING]")
    assert "next: AUTHENTICATION" in printed


def test_a_refused_turn_is_named_with_its_status_and_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = httpx.Response(
        503, json={"error": {"code": "store_unavailable", "message": "retry shortly"}}
    )

    failure = walk_call("http://demo", "c", "a", transport=service_answering(3, refused))

    assert failure == f"turn 3 of {len(TURNS)} ({TURNS[2][0]}): HTTP 503 store_unavailable"
    assert "turn refused: HTTP 503" in capsys.readouterr().out


def test_turns_sent_without_an_intent_print_the_classifiers_choice_and_confidence(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unclassified = next(n for n, (intent, _) in enumerate(TURNS, 1) if intent is None)

    walk_call("http://demo", "c", "a", transport=service_answering(unclassified + 1, REFUSED))

    printed = capsys.readouterr().out
    assert "intent=refund_request (classified, confidence 0.91)" in printed


def test_an_agent_fault_mid_stream_is_named_with_the_agent_and_its_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fault = passed_turn("otp_verify") | {
        "agent_role": "auth",
        "status": "error",
        "response_status": "error",
        "response": {"error": {"code": "agent_disconnected", "message": "the agent hung up"}},
    }

    failure = walk_call(
        "http://demo", "c", "a", transport=service_answering(2, streamed(fault, ["Please "]))
    )

    assert failure == (
        f"turn 2 of {len(TURNS)} ({TURNS[1][0]}): the auth agent's fault agent_disconnected"
    )
    assert "agent:  Please \n" in capsys.readouterr().out


def test_a_failure_after_the_agent_answered_is_named_with_its_code() -> None:
    store_down = {"error": {"code": "store_unavailable", "message": "retry shortly"}}

    failure = walk_call(
        "http://demo", "c", "a", transport=service_answering(1, streamed(store_down))
    )

    assert failure == (
        f"turn 1 of {len(TURNS)} (greeting): the turn's error store_unavailable "
        "after the agent answered"
    )


def test_a_stream_cut_before_its_turn_event_is_a_failure() -> None:
    cut = httpx.Response(200, headers=SSE, content=event("chunk", {"text": "All "}))

    failure = walk_call("http://demo", "c", "a", transport=service_answering(1, cut))

    assert failure == f"turn 1 of {len(TURNS)} (greeting): the stream ended before its turn event"


def test_a_service_answering_json_instead_of_a_stream_is_read_as_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unstreamed = httpx.Response(200, json=passed_turn("greeting", "Welcome!"))

    walk_call("http://demo", "c", "a", transport=service_answering(1, unstreamed))

    printed = capsys.readouterr().out
    assert printed.index("agent:  Welcome!\n") < printed.index("[1 GREETING]")


def test_a_service_that_does_not_answer_is_a_failure_not_a_traceback() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    failure = walk_call("http://demo", "c", "a", transport=httpx.MockTransport(unreachable))

    assert failure is not None and failure.startswith(
        f"turn 1 of {len(TURNS)} (greeting): no answer"
    )
