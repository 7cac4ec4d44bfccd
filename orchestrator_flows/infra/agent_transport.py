"""The agents' HTTP transport: httpx's transport API over aiohttp's connection pool.

aiohttp's pool rather than httpx's own, because under many turns in flight httpx's pool costs
more CPU per agent call than the rest of the turn (bench/RESULTS.md). The transport is ours for
two jobs: aiohttp's faults are mapped by what they mean for a retry (never connected, timed out,
or broken after the request went out: a refused connection and a reset must not look alike),
and the request and the answer are handed over without conversions this service does not need.
Bodies are passed through as they came: httpx decodes any Content-Encoding.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

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
        self.after_close: Callable[[], None] | None = None  # once, when the body is done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except _FAULTS as exc:
            raise _meaning(exc) from exc

    async def aclose(self) -> None:
        self._answer.release()  # back to the pool, or closed if the body was not read whole
        done, self.after_close = self.after_close, None
        if done is not None:
            done()


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
        # The per-host cap is ours, not aiohttp's: one slot per request in flight to a host
        # (HTTP/1.1: one connection each), so that a call's wait for one can be timed at no cost
        # when slots are free (aiohttp reports waits only through tracing every request).
        self._hosts: dict[tuple[str, str, int | None], asyncio.Semaphore] = {}

    def _pool(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that aiohttp ties it to.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.total,
                limit_per_host=0,  # _host_slots caps each host
                keepalive_timeout=self._limits.keepalive_sec,
                ssl=httpx.create_ssl_context(),  # the same trust store httpx would use
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    def _host_slots(self, url: httpx.URL) -> asyncio.Semaphore | None:
        if not self._limits.per_host:
            return None
        host = (url.scheme, url.host, url.port)
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = asyncio.Semaphore(self._limits.per_host)
        return slots

    async def _take(self, slots: asyncio.Semaphore) -> None:
        if not slots.locked():
            await slots.acquire()  # free: taken at once, without yielding to the loop
            return
        waiting = time.perf_counter()
        try:
            await slots.acquire()  # within the caller's deadline (a2a_client's timeout)
        finally:
            self._on_wait(time.perf_counter() - waiting)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        headers, body = await _outgoing(request)
        slots = self._host_slots(request.url)
        if slots is not None:
            await self._take(slots)
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
        except BaseException as exc:  # a fault or a cancellation: the slot goes back now
            if slots is not None:
                slots.release()
            if isinstance(exc, _FAULTS):
                raise _meaning(exc) from exc
            raise
        if slots is not None:
            if isinstance(stream, _Body):
                stream.after_close = slots.release  # the connection is held until then
            else:
                slots.release()
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
