"""Demo A2A agents, one per role, built with the official a2a-sdk: deterministic, no model.

Each answer uses the call context the orchestrator sends in the message metadata. They exist so
that a new user can run a whole call on one machine (`orchestrator-flows demo`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from a2a.helpers import new_task_from_user_message, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Role
from starlette.applications import Starlette

DEMO_OTP = "123456"
MAX_OTP_TRIES = 3
SERVICES = {
    "refund": "a refund",
    "billing": "a billing question",
    "booking": "a booking",
    "complaint": "a complaint",
    "account": "an account change",
    "balance": "a balance enquiry",
}


def context_of(ctx: RequestContext) -> dict:
    return dict(ctx.message.metadata) if ctx.message else {}


def reference(prefix: str, *parts: str) -> str:
    """A stable reference number, so the same request always gets the same answer."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:6].upper()
    return f"{prefix}-{digest}"


class MessageAgent(AgentExecutor):
    """Answers each request with one plain Message built by `reply`."""

    def __init__(self, reply: Callable[[str, dict], str]):
        self.reply = reply

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        text = self.reply(ctx.get_user_input(), context_of(ctx))
        await queue.enqueue_event(new_text_message(text, context_id=ctx.context_id))

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        return None


class OtpAgent(AgentExecutor):
    """Asks for a one-time code (input-required) and accepts the demo code."""

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        first = ctx.current_task is None
        if first:
            await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        words = ctx.get_user_input()
        if not first and DEMO_OTP in words:
            account = context_of(ctx).get("account_id", "caller")
            await up.add_artifact([new_text_part(f"Thank you, {account} is verified.")])
            await up.complete()
            return
        wrong_codes = 0 if first else _caller_messages(ctx)  # history excludes this message
        if wrong_codes >= MAX_OTP_TRIES:
            await up.failed(up.new_agent_message([new_text_part("Too many wrong codes.")]))
            return
        ask = "Please read me the 6-digit one-time code we just sent to your phone."
        if not first:
            ask = "That code did not match. " + ask
        await up.requires_input(up.new_agent_message([new_text_part(ask)]))

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        await TaskUpdater(queue, ctx.task_id, ctx.context_id).cancel()


def _caller_messages(ctx: RequestContext) -> int:
    history = ctx.current_task.history if ctx.current_task else []
    return sum(1 for message in history if message.role == Role.ROLE_USER)


class ServiceAgent(AgentExecutor):
    """Refund, billing, ...: restates the request at INTENT_CAPTURE, confirms it at FULFILLMENT."""

    def __init__(self, role: str):
        self.role = role

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        meta, words = context_of(ctx), ctx.get_user_input()
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.add_artifact([new_text_part(self.answer(words, meta))], name="answer")
        await up.complete()

    def answer(self, words: str, meta: dict) -> str:
        what, account = SERVICES[self.role], meta.get("account_id", "your account")
        numbers = re.findall(r"\b\d{2,}\b", words)
        about = f" (reference numbers I heard: {', '.join(numbers)})" if numbers else ""
        ref = reference(self.role[:2].upper(), meta.get("call_identify_id", ""), self.role)
        if meta.get("flow_label") == "FULFILLMENT":
            return f"Done: {what} for {account} is processed{about}. Your reference is {ref}."
        return f'I understand you want {what}: "{words}"{about}. Shall I go ahead for {account}?'

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        await TaskUpdater(queue, ctx.task_id, ctx.context_id).cancel()


def greet(words: str, meta: dict) -> str:
    account = meta.get("account_id", "there")
    return f"Welcome to Orchestrator Flows, customer {account}! Before we start, let me verify you."


def close(words: str, meta: dict) -> str:
    account = meta.get("account_id", "")
    return (
        f"Thank you for calling, {account}. Would you take a one-minute survey about today's "
        "call? Goodbye!"
    )


def ask_to_rephrase(words: str, meta: dict) -> str:
    stage = meta.get("flow_label", "this point")
    offers = ", ".join(SERVICES.values())
    return (
        f'Sorry, I did not understand "{words}" at {stage}. Could you rephrase? '
        f"I can help with {offers}."
    )


def executor_for(role: str) -> AgentExecutor:
    if role in SERVICES:
        return ServiceAgent(role)
    replies = {"greeting": greet, "closing": close, "fallback": ask_to_rephrase}
    if role == "auth":
        return OtpAgent()
    if role in replies:
        return MessageAgent(replies[role])
    raise ValueError(f"no demo agent for role {role!r}")


SKILLS = {
    "greeting": "Welcomes the caller by account",
    "auth": f"Verifies the caller with a one-time code (demo code {DEMO_OTP})",
    "closing": "Thanks the caller and offers a survey",
    "fallback": "Asks the caller to rephrase and lists what it can do",
} | {role: f"Takes and fulfils {what}" for role, what in SERVICES.items()}


def agent_app(role: str, url: str) -> Starlette:
    """The A2A 1.0 JSON-RPC app of one demo agent, with its agent card; `url` goes in the card."""
    card = AgentCard(
        name=f"demo-{role}",
        description=SKILLS[role],
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=role, name=role, description=SKILLS[role], tags=["demo", role])],
    )
    handler = DefaultRequestHandler(
        agent_executor=executor_for(role), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    return Starlette(routes=routes)


ROLES = tuple(SKILLS)
