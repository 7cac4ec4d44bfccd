"""POST /orchestrate, answered by `TurnMiddleware` ahead of FastAPI's routing.

A turn is the one request this service serves in volume, so it skips FastAPI's router, its
exception middleware, a Request object and the dependency machinery (their cost per turn:
bench/RESULTS.md, "Step 3" and "The turn as an ordinary middleware"). The turn is answered
by `TurnEndpoint`, a plain ASGI app, from `TurnMiddleware`: an ordinary middleware, inside the
request-id and request-log middleware and every middleware added after them, ahead of the
router. The endpoint does for a turn what the framework does for a route, with the same
answers: body limit, API key, Idempotency-Key and body validation, errors rendered by
error_answers.error_answer. The route app.py declares for POST /orchestrate is the same
endpoint: OpenAPI documents it, and without the middleware the router would serve it.

A turn sent with `Accept: text/event-stream` is answered as it runs (turn_streams.py): once it
is admitted, Server-Sent Events `status`, `chunk` and last `turn`; a refusal before that is
the same JSON error as ever.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError

from orchestrator_flows.core.errors import BodyTooLarge, Overloaded
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.service.turn_streams import open_stream
from orchestrator_flows.service.turns import TurnAnswer, TurnService
from orchestrator_flows.web.access_log import NO_REQUEST_LINE
from orchestrator_flows.web.auth import SECURITY, KeyRing, Permission, presented_key
from orchestrator_flows.web.error_answers import error_answer
from orchestrator_flows.web.event_stream import send_events

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Body = TypeVar("Body", bound=BaseModel)
Result = TypeVar("Result")

PATH = "/orchestrate"
IDEMPOTENCY_KEY = "Idempotency-Key"
IdempotencyKeyText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
    Field(description="Retry-safe key: the same key and body replay the first answer, no new step"),
]  # printable ASCII without spaces
IdempotencyKey = TypeAdapter(IdempotencyKeyText)
# The request headers a turn reads; the first of each counts, as with Starlette's Headers.get.
_READ = frozenset(
    {b"authorization", b"x-api-key", b"idempotency-key", b"content-length", b"accept"}
)
EVENT_STREAM = b"text/event-stream"  # in Accept: the turn is answered as a stream


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class TurnEndpoint:
    """POST /orchestrate as an ASGI app. Its `request` line is RequestLog's, but for a turn
    that ran (its `turn` line says it all, turns.py) or a client gone before its body."""

    def __init__(
        self,
        app: FastAPI,
        keyring: KeyRing,
        max_body_bytes: int,
        max_in_flight: int = 0,
        on_shed: Callable[[], None] = lambda: None,
        ping_sec: float = 15.0,
    ):
        self._state = app.state  # `turns` is set there by the lifespan
        self._ping_sec = ping_sec
        self._keyring = keyring
        self._max_body = max_body_bytes
        self._max_in_flight = max_in_flight or sys.maxsize
        self._on_shed = on_shed
        self.in_flight = 0  # turns this worker holds now, from arrival to answer
        self._shed_answer = error_answer(self._overloaded(), "POST", PATH)  # made once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.in_flight >= self._max_in_flight:
            # First, before the key, the body, Redis or an agent: a worker past its limit
            # answers in microseconds instead of queueing the turn into its deadline.
            self._on_shed()
            await self._shed_answer(scope, receive, send)
            return
        headers = {name: value for name, value in reversed(scope["headers"]) if name in _READ}
        self.in_flight += 1
        if EVENT_STREAM in headers.get(b"accept", b""):
            await self._streamed_turn(headers, scope, receive, send)
            return
        try:
            answer = await self._turn(headers, receive)
        except ClientGone:
            scope[NO_REQUEST_LINE] = True
            return
        except Exception as exc:
            await error_answer(exc, "POST", scope["path"])(scope, receive, send)
            return
        finally:
            self.in_flight -= 1
        if not answer.replayed:
            scope[NO_REQUEST_LINE] = True
        await _send_answer(send, answer)

    def hold(self) -> None:
        """Counts a turn that came another way (a call's socket) in flight, as one of ours,
        until `release`; Overloaded, counted as shed, when the worker holds its limit."""
        if self.in_flight >= self._max_in_flight:
            self._on_shed()
            raise self._overloaded()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"this worker holds its limit of {self._max_in_flight} turns; nothing was recorded;"
            " retry shortly",
            headers={"Retry-After": "1"},
            max_turns_in_flight=self._max_in_flight,
        )

    async def _turn(self, headers: dict[bytes, bytes], receive: Receive) -> TurnAnswer:
        turn, idempotency_key, key_id = await self._checked(headers, receive)
        turns: TurnService = self._state.turns
        return await turns.run_turn(turn, idempotency_key, key_id)

    async def _checked(
        self, headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[OrchestrateRequest, str, str | None]:
        """The turn, its Idempotency-Key and its API key's id, once the request passed the
        checks the framework would make, in its order: body size, key (so a caller without one
        hears 401 whatever it sent, and makes us read nothing), header, body."""
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._max_body:
            raise _too_large(self._max_body)
        presented = presented_key(_text(headers, b"authorization"), _text(headers, b"x-api-key"))
        caller = self._keyring.authorize(presented, Permission.ORCHESTRATE)
        idempotency_key = _idempotency_key(_text(headers, b"idempotency-key"))
        turn = _parse(OrchestrateRequest, await _read_body(receive, self._max_body))
        return turn, idempotency_key, caller.key_id

    async def _streamed_turn(
        self, headers: dict[bytes, bytes], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answers the turn as a stream. The turn is in flight until it ends, not until its
        answer does: a client may leave a turn that goes on."""
        try:
            turn, idempotency_key, key_id = await self._checked(headers, receive)
            stream = await open_stream(self._state.turns, turn, idempotency_key, key_id)
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, ClientGone):
                scope[NO_REQUEST_LINE] = True
            elif isinstance(exc, Exception):
                await error_answer(exc, "POST", scope["path"])(scope, receive, send)
            else:
                raise
            return
        stream.when_over(self.release)
        metrics: Metrics = self._state.metrics
        metrics.streamed_turns_by("sse").inc()
        if not stream.replayed:
            scope[NO_REQUEST_LINE] = True
        whole = False
        try:
            whole = await send_events(
                stream, receive, send, ping_sec=self._ping_sec, replayed=stream.replayed
            )
        finally:
            if not whole:
                metrics.stream_clients_gone_by("sse").inc()


class TurnMiddleware:
    """Hands POST /orchestrate to the turn endpoint and every other request to `app`."""

    def __init__(self, app: ASGIApp, endpoint: TurnEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in (PATH, scope.get("root_path", "") + PATH)
        ):
            await self.endpoint(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Served(Response):
    """A route's answer that is an ASGI app's: FastAPI sends a Response by calling it with the
    request's scope, receive and send, and this one lets the app answer instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _send_answer(send: Send, answer: TurnAnswer) -> None:
    body = answer.body
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if answer.replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, at most `limit` bytes however it is sent (declared or chunked)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body is over {limit} bytes", limit=limit)


def _text(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _idempotency_key(raw: str | None) -> str:
    """The Idempotency-Key header ("" without one), validated like a declared header."""
    if raw is None:
        return ""
    return validated(IdempotencyKey.validate_python, raw, "header", IDEMPOTENCY_KEY)


def _parse(model: type[Body], raw: bytes) -> Body:
    return validated(model.model_validate_json, raw, "body")


def validated(validate: Callable[[Any], Result], value: Any, *where: str) -> Result:
    """`validate(value)`; its errors as FastAPI's, located under `where` ("body"; "header",
    name), so that clients see one shape for every 422."""
    try:
        return validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": (*where, *e["loc"])} for e in errors]) from None


def openapi_extra() -> dict[str, Any]:
    """OpenAPI for what the endpoint checks itself (FastAPI documents only its parameters)."""
    body = {"schema": OrchestrateRequest.model_json_schema()}
    schema = IdempotencyKey.json_schema()
    header = {"name": IDEMPOTENCY_KEY, "in": "header", "required": False, "schema": schema}
    return {
        "requestBody": {"required": True, "content": {"application/json": body}},
        "parameters": [header | {"description": schema["description"]}],
        "security": SECURITY,
    }
