"""The demo agents answer deterministically, from the call context the orchestrator sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

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
        transport = httpx.ASGITransport(app=demo_agents.agent_app(role, URL))
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
    assert reply.kind == "message"


async def test_auth_asks_for_a_code_then_accepts_the_demo_code() -> None:
    app = demo_agents.agent_app("auth", URL)
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
    assert "one-time code" in asked.text
    assert wrong.task_state == "input_required"
    assert "did not match" in wrong.text
    assert right.task_state == "completed"
    assert right.task_id == asked.task_id
    assert "ACC-77 is verified" in right.text


async def test_auth_gives_up_after_three_wrong_codes() -> None:
    app = demo_agents.agent_app("auth", URL)
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
        app = demo_agents.agent_app(role, URL)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            card = (await http.get(URL + ".well-known/agent-card.json")).json()
        assert card["skills"][0]["id"] == role
        assert card["supportedInterfaces"][0]["protocolVersion"] == "1.0"
