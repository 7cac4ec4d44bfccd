"""One log line per HTTP request (`request`): method, path, status, duration and request id.

It replaces uvicorn's access log, which writes each request's query string as it came (a card
number in `?pan=` would land in the log). The path is logged without its query string, and as
sent only when it named a route with valid parameters: otherwise its digits are hidden, since
a path no route accepts is whatever the client typed. A turn that ran has its own `turn` line
(turns.py) and no `request` line; a turn refused or replayed has a `request` line.
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from asgi_correlation_id import correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("orchestrator.http")
_DIGIT = re.compile(r"\d")
# Set in a request's scope by an endpoint that leaves no `request` line to write: the turn's
# own line says it all, or the client left before it could be answered.
NO_REQUEST_LINE = "orchestrator.no_request_line"


def log_request(
    method: str, path: str, status: int, started: float, request_id: str | None
) -> None:
    log.info(
        "request",
        method=method,
        path=path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        request_id=request_id,
    )


def logged_path(scope: Scope, status: int) -> str:
    """The path as sent when a route took it and its parameters were valid; else without its
    digits."""
    if scope.get("route") is not None and status != 422:
        return scope["path"]
    return _DIGIT.sub("#", scope["path"])


class RequestLog:
    """ASGI middleware writing each request's line once it is answered (500 if the app
    raised), unless the endpoint marked it NO_REQUEST_LINE. Inside the request-id middleware,
    so that the line carries the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered: dict[str, Any] = {"status": 500}

        async def noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            if NO_REQUEST_LINE not in scope:
                status = answered["status"]
                path = logged_path(scope, status)
                log_request(scope["method"], path, status, started, correlation_id.get())
