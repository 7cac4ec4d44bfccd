"""The console's errors as pages: the API's answer (`error_of`), rendered for a person."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator_flows.core.errors import OrchestratorError
from orchestrator_flows.web.console.rendering import render, see_other
from orchestrator_flows.web.console.sessions import SignInRequired
from orchestrator_flows.web.error_answers import error_of


def add_error_pages(console: FastAPI) -> None:
    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return see_other("/console/sign-in?" + urlencode({"after": exc.after}))

    async def error_page(request: Request, exc: Exception) -> Response:
        status, body, headers = error_of(exc, request.method, request.url.path)
        response = render(request, "error.html", {"error": body["error"], "status": status}, status)
        if headers and "Retry-After" in headers:
            response.headers["Retry-After"] = headers["Retry-After"]
        return response

    console.add_exception_handler(SignInRequired, sign_in_first)
    for kind in (OrchestratorError, RequestValidationError, StarletteHTTPException, Exception):
        console.add_exception_handler(kind, error_page)
