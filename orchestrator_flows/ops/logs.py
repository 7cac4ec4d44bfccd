"""Logging: structlog events, JSON lines by default (LOG_FORMAT=console for a terminal).

Our own events (one per turn, `call_deleted`, ...) are rendered by structlog and written straight
to stderr, never through the standard library's records, handlers and formatters, which would
cost the busiest line several times its own work (bench/RESULTS.md, "What step 2 changed, and
what each was worth"). Standard-library records (uvicorn's, libraries', ours from
`logging.getLogger`) go through a formatter with the same processors and renderer, so every line
of the process has one shape. Events never carry what the caller said: only ids, stages and
outcomes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog

LogFormat = Literal["json", "console"]


def configure_logging(level: str = "INFO", fmt: LogFormat = "json") -> None:
    shared: list[Any] = [
        structlog.stdlib.add_logger_name,  # reads `.name`, which _StderrLogger has too
        structlog.stdlib.add_log_level,
        # An event may bring its own moment (the turn line: its step's timestamp, so that the
        # line and the audit step carry the same one); every other event is stamped now.
        structlog.processors.MaybeTimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)  # the traceback as one string
        renderer: Any = structlog.processors.JSONRenderer(serializer=_json_line)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=_StderrLogger,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per agent call is noise
    # sse-starlette (the a2a-sdk agents' streams: the demo agents, in-process) logs every event
    # it sends at DEBUG: the agent's words, unmasked. Never.
    logging.getLogger("sse_starlette").setLevel(logging.INFO)
    # uvicorn's access log writes query strings as they came: off however uvicorn was started
    # (its protocol writes it only to a logger with handlers). access_log.py logs requests.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


def _json_line(event: dict[str, Any], **options: Any) -> str:
    return orjson.dumps(event, default=options.get("default")).decode()


class _StderrLogger:
    """structlog's output: one line per event, to whatever sys.stderr is at the time (test
    runners swap it), named like a standard-library logger."""

    def __init__(self, name: str = "", *_: Any) -> None:
        self.name = name

    def msg(self, line: str) -> None:
        sys.stderr.write(line + "\n")  # stderr is line-buffered: whole lines, in order

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass
