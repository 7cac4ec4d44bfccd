"""The agents' HTTP transport: httpx's API over aiohttp's connection pool (httpx-aiohttp).

Chosen by measurement (bench/RESULTS.md): at 64 turns in flight httpx's own pool costs more
CPU per agent call than everything else a turn does. httpx-aiohttp maps aiohttp's exceptions
coarsely (a refused connection or a reset surfaces as ConnectTimeout), and whether a fault may
be retried depends on exactly that difference, so this module maps them again, by what they
mean for the request: never connected, timed out, or broken after it was sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# First match wins: the more specific aiohttp errors come before their base classes.
_MEANINGS: list[tuple[type[BaseException], type[httpx.TransportError]]] = [
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS: never sent
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset after the request went out
    (aiohttp.ClientError, httpx.RemoteProtocolError),  # anything else: it may have acted
]


def _meaning(exc: BaseException) -> BaseException:
    origin = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc
    for aiohttp_error, httpx_error in _MEANINGS:
        if isinstance(origin, aiohttp_error):
            return httpx_error(f"{type(origin).__name__}: {origin}")
    return exc


class _MappedStream(httpx.AsyncByteStream):
    """The answer's body, whose read errors are mapped like the request's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            raise _meaning(exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class AgentTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError, TimeoutError) as exc:
            raise _meaning(exc) from exc
        response.stream = _MappedStream(response.stream)
        return response


def agent_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return AgentTransport(limits=limits)
