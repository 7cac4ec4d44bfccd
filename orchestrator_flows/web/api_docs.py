"""What /docs, /redoc and /openapi.json show beyond what FastAPI derives from the routes.

Every error code an operation may answer is documented under its status, with an example
answer, from the error classes themselves (errors.py): their codes, docstrings, example details
and headers. So are the agent fault codes a 200 answer may carry. Swagger UI and ReDoc are
served from the files the fastapi-standalone-docs wheel ships, not from a CDN: the pages work
on a machine without Internet access.
"""

from __future__ import annotations

import inspect
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from orchestrator_flows.core.errors import AgentFault, OrchestratorError
from orchestrator_flows.core.models import ErrorResponse

ASSETS = Path(str(files("fastapi_standalone_docs") / "static"))
DOCS, REDOC = "/docs", "/redoc"
Responses = dict[int | str, dict[str, Any]]


def summary(kind: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join(inspect.cleandoc(kind.__doc__ or kind.__name__).split("\n\n")[0].split())


def example_answer(kind: type[OrchestratorError]) -> dict[str, Any]:
    return {"error": {"code": kind.code, "message": summary(kind), **kind.example_details}}


def error_responses(*kinds: type[OrchestratorError]) -> Responses:
    """OpenAPI `responses` for these errors: per status, each code with its meaning, an example
    answer and the headers it sets."""
    responses: Responses = {}
    for kind in kinds:
        response = responses.setdefault(
            kind.status_code,
            {"model": ErrorResponse, "description": "", "headers": {}, "content": {}},
        )
        response["description"] += f"- `{kind.code}`: {summary(kind)}\n"
        examples = response["content"].setdefault("application/json", {"examples": {}})
        examples["examples"][kind.code] = {"summary": kind.code, "value": example_answer(kind)}
        for name, meaning in kind.answer_headers.items():
            response["headers"][name] = _header(name, meaning)
    for response in responses.values():
        if not response["headers"]:
            del response["headers"]
    return responses


def _header(name: str, meaning: str) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1} if name == "Retry-After" else {"type": "string"}
    return {"description": meaning, "schema": schema}


def agent_faults() -> dict[str, type[AgentFault]]:
    """Every agent fault code, with the class that stands for it."""
    found: dict[str, type[AgentFault]] = {}
    pending = [AgentFault]
    while pending:
        kind = pending.pop()
        found[kind.code] = kind  # a subclass sharing its parent's code says it more exactly
        pending.extend(kind.__subclasses__())
    return dict(sorted(found.items()))


def turn_answer() -> Responses:
    """OpenAPI for a turn's 200: the agent's answer, or its fault with one of the codes."""
    faults = "".join(f"- `{code}`: {summary(kind)}\n" for code, kind in agent_faults().items())
    description = (
        "The agent's answer. When the agent failed, `status` is `error`, the call stays at its "
        'stage, and `response` is `{"error": {"code", "message"}}` with one of these codes:\n'
        + faults
    )
    stream = (
        "Sent with `Accept: text/event-stream`, once the turn is admitted: Server-Sent Events "
        '`status` (`{"state": ...}`, the agent\'s task state), `chunk` (`{"text": ...}`, the '
        "agent's next words; all chunks joined are `response.text`) and last, once, `turn`: "
        "this same JSON body (or the error body of a failure after the agent answered). "
        "Keep-alive comments `: ping` in long silences. A refusal before the agent is called is "
        "the usual JSON error. See docs/streaming.md."
    )
    return {
        200: {
            "description": f"{description}\n{stream}",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        }
    }


_EXAMPLE = (
    'event: chunk\ndata: {"text":"Welcome "}\n\n'
    'event: chunk\ndata: {"text":"back!"}\n\n'
    'event: turn\ndata: {"call_identify_id":"CALL-001","status":"success", ...}\n\n'
)


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their scripts, styles and icons served from
    the installed wheel. The app must be built with docs_url=None and redoc_url=None."""
    favicon = f"{DOCS}/fastapi/favicon.png"

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS}/swagger-ui.css",
            swagger_favicon_url=root + favicon,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(REDOC, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC}/redoc.standalone.js",
            redoc_favicon_url=root + favicon,
            with_google_fonts=False,
        )

    # The icon's folder before Swagger UI's, which would answer its path with a 404. ReDoc's
    # bundle asks for its logo beside its page (/redoc/logo-mini.svg).
    app.mount(f"{DOCS}/fastapi", StaticFiles(directory=ASSETS / "fastapi"), name="docs-icon")
    app.mount(DOCS, StaticFiles(directory=ASSETS / "swagger"), name="swagger-ui-files")
    app.mount(REDOC, StaticFiles(directory=ASSETS / "redoc"), name="redoc-files")
