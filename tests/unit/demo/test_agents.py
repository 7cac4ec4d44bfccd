"""The demo agents answer deterministically, from the call context the orchestrator sends,
and stream each answer word by word."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from orchestrator_flows.core.errors import AgentTaskFailed
from orchestrator_flows.core.models import PendingTask
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.demo import agents as demo_agents
from orchestrator_flows.infra.a2a_client import A2AClient

URL = "http://demo.test/"


def context(stage: str = "INTENT_CAPTURE", intent: str = "refund_request") -> dict:
    return {
        "call_identify_id": "CALL-9",
        "account_id": "ACC-77",
        "eci": "ECI-1",
        "flow_id": 3,
        "flow_label": stage,
        "intent": intent,
    }


@pytest.fixture
async def ask() -> AsyncIterator:
    transports: list[httpx.AsyncBaseTransport] = []

    async def ask(
        role: str, words: str, meta: dict | None = None, continues: PendingTask | None = None
    ) -> AgentReply:
        transport = httpx.ASGITransport(app=demo_agents.agent_app(role, URL, word_delay_sec=0))
        transports.append(transport)
        client = A2AClient(transport, timeout=5, max_response_bytes=1 << 20)
        return await client.send_message(
            URL, words, meta or context(), message_id=f"m-{len(transports)}", continues=continues
        )

    yield ask
    for transport in transports:
        await transport.aclose()


async def test_greeting_welcomes_the_caller_by_account(ask) -> None:
    reply = await ask("greeting", "hello", context("GREETING", "greeting"))

    assert "ACC-77" in reply.text
    assert reply.task_state == "completed"


async def test_auth_asks_for_a_code_then_accepts_the_demo_code() -> None:
    app = demo_agents.agent_app("auth", URL, word_delay_sec=0)
    async with httpx.ASGITransport(app=app) as transport:
        client = A2AClient(transport, timeout=5, max_response_bytes=1 << 20)
        meta = context("AUTHENTICATION", "verify_identity")
        asked = await client.send_message(URL, "verify me", meta, message_id="m1")
        pending = PendingTask(task_id=asked.task_id, context_id=asked.context_id)
        wrong = await client.send_message(URL, "999999", meta, message_id="m2", continues=pending)
        right = await client.send_message(
            URL, f"it is {demo_agents.DEMO_OTP}", meta, message_id="m3", continues=pending
        )

    assert asked.task_state == "input_required"
    assert asked.text.count("one-time code") == 1  # the question is read once, not twice
    assert wrong.task_state == "input_required"
    assert "did not match" in wrong.text
    assert right.task_state == "completed"
    assert right.task_id == asked.task_id
    assert "ACC-77 is verified" in right.text


async def test_auth_gives_up_after_three_wrong_codes() -> None:
    app = demo_agents.agent_app("auth", URL, word_delay_sec=0)
    async with httpx.ASGITransport(app=app) as transport:
        client = A2AClient(transport, timeout=5, max_response_bytes=1 << 20)
        meta = context("AUTHENTICATION", "verify_identity")
        asked = await client.send_message(URL, "verify me", meta, message_id="m0")
        pending = PendingTask(task_id=asked.task_id, context_id=asked.context_id)
        for n in range(demo_agents.MAX_OTP_TRIES - 1):
            again = await client.send_message(URL, "000", meta, message_id=f"m{n + 1}",
                                              continues=pending)  # fmt: skip
            assert again.task_state == "input_required"
        with pytest.raises(AgentTaskFailed, match="Too many wrong codes"):
            await client.send_message(URL, "000", meta, message_id="mx", continues=pending)


@pytest.mark.parametrize("role", sorted(demo_agents.SERVICES))
async def test_service_agent_restates_the_request_naming_what_it_understood(ask, role) -> None:
    reply = await ask(role, "about order 10442 please")

    assert reply.task_state == "completed"
    assert demo_agents.SERVICES[role] in reply.text
    assert "10442" in reply.text
    assert "ACC-77" in reply.text


async def test_service_agent_confirms_at_fulfilment_with_a_stable_reference(ask) -> None:
    meta = context("FULFILLMENT", "process_refund")
    first = await ask("refund", "yes go ahead", meta)
    again = await ask("refund", "yes go ahead", meta)

    assert first.text.startswith("Done: a refund for ACC-77 is processed")
    assert "RE-" in first.text
    assert first.text == again.text


async def test_closing_thanks_and_offers_a_survey(ask) -> None:
    reply = await ask("closing", "bye", context("CLOSING", "closing"))

    assert "Thank you" in reply.text
    assert "survey" in reply.text


async def test_fallback_asks_to_rephrase_and_lists_what_it_can_do(ask) -> None:
    reply = await ask("fallback", "blorp", context("INTENT_CAPTURE", "blorp"))

    assert "rephrase" in reply.text
    assert all(what in reply.text for what in demo_agents.SERVICES.values())


async def test_every_demo_agent_serves_a_card_with_its_skill() -> None:
    for role in demo_agents.ROLES:
        app = demo_agents.agent_app(role, URL, word_delay_sec=0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            card = (await http.get(URL + ".well-known/agent-card.json")).json()
        assert card["skills"][0]["id"] == role
        assert card["supportedInterfaces"][0]["protocolVersion"] == "1.0"


async def stream(
    app: Any, words: str, meta: dict, message_id: str, continues: PendingTask | None = None
) -> list[dict]:
    """The `result`s of one A2A 1.0 SendStreamingMessage call, as the agent sent them."""
    message: dict[str, Any] = {
        "messageId": message_id,
        "role": "ROLE_USER",
        "parts": [{"text": words}],
        "metadata": meta,
    }
    if continues is not None:
        message |= {"taskId": continues["task_id"], "contextId": continues["context_id"]}
    body = {"jsonrpc": "2.0", "id": message_id, "method": "SendStreamingMessage",
            "params": {"message": message, "configuration": {}}}  # fmt: skip
    headers = {"A2A-Version": "1.0"}
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    async with http, aconnect_sse(http, "POST", URL, json=body, headers=headers) as sse:
        return [event.json()["result"] async for event in sse.aiter_sse()]


def artifact_updates(results: list[dict]) -> list[dict]:
    return [r["artifactUpdate"] for r in results if "artifactUpdate" in r]


def states(results: list[dict]) -> list[str]:
    return [r["statusUpdate"]["status"]["state"] for r in results if "statusUpdate" in r]


def spoken(results: list[dict]) -> str:
    return "".join(u["artifact"]["parts"][0]["text"] for u in artifact_updates(results))


CONTEXTS = {
    "greeting": context("GREETING", "greeting"),
    "auth": context("AUTHENTICATION", "verify_identity"),
    "closing": context("CLOSING", "closing"),
    "fallback": context("INTENT_CAPTURE", "blorp"),
} | {role: context() for role in demo_agents.SERVICES}


@pytest.mark.parametrize("role", demo_agents.ROLES)
async def test_every_agent_streams_its_answer_word_by_word_as_the_sentence_it_sends_unstreamed(
    ask, role
) -> None:
    app = demo_agents.agent_app(role, URL, word_delay_sec=0)
    results = await stream(app, "refund order 10442 please", CONTEXTS[role], "s1")
    updates = artifact_updates(results)
    unstreamed = await ask(role, "refund order 10442 please", CONTEXTS[role])

    words = [u["artifact"]["parts"][0]["text"] for u in updates]
    assert len(words) == len(unstreamed.text.split()) > 1  # one update per word, in order
    assert "".join(words) == unstreamed.text
    assert all(len(word.split()) == 1 for word in words)
    assert len({u["artifact"]["artifactId"] for u in updates}) == 1
    assert [u.get("append", False) for u in updates] == [False] + [True] * (len(words) - 1)
    assert [u.get("lastChunk", False) for u in updates] == [False] * (len(words) - 1) + [True]
    ends = "TASK_STATE_INPUT_REQUIRED" if role == "auth" else "TASK_STATE_COMPLETED"
    assert states(results) == ["TASK_STATE_WORKING", ends]
    assert "message" not in results[-1]["statusUpdate"]["status"]  # the words are said once


async def test_otp_agents_next_question_streams_alone_and_replaces_the_first() -> None:
    app = demo_agents.agent_app("auth", URL, word_delay_sec=0)
    meta = CONTEXTS["auth"]
    first = await stream(app, "verify me", meta, "s1")
    task = first[0]["task"]
    pending = PendingTask(task_id=task["id"], context_id=task["contextId"])
    wrong = await stream(app, "999999", meta, "s2", continues=pending)
    async with httpx.ASGITransport(app=app) as transport:
        client = A2AClient(transport, timeout=5, max_response_bytes=1 << 20)
        right = await client.send_message(
            URL, f"it is {demo_agents.DEMO_OTP}", meta, message_id="s3", continues=pending
        )

    assert spoken(wrong).startswith("That code did not match. Please read me")
    assert states(wrong) == ["TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED"]
    assert right.text == "Thank you, ACC-77 is verified."  # the questions before are replaced


async def test_agent_pauses_between_words_not_before_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(demo_agents, "sleep", pause)
    app = demo_agents.agent_app("closing", URL, word_delay_sec=0.25)
    results = await stream(app, "bye", CONTEXTS["closing"], "s1")

    assert pauses == [0.25] * (len(artifact_updates(results)) - 1)
