"""The one place where errors become HTTP answers: `{"error": {"code", "message", ...details}}`.

The console renders the same answer as a page (web/console/error_pages.py, from `error_of`).

FastAPI's exception handlers and the /orchestrate endpoint (turn_endpoint.py) both answer through
`error_answer`, so every error has one shape whichever way the request came in; the HTTP
server's own refusals (http_limits.py), written before any app runs, through `error_bytes`.
"""

from __future__ import annotations

import http
import logging
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator_flows.core.errors import InvalidRequest, OrchestratorError, StoreUnavailable

log = logging.getLogger("orchestrator")
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **details), status_code=status, headers=headers)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]  # {"error": {"code", "message", ...details}}
    headers: dict[str, str] | None = None


def error_of(exc: Exception, method: str, path: str) -> Answer:
    """What a request that failed with `exc` is answered, whatever the answer's media type."""
    if isinstance(exc, OrchestratorError):
        if isinstance(exc, StoreUnavailable):
            # The operator's problem, not the client's: say it where operators look.
            reason = exc.details.get("reason", "unknown")
            log.warning("%s %s answered 503: session store unavailable (%s)", method, path, reason)
        return Answer(exc.status_code, exc.body(), exc.headers)
    if isinstance(exc, RequestValidationError):
        # Name the fields and the rule they broke, never echo the values (they may be personal).
        fields = [
            {"loc": list(e["loc"]), "type": e["type"], "message": e["msg"]} for e in exc.errors()
        ]
        body = error_body(InvalidRequest.code, "the request is invalid", fields=fields)
        return Answer(InvalidRequest.status_code, body)
    if isinstance(exc, StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return Answer(exc.status_code, error_body(code, str(exc.detail)), exc.headers)
    log.exception("unexpected error", exc_info=exc)
    return Answer(500, error_body("internal_error", "internal error; the turn was not recorded"))


def error_answer(exc: Exception, method: str, path: str) -> JSONResponse:
    """The answer to a request that failed with `exc`."""
    status, body, headers = error_of(exc, method, path)
    return JSONResponse(body, status_code=status, headers=headers)


def error_bytes(exc: OrchestratorError) -> bytes:
    """The whole HTTP/1.1 answer to `exc`, closing the connection, for a protocol to write."""
    response = error_response(exc.status_code, exc.code, exc.message, exc.headers, **exc.details)
    status = f"HTTP/1.1 {exc.status_code} {http.HTTPStatus(exc.status_code).phrase}\r\n"
    lines = [status.encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join([*lines, b"connection: close\r\n\r\n", response.body])


def add_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_answer(exc, request.method, request.url.path)

    for kind in (OrchestratorError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
