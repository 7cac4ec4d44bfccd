"""POST /orchestrate served straight from ASGI, ahead of FastAPI's middleware and routing.

A turn is the one request this service serves in volume, and through FastAPI's stack (seven
middleware layers, the router, a Request object, the request-id middleware) it cost more CPU
than any other part of the turn bar its Redis and agent I/O (bench/RESULTS.md). So `FlowsApp`
hands it to `TurnEndpoint` first, and every other request goes through FastAPI as usual. The
endpoint does for a turn what the stack did, in the same order and with the same answers:
request id, body limit, API key, Idempotency-Key and body validation, errors rendered by
http_errors.error_answer, the `request` log line (access_log.py) for a turn that did not run.
OpenAPI documents the operation from the route main.py declares.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from asgi_correlation_id import correlation_id
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError

from orchestrator_flows.core.errors import BodyTooLarge
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.service.turns import TurnAnswer, TurnService
from orchestrator_flows.web.access_log import log_request
from orchestrator_flows.web.auth import SECURITY, KeyRing, Permission, presented_key
from orchestrator_flows.web.error_answers import error_answer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Body = TypeVar("Body", bound=BaseModel)
Result = TypeVar("Result")

MAX_BODY_BYTES = 64 * 1024
PATH = "/orchestrate"
REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_KEY = "Idempotency-Key"
IdempotencyKey = TypeAdapter(
    Annotated[
        str,
        StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
        Field(
            description="Retry-safe key: the same key and body replay the first answer, no new step"
        ),
    ]
)  # printable ASCII without spaces
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The request headers a turn reads; the first of each counts, as with Starlette's Headers.get.
_READ = frozenset(
    {b"authorization", b"x-api-key", b"idempotency-key", b"x-request-id", b"content-length"}
)


def valid_request_id(value: str) -> bool:
    """Accept a caller's request id only if it is short and plain (it goes into logs)."""
    return _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """32 random hex digits, like a uuid4's hex without building a UUID object."""
    return secrets.token_hex(16)


class FlowsApp(FastAPI):
    """FastAPI, with POST /orchestrate answered by `turn_endpoint` before any middleware."""

    turn_endpoint: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.turn_endpoint is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in (PATH, scope.get("root_path", "") + PATH)
        ):
            await self.turn_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class TurnEndpoint:
    def __init__(self, app: FastAPI, keyring: KeyRing, max_body_bytes: int = MAX_BODY_BYTES):
        self._state = app.state  # `turns` is set there by the lifespan
        self._keyring = keyring
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = {name: value for name, value in reversed(scope["headers"]) if name in _READ}
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if given and valid_request_id(given) else new_request_id()
        token = correlation_id.set(request_id)
        try:
            answer = await self._turn(headers, receive)
        except ClientGone:
            return
        except Exception as exc:
            response = error_answer(exc, "POST", scope["path"])
            response.raw_headers.append((b"x-request-id", request_id.encode()))
            await response(scope, receive, send)
            log_request("POST", PATH, response.status_code, started, request_id)
            return
        finally:
            correlation_id.reset(token)
        await _send_answer(send, answer, request_id)
        if answer.replayed:  # a turn that ran has written its own line (turns.py)
            log_request("POST", PATH, answer.status_code, started, request_id)

    async def _turn(self, headers: dict[bytes, bytes], receive: Receive) -> TurnAnswer:
        # In the order the framework checked them: body size, key (so a caller without one
        # hears 401 whatever it sent, and makes us read nothing), header, body.
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._max_body:
            raise _too_large(self._max_body)
        presented = presented_key(_text(headers, b"authorization"), _text(headers, b"x-api-key"))
        caller = self._keyring.authorize(presented, Permission.ORCHESTRATE)
        idempotency_key = _idempotency_key(_text(headers, b"idempotency-key"))
        turn = _parse(OrchestrateRequest, await _read_body(receive, self._max_body))
        turns: TurnService = self._state.turns
        return await turns.run_turn(turn, idempotency_key, caller.key_id)


async def _send_answer(send: Send, answer: TurnAnswer, request_id: str) -> None:
    body = answer.body
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
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
    return "" if raw is None else _validated(IdempotencyKey.validate_python, raw, "header")


def _parse(model: type[Body], raw: bytes) -> Body:
    return _validated(model.model_validate_json, raw, "body")


def _validated(validate: Callable[[Any], Result], value: Any, where: str) -> Result:
    try:
        return validate(value)
    except ValidationError as exc:
        # Located like FastAPI's own errors, so clients see one shape for every 422.
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        loc_of = (where, IDEMPOTENCY_KEY) if where == "header" else (where,)
        raise RequestValidationError([{**e, "loc": (*loc_of, *e["loc"])} for e in errors]) from None


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
