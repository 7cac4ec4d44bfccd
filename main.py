"""The service's ASGI app for `uvicorn main:app` (the design card's entry point).

The app lives in orchestrator_flows.web.app; `app` is built from the environment's settings on
first use, so importing this module (or create_app from it) needs no configuration.
"""

from typing import Any

from orchestrator_flows.web import app as _web_app
from orchestrator_flows.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    return getattr(_web_app, name)
