"""No personal data in Redis or the logs: a whole call full of it, through the real service
(started as `uvicorn main:app`, debug logging), real Redis and real a2a-sdk agents that repeat
the caller's words back. Then every key of Redis and every log line is searched for the raw
values. The agents must still hear them, and the client must still get the agent's answer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from httpx_sse import EventSource

from tests.integration.conftest import Agents, AgentServer, LoggedService, RedisView
from tests.support.agents import EchoingStreamer, MessageAgent
from tests.support.service import bearer

CALL_ID = "PRIV-1"
CARD, CARD_2 = "4111 1111 1111 1111", "5555-5555-5555-4444"
EMAIL, SSN, OTP, PASSWORD = "jane.doe@example.com", "123-45-6789", "123456", "Hunter2!x"
PHONE, PHONE_2 = "(415) 555-0100", "+44 20 7946 0958"
# (intent, the caller's words); the greeting, fallback, refund and closing agents echo them.
CALL = [
    ("greeting", f"Hi, I'm Jane, {EMAIL}, my card is {CARD}"),
    ("verify_identity", f"my SSN is {SSN} and my phone is {PHONE}"),
    ("weather_chat", f"is the code {OTP} right?"),  # fallback agent, at AUTHENTICATION
    ("otp_verify", f"the code is {OTP}"),
    ("refund_request", f"refund to card {CARD_2}, cvv 737, my password is {PASSWORD}"),
    ("process_refund", "yes, go ahead"),
    ("closing", f"bye, reach me on {PHONE_2}"),
]
# What must never be found, in any spelling the service could have written it.
RAW = [
    CARD, CARD.replace(" ", ""), CARD_2, CARD_2.replace("-", ""), EMAIL, SSN, SSN.replace("-", ""),
    OTP, PASSWORD, "Hunter2", "cvv 737", PHONE, "555-0100", PHONE_2, "7946 0958",
]  # fmt: skip


def test_a_call_full_of_personal_data_leaves_none_in_redis_or_the_logs(
    logged_service: tuple[LoggedService, Path],
    serve_agent: AgentServer,
    store: RedisView,
    agents: Agents,
) -> None:
    start, log_path = logged_service
    url = start({"refund": serve_agent(MessageAgent("refund"))})  # it echoes the caller
    answers = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for n, (intent, words) in enumerate(CALL):
            body = {
                "call_identify_id": CALL_ID,
                "account_id": "ACC-1",
                "eci": "ECI-1",
                "input_message": words,
                "intent": intent,
            }
            headers = bearer("client") | {"Idempotency-Key": f"turn-{n}"}  # answers kept too
            answers.append(http.post("/orchestrate", json=body, headers=headers))
        trail = http.get(f"/session/{CALL_ID}/steps", headers=bearer("auditor")).json()

    assert [a.status_code for a in answers] == [200] * len(CALL), answers[-1].text
    assert answers[-1].json()["is_complete"] is True
    stored = "\n".join(f"{key}\n" + "\n".join(v) for key, v in store.stored().items())
    logged = log_path.read_text()
    assert CALL_ID in stored and CALL_ID in logged  # the scans did look at the call
    for raw in RAW:
        assert raw not in stored, f"{raw!r} is in Redis"
        assert raw not in logged, f"{raw!r} is in the log"
    # The client hears the agent as it spoke; the agents heard the caller unmasked.
    assert CARD in answers[0].json()["response"]["text"]
    assert agents.executors["auth"].seen.texts[-1] == f"the code is {OTP}"
    # And the trail says what was there, without the values.
    assert trail[0]["input_message"] == "Hi, I'm Jane, [email], my card is [card ****1111]"
    assert trail[3]["input_message"] == "the code is ******"
    assert "******" in trail[2]["response_data"]["text"]  # the code repeated back by an agent


def test_a_streamed_call_full_of_personal_data_leaves_none_in_redis_or_the_logs(
    logged_service: tuple[LoggedService, Path],
    serve_agent: AgentServer,
    store: RedisView,
) -> None:
    start, log_path = logged_service
    # The refund agent streams the caller's words back one word a chunk: numbers split apart.
    url = start({"refund": serve_agent(EchoingStreamer())})
    streams = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for n, (intent, words) in enumerate(CALL):
            body = {
                "call_identify_id": CALL_ID,
                "account_id": "ACC-1",
                "eci": "ECI-1",
                "input_message": words,
                "intent": intent,
            }
            headers = bearer("client") | {"Idempotency-Key": f"turn-{n}"}
            headers["Accept"] = "text/event-stream"
            with http.stream("POST", "/orchestrate", json=body, headers=headers) as response:
                assert response.status_code == 200, response.read()
                streams.append([(e.event, e.data) for e in EventSource(response).iter_sse()])

    turns = [json.loads(data) for events in streams for name, data in events if name == "turn"]
    assert len(turns) == len(CALL)
    assert turns[-1]["is_complete"] is True
    stored = "\n".join(f"{key}\n" + "\n".join(v) for key, v in store.stored().items())
    logged = log_path.read_text()
    assert CALL_ID in stored and CALL_ID in logged  # the scans did look at the call
    for raw in RAW:
        assert raw not in stored, f"{raw!r} is in Redis"
        assert raw not in logged, f"{raw!r} is in the log"
    # The client hears the agent as it spoke, word by word.
    refund = "".join(json.loads(data)["text"] for name, data in streams[4] if name == "chunk")
    assert refund == CALL[4][1]
