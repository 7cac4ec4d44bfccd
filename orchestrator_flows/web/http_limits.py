"""The HTTP server's own limits: header size, header and body deadlines, connections.

They hold before the app sees a request (so before any API key check), where an ASGI app
cannot act: uvicorn hands a request over only once its whole header block has arrived, and its
httptools protocol has neither a header size limit nor a header deadline, so a client could
hold a connection open for ever or make the process buffer an endless header.
`LimitedHttpProtocol` is uvicorn's httptools protocol with the limits of settings.py:

- a header block (request line and fields) over HTTP_MAX_HEADER_BYTES is answered 431
  `header_too_large` and its connection closed;
- a connection that has not sent a whole header block within HTTP_HEADER_TIMEOUT_SEC of
  opening (or of the first byte of its next request), or a whole body within
  HTTP_BODY_TIMEOUT_SEC of its header, is closed;
- past HTTP_MAX_CONNECTIONS open connections (per process) a new one is answered 503
  `too_many_connections` and closed.

Every command we ship serves through it (`orchestrator-flows serve`, the demo, the image);
plain `uvicorn main:app` does not: the protocol is chosen before the app is imported, so add
`--http orchestrator_flows.web.http_limits:LimitedHttpProtocol --no-access-log
--ws-max-size 65536`: each of them also sets uvicorn's WebSocket message limit to
MAX_BODY_BYTES, so that a message on a call's socket (call_socket.py) larger than a turn's body
closes it 1009 before it is buffered whole (uvicorn's default is 16 MiB).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orchestrator_flows.core.errors import HeaderTooLarge, OrchestratorError, TooManyConnections
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.web.error_answers import error_bytes

log = logging.getLogger("orchestrator")

# How long a refused connection stays open after its answer, reading and dropping what the
# client still sends: closing with unread data makes the kernel reset the connection, and a
# reset can reach the client before it has read the answer (nginx's lingering close).
LINGER_SEC = 2.0
# Descriptors the process needs besides its clients: Redis, logs, the embedded Redis.
OTHER_DESCRIPTORS = 64
# uvicorn's `--http` (or `http=`) for a server configured by the environment: an import
# string, so that each worker process (`--workers N`) imports it and reads its own settings.
PROTOCOL = "orchestrator_flows.web.http_limits:LimitedHttpProtocol"


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_sec: float
    body_timeout_sec: float
    max_connections: int
    descriptors: int  # open files the process needs: clients, agents' pool, the rest
    # A WebSocket message (a call's socket, call_socket.py) over this many bytes, decompressed,
    # closes its socket 1009 before it is read whole: MAX_BODY_BYTES, a turn's body.
    max_frame_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        connections = settings.http_max_connections
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout_sec=settings.http_header_timeout_sec,
            body_timeout_sec=settings.http_body_timeout_sec,
            max_connections=connections,
            descriptors=connections + settings.agent_max_connections + OTHER_DESCRIPTORS,
            max_frame_bytes=settings.max_body_bytes,
        )


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """What every uvicorn serving the service in this process is given: the limits, and no
    access log (it writes query strings as they came; access_log.py logs each request instead)."""
    make_room_for(limits.descriptors)
    return {
        "http": limited_protocol(limits),
        "ws_max_size": limits.max_frame_bytes,
        "access_log": False,
    }


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn's `http=`, with these limits rather than the
    environment's (for a server started in this process)."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


@functools.cache
def environment_limits() -> HttpLimits:
    """The limits of the environment's settings, read once (as `uvicorn main:app` reads them)."""
    limits = HttpLimits.from_settings(Settings())
    make_room_for(limits.descriptors)
    return limits


def make_room_for(descriptors: int) -> None:
    """Raises this process's soft limit on open files to `descriptors` when the hard limit
    allows it (the soft limit is often 1,024); warns once when it does not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= descriptors:
        return
    target = descriptors if hard == resource.RLIM_INFINITY else min(descriptors, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < descriptors:
        log.warning(
            "open files are limited to %d (ulimit -n), fewer than the %d that "
            "HTTP_MAX_CONNECTIONS and AGENT_MAX_CONNECTIONS need; raise the limit or lower them",
            target,
            descriptors,
        )


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits (`uvicorn --http
    orchestrator_flows.web.http_limits:LimitedHttpProtocol` takes them from the environment)."""

    limits: ClassVar[HttpLimits | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits = self.limits or environment_limits()
        # Read on every request: kept here rather than looked up through the limits.
        self._max_header_bytes = limits.max_header_bytes
        self._header_timeout = limits.header_timeout_sec
        self._body_timeout = limits.body_timeout_sec
        # One deadline at a time (header, body, or the linger after a refusal), kept as a time:
        # moving it costs no timer. The one timer, when it fires, closes the connection if the
        # deadline has passed, or is set again for it (see _set_deadline).
        self._due: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Bytes received for the header block being read, chunk by chunk; a chunk that ends
        # it is measured from the parsed header instead (it may hold body bytes too).
        self._header_bytes = 0
        self._chunk_bytes = 0
        self._headers_done = 0  # header blocks read whole on this connection
        self._reading_body = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            limit = self._limits.max_connections
            self._refuse(
                TooManyConnections(
                    f"the server has its limit of {limit} open connections; retry shortly",
                    headers={"Retry-After": "1"},
                    limit=limit,
                )
            )
            return
        self._set_deadline(self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: what the client still sends is dropped unread
        in_header = not self._reading_body
        if self._due is None and in_header:  # a new request begins (the first one's was set
            self._set_deadline(self._header_timeout)  # as the connection opened)
        headers_done = self._headers_done
        self._chunk_bytes = len(data)
        # The base class's methods called directly, here and below: super() costs more, on
        # every request.
        HttpToolsProtocol.data_received(self, data)
        if not in_header or headers_done != self._headers_done or self._refused:
            return
        if self.transport.is_closing():  # uvicorn refused the request (400) and closed
            return
        # The whole chunk belonged to a header block still unfinished.
        self._header_bytes += len(data)
        if self._header_bytes > self._max_header_bytes:
            self._refuse(self._header_too_large())

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        limit = self._max_header_bytes
        # Bytes received so far bound the header from above: only a large one is measured.
        if self._header_bytes + self._chunk_bytes > limit and self._header_size() > limit:
            self._refuse(self._header_too_large())
            return
        self._headers_done += 1
        self._reading_body = True
        self._set_deadline(self._body_timeout)
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._due = None  # no deadline while the app works, nor while the connection idles
        self._reading_body = False
        self._header_bytes = 0
        HttpToolsProtocol.on_message_complete(self)

    def _header_size(self) -> int:
        """The header block as parsed: request target and fields, with their separators."""
        fields = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.url) + fields

    def _header_too_large(self) -> HeaderTooLarge:
        limit = self._max_header_bytes
        return HeaderTooLarge(f"the request header is over {limit} bytes", limit=limit)

    def _refuse(self, error: OrchestratorError) -> None:
        """Answers `error` and closes, having read no further: nothing of the request reaches
        the app, and what the parser buffered is let go."""
        self._refused = True
        self.parser = None  # type: ignore[assignment]
        self.transport.write(error_bytes(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._set_deadline(LINGER_SEC)

    def _set_deadline(self, seconds: float) -> None:
        """A new timer only when none would fire by the deadline: on a keep-alive connection
        requests come and go within one timer's life."""
        due = self._due = self.loop.time() + seconds
        if self._timer is None or due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self.loop.call_at(due, self._on_timer), due

    def _on_timer(self) -> None:
        self._timer = None
        if self._due is None:
            return
        if self.loop.time() < self._due:
            self._timer, self._timer_at = self.loop.call_at(self._due, self._on_timer), self._due
        elif not self.transport.is_closing():
            self.transport.close()
