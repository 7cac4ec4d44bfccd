"""Demo A2A agents, one per role, built with the official a2a-sdk: deterministic, no model.

Each answer uses the call context the orchestrator sends in the message metadata. They exist so
that a new user can run a whole call on one machine (`orchestrator-flows demo`). Every agent
answers in task mode and streams its sentence word by word, as a language-model agent would.
"""

from __future__ import annotations

import hashlib
import re
from asyncio import sleep
from collections.abc import Callable

from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Role
from starlette.applications import Starlette

DEMO_OTP = "123456"
WORD_DELAY_SEC = 0.04
"""The pause between two words of an answer: slow enough to watch the words arrive."""
ANSWER_ID = "answer"
"""Each answer is this one artifact of its task: a later answer of the same task (the OTP
agent's next question) replaces the earlier one, so a task's text is its latest answer."""
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


def words_of(text: str) -> list[str]:
    """The text cut after each word's trailing spaces: the pieces joined with "" are the text."""
    return re.findall(r"\s*\S+\s*", text) or [text]


class StreamingAgent(AgentExecutor):
    """A task-mode agent that says each answer as one artifact, one word per artifact update."""

    def __init__(self, word_delay_sec: float):
        self.word_delay_sec = word_delay_sec

    async def start(self, ctx: RequestContext, queue: EventQueue) -> TaskUpdater:
        """The Task (on a task's first turn: a2a-sdk wants it before any status), then working."""
        if ctx.current_task is None:
            await queue.enqueue_event(new_task_from_user_message(ctx.message))
        updater = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await updater.start_work()
        return updater

    async def say(self, updater: TaskUpdater, text: str) -> None:
        words = words_of(text)
        for n, word in enumerate(words):
            if n and self.word_delay_sec > 0:
                await sleep(self.word_delay_sec)
            await updater.add_artifact(
                [new_text_part(word)],
                artifact_id=ANSWER_ID,
                name="answer",
                append=n > 0,  # the first word replaces the task's earlier answer, if any
                last_chunk=n == len(words) - 1,
            )

    async def cancel(self, ctx: RequestContext, queue: EventQueue) -> None:
        await TaskUpdater(queue, ctx.task_id, ctx.context_id).cancel()


class SentenceAgent(StreamingAgent):
    """Greeting, closing, fallback: says the sentence `reply` builds, then completes."""

    def __init__(self, reply: Callable[[str, dict], str], word_delay_sec: float):
        super().__init__(word_delay_sec)
        self.reply = reply

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        text = self.reply(ctx.get_user_input(), context_of(ctx))
        updater = await self.start(ctx, queue)
        await self.say(updater, text)
        await updater.complete()


class OtpAgent(StreamingAgent):
    """Asks for a one-time code (input-required) and accepts the demo code.

    Each question or verdict is the task's answer artifact alone, never also the status
    message, so the caller hears it once whether the answer is streamed or not."""

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        first = ctx.current_task is None
        wrong_codes = 0 if first else _caller_messages(ctx)  # history excludes this message
        words = ctx.get_user_input()
        updater = await self.start(ctx, queue)
        if not first and DEMO_OTP in words:
            account = context_of(ctx).get("account_id", "caller")
            await self.say(updater, f"Thank you, {account} is verified.")
            await updater.complete()
            return
        if wrong_codes >= MAX_OTP_TRIES:
            await self.say(updater, "Too many wrong codes.")
            await updater.failed()
            return
        ask = "Please read me the 6-digit one-time code we just sent to your phone."
        if not first:
            ask = "That code did not match. " + ask
        await self.say(updater, ask)
        await updater.requires_input()


def _caller_messages(ctx: RequestContext) -> int:
    history = ctx.current_task.history if ctx.current_task else []
    return sum(1 for message in history if message.role == Role.ROLE_USER)


class ServiceAgent(StreamingAgent):
    """Refund, billing, ...: restates the request at INTENT_CAPTURE, confirms it at FULFILLMENT."""

    def __init__(self, role: str, word_delay_sec: float):
        super().__init__(word_delay_sec)
        self.role = role

    async def execute(self, ctx: RequestContext, queue: EventQueue) -> None:
        text = self.answer(ctx.get_user_input(), context_of(ctx))
        updater = await self.start(ctx, queue)
        await self.say(updater, text)
        await updater.complete()

    def answer(self, words: str, meta: dict) -> str:
        what, account = SERVICES[self.role], meta.get("account_id", "your account")
        numbers = re.findall(r"\b\d{2,}\b", words)
        about = f" (reference numbers I heard: {', '.join(numbers)})" if numbers else ""
        ref = reference(self.role[:2].upper(), meta.get("call_identify_id", ""), self.role)
        if meta.get("flow_label") == "FULFILLMENT":
            return f"Done: {what} for {account} is processed{about}. Your reference is {ref}."
        return f'I understand you want {what}: "{words}"{about}. Shall I go ahead for {account}?'


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


def executor_for(role: str, word_delay_sec: float = WORD_DELAY_SEC) -> AgentExecutor:
    if role in SERVICES:
        return ServiceAgent(role, word_delay_sec)
    replies = {"greeting": greet, "closing": close, "fallback": ask_to_rephrase}
    if role == "auth":
        return OtpAgent(word_delay_sec)
    if role in replies:
        return SentenceAgent(replies[role], word_delay_sec)
    raise ValueError(f"no demo agent for role {role!r}")


SKILLS = {
    "greeting": "Welcomes the caller by account",
    "auth": f"Verifies the caller with a one-time code (demo code {DEMO_OTP})",
    "closing": "Thanks the caller and offers a survey",
    "fallback": "Asks the caller to rephrase and lists what it can do",
} | {role: f"Takes and fulfils {what}" for role, what in SERVICES.items()}


def agent_app(role: str, url: str, word_delay_sec: float = WORD_DELAY_SEC) -> Starlette:
    """The A2A 1.0 JSON-RPC app of one demo agent, with its agent card; `url` goes in the card.
    `word_delay_sec` is the pause between two streamed words (0: no pause)."""
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
        agent_executor=executor_for(role, word_delay_sec),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/")
    return Starlette(routes=routes)


ROLES = tuple(SKILLS)
