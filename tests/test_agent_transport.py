"""The agents' transport maps aiohttp's faults by what they mean for a retry: never sent,
timed out, or broken after the request went out (a2a_client retries only the first)."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

from agent_transport import AgentTransport, _meaning
from tests.agents import free_port


@pytest.mark.parametrize(
    ("fault", "meaning"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut short"), httpx.ReadError),
        (aiohttp.ClientError("anything else"), httpx.RemoteProtocolError),
    ],
)
def test_each_aiohttp_fault_gets_the_httpx_error_that_says_what_happened(
    fault: BaseException, meaning: type[Exception]
) -> None:
    assert type(_meaning(fault)) is meaning
    # httpx-aiohttp's own coarse mapping is looked through, to the aiohttp error behind it.
    coarse = httpx.ConnectTimeout("coarse")
    coarse.__cause__ = fault
    assert type(_meaning(coarse)) is meaning


def test_foreign_errors_pass_unchanged() -> None:
    error = httpx.UnsupportedProtocol("ftp")

    assert _meaning(error) is error


async def test_refused_connection_is_a_connect_error_so_it_may_be_retried() -> None:
    transport = AgentTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{free_port()}/", content=b"{}")


async def test_answer_cut_short_is_a_read_error() -> None:
    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AgentTransport(limits=httpx.Limits(max_connections=1))
    async with server, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
