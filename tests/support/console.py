"""Driving the console over HTTP without a browser: sign in, read a form's CSRF token."""

from __future__ import annotations

import re

import httpx

from tests.support.service import KEYS

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, role: str, *, after: str = "") -> httpx.Response:
    """Signs `http` in with `role`'s key (its cookie jar keeps the session); the answer."""
    form = await http.get("/console/sign-in")
    return await http.post(
        "/console/sign-in",
        data={"api_key": KEYS[role], "csrf_token": csrf_token(form.text), "after": after},
    )


def browser_client(app: object, base_url: str = "http://svc") -> httpx.AsyncClient:
    """A client with no API key: only its cookies say who it is."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
