"""ASGI middleware: request bodies over a size limit get 413 before any handler runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Reject = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Buffers the body (at most `max_bytes`) so a chunked upload cannot slip past the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, reject: Reject):
        self.app = app
        self.max_bytes = max_bytes
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.reject(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self.reject(scope, receive, send)
        await self.app(scope, _replay(bytes(body), receive), send)
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body, pass disconnects through
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
