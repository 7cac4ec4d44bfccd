"""The demo's scripted call: five stages through the HTTP API, printed turn by turn."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse

# (intent, words): an intent of None leaves it to the service's classifier, which learnt the
# intents from the examples in flows.toml, in English and Spanish.
TURNS: list[tuple[str | None, str]] = [
    ("greeting", "Hi, I'm calling about an order that arrived broken."),
    ("verify_identity", "Sure, verify me."),
    ("otp_verify", "The code is 123456."),
    (None, "Quiero un reembolso del pedido 10442, el jarrón llegó roto."),
    ("process_refund", "Yes, please go ahead with the refund."),
    (None, "No, that's everything. Thanks, goodbye!"),
]
INDENT = " " * 8  # under the words after "caller: " and "agent:  "


def walk_call(
    base_url: str,
    client_key: str,
    auditor_key: str,
    account_id: str = "ACC-1001",
    transport: httpx.BaseTransport | None = None,
) -> str | None:
    """Drives one whole call with the client's key, printing the agent's words as they stream
    in, then prints the audit trail as the auditor reads it. None if every turn passed, else
    which turn failed and how."""
    call_id = f"DEMO-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"\nCall {call_id} for account {account_id}\n")
    client = {"Authorization": f"Bearer {client_key}"}
    with httpx.Client(base_url=base_url, timeout=30, headers=client, transport=transport) as http:
        for number, (intent, words) in enumerate(TURNS, 1):
            body = {
                "call_identify_id": call_id,
                "account_id": account_id,
                "eci": "ECI-DEMO",
                "input_message": words,
            }
            if intent is not None:
                body["intent"] = intent
            print(f"caller: {words}")
            try:
                failure = _say_turn(http, body)
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: an event's data not JSON
                print()
                failure = f"no answer ({exc})"
            if failure:
                return f"turn {number} of {len(TURNS)} ({intent or 'classified'}): {failure}"
        auditor = {"Authorization": f"Bearer {auditor_key}"}
        return _print_trail(http.get(f"/session/{call_id}/steps", headers=auditor), call_id)


def _say_turn(http: httpx.Client, body: dict[str, Any]) -> str | None:
    """Posts one turn asking for a stream (`Accept: text/event-stream`). A turn refused before
    its agent is called answers plain JSON, as without streaming."""
    with connect_sse(http, "POST", "/orchestrate", json=body) as source:
        answer = source.response
        if not _is_event_stream(answer):
            answer.read()
            if answer.status_code != 200:
                return _print_refusal(answer)
            turn = answer.json()
            print(f"agent:  {_indented(_text_of(turn))}")
            return _print_summary(turn)
        print("agent:  ", end="", flush=True)
        turn, spoken = _print_words(source)
    if turn is None:
        return "the stream ended before its turn event"
    if not spoken:  # a replayed turn streams only its turn event
        print(_indented(_text_of(turn)), end="")
    print()
    return _print_summary(turn)


def _print_words(source: EventSource) -> tuple[dict[str, Any] | None, bool]:
    """Prints each `chunk` as it arrives; returns the `turn` event's data (last) and whether
    any word was printed."""
    spoken = False
    for event in source.iter_sse():
        if event.event == "chunk":
            print(_indented(json.loads(event.data)["text"]), end="", flush=True)
            spoken = True
        elif event.event == "turn":
            return json.loads(event.data), spoken
    return None, spoken


def _print_refusal(answer: httpx.Response) -> str:
    print(f"{INDENT}turn refused: HTTP {answer.status_code} {answer.text}\n")
    code = answer.json().get("error", {}).get("code", "") if _is_json(answer) else ""
    return f"HTTP {answer.status_code} {code}".rstrip()


def _print_summary(turn: dict[str, Any]) -> str | None:
    if "error" in turn:  # the agent answered, then the turn failed (e.g. the store at commit)
        error = turn["error"]
        print(f"{INDENT}turn failed after the agent answered: {error}\n")
        return f"the turn's error {error.get('code', '')} after the agent answered"
    chosen = ""
    if turn["intent_source"] == "classifier":
        chosen = f" (classified, confidence {turn['intent_confidence']:.2f})"
    print(
        f"{INDENT}[{turn['intent_flow_id']} {turn['flow_label']}] intent={turn['intent']}{chosen} "
        f"agent={turn['agent_role']} -> {turn['response_status']}"
    )
    if turn["status"] == "error":
        print(f"{INDENT}FAILED: {turn['response']['error']}\n")
        return f"the {turn['agent_role']} agent's fault {turn['response']['error']['code']}"
    nxt = turn["next_flow_label"] or "call complete"
    print(f"{INDENT}next: {nxt}\n")
    return None


def _text_of(turn: dict[str, Any]) -> str:
    response = turn.get("response")
    return (response.get("text") or "") if isinstance(response, dict) else ""


def _indented(text: str) -> str:
    """The agent's lines under one another: a new artifact or message starts a new line."""
    return text.replace("\n", "\n" + INDENT)


def _is_event_stream(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("text/event-stream")


def _is_json(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("application/json")


def _print_trail(answer: httpx.Response, call_id: str) -> str | None:
    if answer.status_code != 200:
        print(f"audit trail unavailable: HTTP {answer.status_code}")
        return f"reading the audit trail: HTTP {answer.status_code}"
    steps = answer.json()
    print(f"Audit trail of {call_id} (GET /session/{call_id}/steps):")
    print(f"  {'seq':>3}  {'stage':<15} {'intent':<16} {'status':<15} {'ms':>6}  caller, as stored")
    for s in steps:
        print(
            f"  {s['seq']:>3}  {s['flow_label']:<15} {s['intent']:<16} "
            f"{s['response_status']:<15} {s['duration_ms']:>6.1f}  {s['input_message'][:40]}"
        )
    if len(steps) != len(TURNS) or any(s["response_status"] == "error" for s in steps):
        return f"the audit trail, which does not hold the {len(TURNS)} turns as answered"
    return None
