"""The demo's scripted call: five stages through the HTTP API, printed turn by turn."""

from __future__ import annotations

import time

import httpx

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


def walk_call(
    base_url: str,
    client_key: str,
    auditor_key: str,
    account_id: str = "ACC-1001",
    transport: httpx.BaseTransport | None = None,
) -> str | None:
    """Drives one whole call with the client's key, then prints the audit trail as the auditor
    reads it. None if every turn passed, else which turn failed and how."""
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
            try:
                failure = _print_turn(http.post("/orchestrate", json=body), words)
            except httpx.HTTPError as exc:
                failure = f"no answer ({exc})"
            if failure:
                return f"turn {number} of {len(TURNS)} ({intent or 'classified'}): {failure}"
        auditor = {"Authorization": f"Bearer {auditor_key}"}
        return _print_trail(http.get(f"/session/{call_id}/steps", headers=auditor), call_id)


def _print_turn(answer: httpx.Response, words: str) -> str | None:
    if answer.status_code != 200:
        print(f"  turn refused: HTTP {answer.status_code} {answer.text}")
        code = answer.json().get("error", {}).get("code", "") if _is_json(answer) else ""
        return f"HTTP {answer.status_code} {code}".rstrip()
    turn = answer.json()
    chosen = ""
    if turn["intent_source"] == "classifier":
        chosen = f" (classified, confidence {turn['intent_confidence']:.2f})"
    print(
        f"[{turn['intent_flow_id']} {turn['flow_label']}] intent={turn['intent']}{chosen} "
        f"agent={turn['agent_role']} -> {turn['response_status']}"
    )
    print(f"  caller: {words}")
    if turn["status"] == "error":
        print(f"  FAILED: {turn['response']['error']}")
        return f"the {turn['agent_role']} agent's fault {turn['response']['error']['code']}"
    print(f"  agent:  {turn['response']['text']}")
    nxt = turn["next_flow_label"] or "call complete"
    print(f"  next:   {nxt}\n")
    return None


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
