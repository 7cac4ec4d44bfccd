"""The console's pages rendered from Jinja2 templates, and the headers every console answer
carries.

Autoescaping is on for every template and undefined names are errors: whatever a caller or an
agent said reaches a page as text, never as markup. The Content-Security-Policy allows scripts
and styles only from /console/static, so even markup that slipped through could not run.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator_flows.web.auth import Permission

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
NO_STORE = (b"cache-control", b"no-store")  # pages hold trails: no shared or disk cache
# The navigation: (label, path, permission).
NAV = [
    ("Calls", "/console/calls", Permission.READ),
    ("Operations", "/console/operations", Permission.MONITOR),
    ("Flows", "/console/flows", Permission.READ),
]

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def moment(stamp: str) -> str:
    """A stored ISO-8601 UTC timestamp as people read it, to the millisecond."""
    when = datetime.fromisoformat(stamp)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} UTC"


templates.env.filters["moment"] = moment


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    session = getattr(request.state, "console_session", None)
    nav = [(label, path) for label, path, needs in NAV if session and session.may(needs)]
    page = {"session": session, "nav": nav, "path": request.url.path} | (context or {})
    return templates.TemplateResponse(request, template, page, status_code=status)


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every console answer, and no-store to all but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{scope.get('root_path', '')}/static/")
        extra = SECURITY_HEADERS if static else [*SECURITY_HEADERS, NO_STORE]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
