"""The console's pages: sign-in and sign-out, a call, its export and deletion, the flows."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

import structlog
from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.responses import JSONResponse

from orchestrator_flows.core.call_search import OUTCOMES, CallQuery
from orchestrator_flows.core.errors import CallNotFound, Forbidden, InvalidRequest, Unauthenticated
from orchestrator_flows.core.flows import Stage
from orchestrator_flows.core.models import CallState, StepRecord
from orchestrator_flows.core.session_views import session_view
from orchestrator_flows.service.call_search import search_calls
from orchestrator_flows.web.auth import GRANTS, Permission, Role
from orchestrator_flows.web.console import call_view
from orchestrator_flows.web.console.rendering import render, see_other
from orchestrator_flows.web.console.sessions import (
    COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_TOKEN_SEC,
    ConsoleSession,
    console_caller,
    forget_cookie,
    refuse_cross_site,
    sessions_of,
    set_cookie,
)
from orchestrator_flows.web.paths import CallIdPath

log = logging.getLogger("orchestrator")
events = structlog.get_logger("orchestrator.sessions")

Reader = Annotated[ConsoleSession, Depends(console_caller(Permission.READ, "read calls"))]
Deleter = Annotated[ConsoleSession, Depends(console_caller(Permission.DELETE, "delete calls"))]
Monitor = Annotated[ConsoleSession, Depends(console_caller(Permission.MONITOR, "watch operations"))]
CONSOLE_ROLES = (Role.AUDITOR, Role.ADMIN, Role.MONITOR)
SEARCH_FIELDS = ("call_id", "account_id", "from", "to", "stage", "intent", "agent", "outcome")
PAGE_SIZE = 25


def home_of(roles: frozenset[Role]) -> str:
    return "/console/calls" if roles & GRANTS[Permission.READ] else "/console/operations"


def safe_after(after: str | None) -> str | None:
    """Where to go after signing in: only a console page, never another site."""
    if after and after.startswith("/console/") and "//" not in after and "\\" not in after:
        return after
    return None


def add_pages(console: FastAPI) -> None:
    _add_sign_in(console)
    _add_call_pages(console)

    @console.get("/")
    async def home(request: Request) -> Response:
        session = await sessions_of(request).current(request)
        return see_other(home_of(session.roles) if session else "/console/sign-in")

    @console.get("/flows")
    async def flows_page(request: Request, session: Reader) -> Response:
        flows = request.app.state.flows
        stages = [
            (stage, sorted(flows.stages[stage].items()), flows.classifiable(stage))
            for stage in Stage
        ]
        context = {
            "stages": stages,
            "agents": sorted(flows.agents.items()),
            "fallback_role": flows.fallback_role,
            "classifier_agent": flows.classifier.agent_role,
        }
        return render(request, "flows.html", context)


def _add_sign_in(console: FastAPI) -> None:
    @console.get("/sign-in")
    async def sign_in_form(request: Request, after: str | None = None) -> Response:
        return _sign_in_page(request, after)

    @console.post("/sign-in")
    async def sign_in(
        request: Request,
        api_key: Annotated[str, Form(max_length=512)] = "",
        csrf_token: Annotated[str, Form(max_length=512)] = "",
        after: Annotated[str | None, Form(max_length=2048)] = None,
    ) -> Response:
        refuse_cross_site(request)
        sessions = sessions_of(request)
        if not sessions.sign_in_token_matches(request, csrf_token):
            return _sign_in_page(
                request, after, "The sign-in form had expired; please sign in again.", 403
            )
        try:
            caller = request.app.state.keyring.identify(api_key.strip() or None)
        except Unauthenticated as refused:
            message = "Enter an API key." if not api_key.strip() else "This API key is not known."
            return _sign_in_page(request, after, message, refused.status_code)
        if not caller.roles & set(CONSOLE_ROLES):
            roles = ", ".join(sorted(role.value for role in caller.roles))
            message = (
                f"This key's role ({roles}) may not use the console: client keys drive calls"
                " through the API. Sign in with an auditor, admin or monitor key."
            )
            return _sign_in_page(request, after, message, Forbidden.status_code)
        cookie = await sessions.open(caller)
        response = see_other(safe_after(after) or home_of(caller.roles))
        set_cookie(request, response, COOKIE, cookie, sessions.ttl_sec)
        forget_cookie(request, response, SIGN_IN_COOKIE)
        events.info("console_signed_in", api_key_id=caller.key_id)
        return response

    @console.post("/sign-out")
    async def sign_out(request: Request, session: Monitor) -> Response:
        await sessions_of(request).end(session)
        response = see_other("/console/sign-in?signed_out=1")
        forget_cookie(request, response, COOKIE)
        events.info("console_signed_out", api_key_id=session.key_id)
        return response


def _choices(request: Request) -> dict[str, list[str]]:
    flows = request.app.state.flows
    return {
        "intents": sorted(flows.stage_of_intent),
        "agents": sorted(flows.agents),
        "outcomes": list(OUTCOMES),
    }


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < int(text) < 1_000_000 else 1


def _page_link(form: dict[str, str], number: int) -> str:
    query = {name: value for name, value in form.items() if value} | {"page": str(number)}
    return "/console/calls?" + urlencode(query)


def _sign_in_page(
    request: Request, after: str | None, problem: str | None = None, status: int = 200
) -> Response:
    sessions = sessions_of(request)
    token = sessions.sign_in_token()
    context = {
        "csrf_token": token,
        "after": safe_after(after) or "",
        "problem": problem,
        "signed_out": request.query_params.get("signed_out") == "1",
    }
    response = render(request, "sign_in.html", context, status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, SIGN_IN_TOKEN_SEC)
    return response


def _add_call_pages(console: FastAPI) -> None:
    @console.get("/calls")
    async def calls_page(request: Request, session: Reader) -> Response:
        params = request.query_params
        form = {name: params.get(name, "").strip() for name in SEARCH_FIELDS}
        context = {"form": form, "choices": _choices(request), "deleted": params.get("deleted")}
        try:
            query = CallQuery.from_params(form)
        except InvalidRequest as invalid:
            context |= {"problems": invalid.details["fields"], "page": None}
            return render(request, "calls.html", context, invalid.status_code)
        number = _page_number(params.get("page", ""))
        found = await search_calls(
            request.app.state.store,
            query,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
            scan_limit=request.app.state.settings.console_scan_limit,
        )
        pages = max(1, -(-found.total // PAGE_SIZE))
        links = {
            "previous": _page_link(form, number - 1) if number > 1 else None,
            "next": _page_link(form, number + 1) if number < pages else None,
        }
        context |= {"page": found, "number": number, "pages": pages, "links": links}
        context |= {"problems": [], "stage_label": lambda flow_id: Stage.of(flow_id).label}
        return render(request, "calls.html", context)

    @console.get("/calls/{call_id}")
    async def call_page(request: Request, call_id: CallIdPath, session: Reader) -> Response:
        state, steps = await _read_call(request, call_id)
        context = {
            "call": state,
            "track": call_view.track(state),
            "exchanges": call_view.exchanges(steps),
            "view": call_view,
            "may_delete": session.may(Permission.DELETE),
        }
        return render(request, "call.html", context)

    @console.get("/calls/{call_id}/export")
    async def export_call(request: Request, call_id: CallIdPath, session: Reader) -> Response:
        state, steps = await _read_call(request, call_id)
        view = session_view(state, steps, request.app.state.store.ttl_sec)
        return JSONResponse(
            view.model_dump(mode="json"),
            headers={"Content-Disposition": f'attachment; filename="{call_id}.json"'},
        )

    @console.get("/calls/{call_id}/delete")
    async def confirm_delete(request: Request, call_id: CallIdPath, session: Deleter) -> Response:
        state, steps = await _read_call(request, call_id)
        return render(request, "delete.html", {"call": state, "step_count": len(steps)})

    @console.post("/calls/{call_id}/delete")
    async def delete_call(request: Request, call_id: CallIdPath, session: Deleter) -> Response:
        if not await request.app.state.store.delete_call(call_id):
            raise CallNotFound.of(call_id)
        # The trail is gone; this line is what is left to say who removed it.
        events.info(
            "call_deleted", call_identify_id=call_id, api_key_id=session.key_id, via="console"
        )
        return see_other(f"/console/calls?deleted={call_id}")


async def _read_call(request: Request, call_id: str) -> tuple[CallState, list[StepRecord]]:
    found = await request.app.state.store.read_call(call_id)
    if found is None:
        raise CallNotFound.of(call_id)
    return found
