"""Console sign-in: an API key exchanged once for a short-lived session, and CSRF checks.

The key is checked against the KeyRing and forgotten: the browser holds only a random session
id, signed (itsdangerous) in an HttpOnly, SameSite=Strict cookie scoped to /console. Redis holds
the session under the SHA-256 of its id, so whoever reads Redis cannot take a session over,
with a TTL of CONSOLE_SESSION_MIN: signing out deletes it, and the old cookie then opens nothing
on any replica. Every POST carries the session's CSRF token in its form and must not come from
another site; the sign-in form, before any session, carries a signed token that must match its
own cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from orchestrator_flows.core.errors import Forbidden
from orchestrator_flows.infra.redis_store import RedisStore
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.service.fingerprints import fingerprint_secret
from orchestrator_flows.web.auth import GRANTS, Caller, Permission, Role

COOKIE = "orch_console"
SIGN_IN_COOKIE = "orch_console_sign_in"
COOKIE_PATH = "/console"
SIGN_IN_TOKEN_SEC = 15 * 60  # how long a sign-in form may stay open
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # Sec-Fetch-Site: this origin, or typed


class SignInRequired(Exception):
    """No session, or an expired or ended one: the console answers with the sign-in page."""

    def __init__(self, after: str):
        super().__init__("sign in first")
        self.after = after  # where to go once signed in


@dataclass(frozen=True)
class ConsoleSession:
    session_hash: str
    key_id: str | None
    roles: frozenset[Role]
    csrf_token: str

    def may(self, permission: Permission) -> bool:
        return bool(self.roles & GRANTS[permission])

    @property
    def role_names(self) -> str:
        return ", ".join(sorted(role.value for role in self.roles))


def refusal(session: ConsoleSession, permission: Permission, doing: str) -> Forbidden:
    allowed = sorted(role.value for role in GRANTS[permission])
    return Forbidden(
        f"your role ({session.role_names}) may not {doing}; it needs one of: {', '.join(allowed)}",
        required_roles=allowed,
    )


class ConsoleSessions:
    def __init__(self, settings: Settings, store: Callable[[], RedisStore]):
        self._settings = settings
        self._store = store
        self.ttl_sec = settings.console_session_min * 60

    @cached_property
    def _signer(self) -> URLSafeTimedSerializer:
        # Derived from the Idempotency-Key secret, which every replica already shares, so a
        # session signed by one replica is read by all; the derivation keeps the two apart.
        secret = fingerprint_secret(self._settings).encode()
        key = hmac.digest(secret, b"orchestrator-flows console session", "sha256")
        return URLSafeTimedSerializer(key, salt="orch-console")

    async def open(self, caller: Caller) -> str:
        """A new session for `caller`; the signed value of its cookie."""
        session_id = secrets.token_urlsafe(32)
        record = {
            "key_id": caller.key_id,
            "roles": sorted(role.value for role in caller.roles),
            "csrf_token": secrets.token_urlsafe(32),
        }
        await self._store().save_console_session(
            _hash(session_id), orjson.dumps(record), self.ttl_sec
        )
        return self._signer.dumps(session_id)

    async def current(self, request: Request) -> ConsoleSession | None:
        session_id = self._unsigned(request.cookies.get(COOKIE), self.ttl_sec)
        if session_id is None:
            return None
        session_hash = _hash(session_id)
        raw = await self._store().read_console_session(session_hash)
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        return ConsoleSession(
            session_hash=session_hash,
            key_id=record["key_id"],
            roles=frozenset(Role(role) for role in record["roles"]),
            csrf_token=record["csrf_token"],
        )

    async def end(self, session: ConsoleSession) -> None:
        await self._store().end_console_session(session.session_hash)

    def sign_in_token(self) -> str:
        return self._signer.dumps(secrets.token_urlsafe(16))

    def sign_in_token_matches(self, request: Request, form_token: str) -> bool:
        cookie = request.cookies.get(SIGN_IN_COOKIE, "")
        return self._unsigned(cookie, SIGN_IN_TOKEN_SEC) is not None and hmac.compare_digest(
            cookie, form_token
        )

    def _unsigned(self, value: str | None, max_age: int) -> str | None:
        if not value:
            return None
        try:
            return self._signer.loads(value, max_age=max_age)
        except BadSignature:  # forged, altered or expired (SignatureExpired is one)
            return None


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def forget_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def refuse_cross_site(request: Request) -> None:
    """A state-changing request must come from the console's own pages: the browser's
    Sec-Fetch-Site says so, and its Origin names the host the request was sent to. Only the
    host is compared: a proxy in front (deploy/nginx.conf) passes the Host without its port, and
    one that ends TLS makes the scheme the service sees differ from the browser's."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if (fetch_site is not None and fetch_site not in SAME_SITE_FETCHES) or (
        origin is not None and urlsplit(origin).hostname != request.url.hostname
    ):
        raise Forbidden("a request from another site was refused", reason="cross_site")


async def check_csrf(request: Request, session: ConsoleSession) -> None:
    refuse_cross_site(request)
    token = (await request.form()).get("csrf_token")
    if not isinstance(token, str) or not hmac.compare_digest(token, session.csrf_token):
        raise Forbidden(
            "the form is out of date or was not sent by the console; reload the page and retry",
            reason="csrf",
        )


def sessions_of(request: Request) -> ConsoleSessions:
    return request.app.state.console_sessions


def console_caller(
    permission: Permission, doing: str
) -> Callable[[Request], Awaitable[ConsoleSession]]:
    """A dependency: the signed-in session, allowed to `permission` (`doing` says it in words),
    with its CSRF token checked on a POST."""

    async def signed_in(request: Request) -> ConsoleSession:
        session = await sessions_of(request).current(request)
        if session is None:
            after = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(after)
        request.state.console_session = session
        if not session.may(permission):
            raise refusal(session, permission, doing)
        if request.method == "POST":
            await check_csrf(request, session)
        return session

    return signed_in
