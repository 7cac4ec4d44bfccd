"""The agents' HTTP transport: httpx's transport API over aiohttp's connection pool.

aiohttp's pool rather than httpx's own, because under many turns in flight httpx's pool costs
more CPU per agent call than the rest of the turn (bench/RESULTS.md). The transport is ours for
two jobs: aiohttp's faults are mapped by what they mean for a retry (never connected, timed out,
or broken after the request went out: a refused connection and a reset must not look alike),
and the request and the answer are handed over without conversions this service does not need.
Bodies are passed through as they came: httpx decodes any Content-Encoding.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

CHUNK_BYTES = 64 * 1024
_HTTP_1_1 = {"http_version": b"HTTP/1.1"}

# First match wins: the more specific aiohttp errors come before their base classes.
_MEANINGS: list[tuple[type[BaseException], type[httpx.TransportError]]] = [
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS: never sent
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset after the request went out
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.RemoteProtocolError),  # anything else: it may have acted
]
_FAULTS = (aiohttp.ClientError, TimeoutError)


def _meaning(exc: BaseException) -> BaseException:
    for aiohttp_error, httpx_error in _MEANINGS:
        if isinstance(exc, aiohttp_error):
            return httpx_error(f"{type(exc).__name__}: {exc}")
    return exc


@functools.lru_cache(maxsize=32)
def _client_timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    # Made once per distinct timeout (a client has one): building it is attrs-validated work.
    return aiohttp.ClientTimeout(connect=pool, sock_connect=connect, sock_read=read)


class _Body(httpx.AsyncByteStream):
    """The answer's body as aiohttp reads it, its read errors mapped like the request's."""

    def __init__(self, answer: aiohttp.ClientResponse) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except _FAULTS as exc:
            raise _meaning(exc) from exc

    async def aclose(self) -> None:
        self._answer.release()  # back to the pool, or closed if the body was not read whole


@functools.lru_cache(maxsize=256)
def _text(name: bytes, value: bytes) -> tuple[str, str]:
    # Every header of an agent call but its request id repeats from call to call.
    return name.decode("latin-1"), value.decode("latin-1")


async def _outgoing(request: httpx.Request) -> tuple[list[tuple[str, str]], bytes | None]:
    """The headers and body aiohttp sends. A ByteStream's bytes go as they are (the A2A
    client's requests are left unread); any other stream is read whole first, and aiohttp
    frames it with a Content-Length instead of the chunks httpx announced."""
    headers = [_text(name, value) for name, value in request.headers.raw]
    if isinstance(request.stream, httpx.ByteStream):
        return headers, b"".join(request.stream) or None
    body = await request.aread()
    return [(k, v) for k, v in headers if k.lower() != "transfer-encoding"], body or None


async def _body_of(answer: aiohttp.ClientResponse) -> httpx.AsyncByteStream:
    # A body that declares it fits in one chunk (an A2A answer nearly always does) is read
    # here, at once: handed over as a stream it costs two async generators per chunk.
    declared = answer.content_length
    if declared is not None and declared <= CHUNK_BYTES:
        return httpx.ByteStream(await answer.read())  # read() gives the connection back
    return _Body(answer)


@dataclass(frozen=True)
class PoolLimits:
    """Connections to the agents: at most `total` in all and `per_host` to one agent host
    (0: no cap), an idle one closed after `keepalive_sec`."""

    total: int = 0
    per_host: int = 1024
    keepalive_sec: float = 2.0


class AgentTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, limits: PoolLimits, on_wait: Callable[[float], None] = lambda seconds: None
    ) -> None:
        self._limits = limits
        self._on_wait = on_wait
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that aiohttp ties it to.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.total,
                limit_per_host=self._limits.per_host,
                keepalive_timeout=self._limits.keepalive_sec,
                ssl=httpx.create_ssl_context(),  # the same trust store httpx would use
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trace_configs=[self._waits()],
            )
        return self._session

    def _waits(self) -> aiohttp.TraceConfig:
        """Times a call's wait for a connection: aiohttp signals it only when the call queues
        (every connection to its host, or in all, taken), so a free pool costs nothing."""
        config = aiohttp.TraceConfig()
        queued: dict[int, float] = {}

        async def start(_: Any, context: Any, __: Any) -> None:
            queued[id(context)] = time.perf_counter()

        async def end(_: Any, context: Any, __: Any) -> None:
            began = queued.pop(id(context), None)
            if began is not None:
                self._on_wait(time.perf_counter() - began)

        config.on_connection_queued_start.append(start)
        config.on_connection_queued_end.append(end)
        config.freeze()
        return config

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        headers, body = await _outgoing(request)
        try:
            answer = await self._pool().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=_client_timeout(
                    timeout.get("pool"), timeout.get("connect"), timeout.get("read")
                ),
            )
            stream = await _body_of(answer)
        except _FAULTS as exc:
            raise _meaning(exc) from exc
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=stream,
            request=request,
            extensions=_HTTP_1_1,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def agent_transport(
    limits: PoolLimits, on_wait: Callable[[float], None] = lambda seconds: None
) -> httpx.AsyncBaseTransport:
    return AgentTransport(limits, on_wait)
