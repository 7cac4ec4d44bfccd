"""Masking against how people really say numbers: each phrasing of masking_corpus.json is said
at INTENT_CAPTURE in a call of its own, through the real service (`uvicorn main:app`, debug
log), a real redis-server and real a2a-sdk agents; the refund agent repeats what it heard in its
own way (the words quoted, every number in pairs with commas and spelled out, and again in its
data, upper-cased, in threes). Then every Redis key of the call and the service's log are
searched for the secret in any of its forms:
- a number: the digits of every number in every stored text (Unicode and spelled-out digits
  read as digits, separators dropped) must not hold it, nor may any stored value or log line
  hold its bare digits;
- a password or an e-mail address: no stored text or log line may hold it (NFKC, any case).
A phrasing to keep must be stored exactly as said, and the agent's quote of it too.

A second test replays the demo's refund, where the demo agent repeated a card as
"4111, 1111, 1111, 1111" and that was stored in clear.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator_flows.demo import agents as demo_agents
from tests.integration.conftest import AgentServer, LoggedService, RedisView
from tests.support.agents import RepeatingAgent, numbers_heard, serve_in_thread
from tests.support.service import bearer

CORPUS = json.loads((Path(__file__).parent / "masking_corpus.json").read_text())
# Before each phrasing: a greeting and the one-time code, so that it is said at INTENT_CAPTURE.
OPENING = [("greeting", "hello"), ("verify_identity", "it's me"), ("otp_verify", "123456")]
# Stored fields that hold the protocol's or the service's own values, never anyone's words.
NOT_WORDS = {
    "timestamp", "created_at", "updated_at", "started_at", "completed_at", "a2a_message_id",
    "a2a_task_id", "a2a_context_id", "task_id", "context_id", "a2a_agent_url", "fingerprint",
    "api_key_id", "idempotency_key", "call_identify_id", "account_id", "eci",
}  # fmt: skip
BARE_DIGITS = 6  # shorter digit strings turn up in time stamps and hashes by chance

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]


def fold(text: str) -> str:
    kept = (c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")
    return "".join(kept).casefold()


def texts_in(value: Any, field: str = "") -> Iterator[str]:
    """Every string a stored value holds, JSON within JSON included, but the protocol's ids,
    time stamps and hashes (NOT_WORDS)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):
            yield from texts_in(parsed, field)
        elif field not in NOT_WORDS:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from texts_in(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from texts_in(item, field)


def found(secret: str, texts: list[str], raw: str) -> list[str]:
    """Where the secret is, in any of its forms: the texts holding it, and the raw value."""
    if secret.isdigit():
        where = [t for t in texts if any(secret in number for number in numbers_heard(t))]
        return where + ([raw] if len(secret) >= BARE_DIGITS and secret in raw else [])
    wanted = fold(secret)
    return [t for t in texts if wanted in fold(t)] + ([raw] if wanted in fold(raw) else [])


def say(http: httpx.Client, call_id: str, intent: str, words: str, key: str) -> httpx.Response:
    body = {
        "call_identify_id": call_id,
        "account_id": "ACC-1",
        "eci": "ECI-1",
        "input_message": words,
        "intent": intent,
    }
    headers = bearer("client") | {"Idempotency-Key": key}  # so that the replay is stored too
    answer = http.post("/orchestrate", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


@pytest.fixture
def repeating_service(
    logged_service: tuple[LoggedService, Path], serve_agent: AgentServer
) -> tuple[str, Path]:
    start, log_path = logged_service
    return start({"refund": serve_agent(RepeatingAgent())}), log_path


def test_every_phrasing_of_the_corpus_is_masked_or_kept_as_it_should_be(
    repeating_service: tuple[str, Path], store: RedisView
) -> None:
    url, log_path = repeating_service
    leaks, wrongly_masked, secrets = [], [], []
    with httpx.Client(base_url=url, timeout=30) as http:
        for number, entry in enumerate(CORPUS):
            call_id = f"CORPUS-{number}"
            for turn, (intent, words) in enumerate(OPENING):
                say(http, call_id, intent, words, f"t{turn}")
            answer = say(http, call_id, "refund_request", entry["said"], "said")
            stored = store.stored(f"*{{{call_id}}}*")
            # The size counter is the service's own number, never anyone's words.
            stored = {key: values for key, values in stored.items() if not key.endswith(":bytes")}
            raw = "\n".join(v for values in stored.values() for v in values)
            texts = [t for values in stored.values() for v in values for t in texts_in(v)]
            for secret in entry.get("mask", []):
                secrets.append((secret, entry["said"]))
                leaks += [(entry["said"], secret, where) for where in found(secret, texts, raw)]
            step = store.steps(call_id)[-1]
            if "mask" not in entry and step["input_message"] != entry["said"]:
                wrongly_masked.append((entry["said"], step["input_message"]))
            for kept in entry.get("keep", []):
                quoted = step["response_data"]["text"]
                if kept not in step["input_message"] or kept not in quoted:
                    wrongly_masked.append((entry["said"], kept, step["input_message"], quoted))
            # The client hears the agent as it spoke.
            assert answer.json()["response"]["text"].startswith(f'You said: "{entry["said"]}"')
    logged = log_path.read_text()
    assert "CORPUS-0" in logged  # the log was read
    leaks += [(said, secret, "log") for secret, said in secrets if found(secret, [], logged)]
    must_mask = sum("mask" in entry for entry in CORPUS)
    print(
        f"\nmasking corpus: {len(CORPUS)} phrasings, {must_mask} must-mask, "
        f"{len(CORPUS) - must_mask} must-keep; {len(leaks)} leaks, "
        f"{len(wrongly_masked)} wrongly masked keeps"
    )
    assert len(CORPUS) >= 80
    assert leaks == []
    assert wrongly_masked == []


def test_the_demo_refund_agent_repeating_a_card_leaves_no_card_in_redis(
    logged_service: tuple[LoggedService, Path], store: RedisView
) -> None:
    start, log_path = logged_service
    demo_url, stop = serve_in_thread(lambda url: demo_agents.agent_app("refund", url))
    try:
        url = start({"refund": demo_url})
        with httpx.Client(base_url=url, timeout=30) as http:
            for turn, (intent, words) in enumerate(OPENING):
                say(http, "DEMO-1", intent, words, f"t{turn}")
            said = "refund order 4417 to my card 4111 1111 1111 1111"
            answer = say(http, "DEMO-1", "refund_request", said, "said")
    finally:
        stop()

    heard = answer.json()["response"]["text"]
    assert "4111, 1111, 1111, 1111" in heard  # the agent did repeat it, regrouped
    values = [v for values in store.stored().values() for v in values]
    texts = [t for v in values for t in texts_in(v)]
    assert found("4111111111111111", texts, "\n".join(values)) == []
    assert found("4111111111111111", [], log_path.read_text()) == []
    assert "refund order 4417 to my card [card ****1111]" in texts  # the order stays readable
