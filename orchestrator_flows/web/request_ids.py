"""X-Request-ID: every request gets an id, echoed in its answer, its log lines and its agent call.

One middleware sets it for every route, the turn included: asgi_correlation_id's, configured
here. A caller's id is kept when it is short and plain; otherwise, or without one, a new one is
made. The id lives in `asgi_correlation_id.correlation_id` for the request's duration.
"""

from __future__ import annotations

import re
import secrets

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_request_id(value: str) -> bool:
    """Accept a caller's request id only if it is short and plain (it goes into logs)."""
    return _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """32 random hex digits, like a uuid4's hex without building a UUID object."""
    return secrets.token_hex(16)


def add_request_ids(app: FastAPI) -> None:
    """Adds the request-id middleware, outside every middleware added before it: those (the
    request log, the turn endpoint) see the id, and every answer they make carries it."""
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=REQUEST_ID_HEADER,
        # No endpoint reads the request's header: the id is read from the context variable.
        update_request_header=False,
        validator=valid_request_id,
        generator=new_request_id,
    )
