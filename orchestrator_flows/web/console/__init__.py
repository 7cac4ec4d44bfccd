"""The console: web pages for auditors and supervisors, served by the service at /console.

It is its own small app mounted under the API's, so that its errors are pages and its answers
carry the console's security headers, while sharing the API's state (store, keyring, flows,
metrics)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.service.call_search import CallCensus
from orchestrator_flows.web.console.error_pages import add_error_pages
from orchestrator_flows.web.console.operations import add_operations
from orchestrator_flows.web.console.pages import add_pages
from orchestrator_flows.web.console.rendering import SecurityHeaders, see_other
from orchestrator_flows.web.console.sessions import ConsoleSessions


def add_console(app: FastAPI, settings: Settings) -> None:
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    console.state = app.state
    app.state.console_sessions = ConsoleSessions(settings, lambda: app.state.store)
    app.state.call_census = CallCensus(
        lambda: app.state.store,
        every_sec=settings.console_census_sec,
        scan_limit=settings.console_scan_limit,
    )
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    add_pages(console)
    add_operations(console, settings)
    add_error_pages(console)
    console.add_middleware(SecurityHeaders)

    @app.get("/console", include_in_schema=False)
    async def console_home() -> object:
        return see_other("/console/")

    app.mount("/console", console)
