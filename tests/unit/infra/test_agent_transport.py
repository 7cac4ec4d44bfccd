"""The agents' transport maps aiohttp's faults by what they mean for a retry: never sent,
timed out, or broken after the request went out (a2a_client retries only the first)."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import httpx
import pytest

from orchestrator_flows.infra.agent_transport import AgentTransport, PoolLimits, _meaning
from tests.support.agents import free_port
from tests.support.timing import DEADLINE_SEC, eventually


@pytest.mark.parametrize(
    ("fault", "meaning"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut short"), httpx.ReadError),
        (aiohttp.InvalidURL("ftp://agent"), httpx.UnsupportedProtocol),
        (aiohttp.ClientError("anything else"), httpx.RemoteProtocolError),
    ],
)
def test_each_aiohttp_fault_gets_the_httpx_error_that_says_what_happened(
    fault: BaseException, meaning: type[Exception]
) -> None:
    assert type(_meaning(fault)) is meaning


def test_foreign_errors_pass_unchanged() -> None:
    error = ValueError("not a transport fault")

    assert _meaning(error) is error


async def test_refused_connection_is_a_connect_error_so_it_may_be_retried() -> None:
    transport = AgentTransport(limits=PoolLimits(total=1))
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
    transport = AgentTransport(limits=PoolLimits(total=1))
    async with server, httpx.AsyncClient(transport=transport) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(f"http://127.0.0.1:{port}/", content=b"{}")


async def serve_once(answer: bytes, body_bytes: int = 0) -> tuple[asyncio.Server, list[bytes]]:
    """A raw HTTP server that answers every request with `answer` and keeps what it heard
    (the head, and `body_bytes` of the body)."""
    heard: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append(await reader.readuntil(b"\r\n\r\n") + await reader.readexactly(body_bytes))
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), heard


async def test_compressed_answer_reaches_the_caller_decoded() -> None:
    body = gzip.compress(b'{"jsonrpc": "2.0"}')
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    server, _ = await serve_once(head.encode() + body)
    port = server.sockets[0].getsockname()[1]
    transport = AgentTransport(limits=PoolLimits(total=1))
    async with server, httpx.AsyncClient(transport=transport) as client:
        answer = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")

    assert answer.json() == {"jsonrpc": "2.0"}


async def test_request_headers_and_body_go_out_as_given() -> None:
    server, heard = await serve_once(b"HTTP/1.1 204 No Content\r\n\r\n")
    port = server.sockets[0].getsockname()[1]
    transport = AgentTransport(limits=PoolLimits(total=1))
    request = httpx.Request(
        "POST",
        f"http://127.0.0.1:{port}/rpc",
        headers={"X-Request-ID": "req-1", "User-Agent": "orchestrator-flows/test"},
        content=b'{"a": 1}',
    )
    async with server:
        answer = await transport.handle_async_request(request)
        await answer.aclose()
        await transport.aclose()

    head = heard[0].decode().lower()
    assert answer.status_code == 204
    assert head.startswith("post /rpc http/1.1")
    assert "x-request-id: req-1" in head and "user-agent: orchestrator-flows/test" in head
    assert f"host: 127.0.0.1:{port}" in head and "content-length: 8" in head


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["one chunk", "over one chunk", "chunked"])
async def test_answer_arrives_whole_however_it_is_framed(framing: str) -> None:
    # A small declared body is read at once, anything else streamed: the caller sees the same.
    body = b'{"jsonrpc": "2.0", "pad": "' + b"x" * (0 if framing == "one chunk" else 70_000) + b'"}'
    if framing == "chunked":
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
            body[:9], body[9:]
        )
    else:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    server, _ = await serve_once(answer)
    port = server.sockets[0].getsockname()[1]
    transport = AgentTransport(limits=PoolLimits(total=1))
    async with server, httpx.AsyncClient(transport=transport) as client:
        received = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")

    assert received.content == body


async def test_streamed_request_body_goes_out_whole() -> None:
    async def parts():
        yield b'{"a": '
        yield b"1}"

    server, heard = await serve_once(b"HTTP/1.1 204 No Content\r\n\r\n", body_bytes=8)
    port = server.sockets[0].getsockname()[1]
    transport = AgentTransport(limits=PoolLimits(total=1))
    request = httpx.Request("POST", f"http://127.0.0.1:{port}/", content=parts())
    async with server:
        answer = await transport.handle_async_request(request)
        await answer.aclose()
        await transport.aclose()

    head, _, sent = heard[0].partition(b"\r\n\r\n")
    assert b"content-length: 8" in head.lower() and b"transfer-encoding" not in head.lower()
    assert sent == b'{"a": 1}'


async def held_server() -> tuple[asyncio.Server, asyncio.Event, list[int]]:
    """A server that holds each request until `go` is set; `open_now` records, per arrival, how
    many connections were open to it."""
    go, open_now, connections = asyncio.Event(), [], [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                open_now.append(connections[0])
                await go.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        finally:
            connections[0] -= 1
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), go, open_now


async def test_calls_past_the_per_host_cap_wait_for_a_connection_and_the_wait_is_heard() -> None:
    server, go, open_now = await held_server()
    port = server.sockets[0].getsockname()[1]
    waits: list[float] = []
    transport = AgentTransport(limits=PoolLimits(total=0, per_host=2), on_wait=waits.append)
    async with server, httpx.AsyncClient(transport=transport) as client:
        calls = [
            asyncio.create_task(client.post(f"http://127.0.0.1:{port}/", content=b"{}"))
            for _ in range(6)
        ]
        await eventually(lambda: len(open_now) == 2, "the first two calls reach the agent")
        go.set()
        answers = await asyncio.gather(*calls)

    assert [answer.status_code for answer in answers] == [200] * 6
    assert max(open_now) <= 2
    assert len(waits) == 4 and all(seconds >= 0 for seconds in waits)


async def test_without_caps_every_call_gets_its_own_connection_at_once() -> None:
    server, go, open_now = await held_server()
    port = server.sockets[0].getsockname()[1]
    waits: list[float] = []
    transport = AgentTransport(limits=PoolLimits(total=0, per_host=0), on_wait=waits.append)
    async with server, httpx.AsyncClient(transport=transport) as client:
        calls = [
            asyncio.create_task(client.post(f"http://127.0.0.1:{port}/", content=b"{}"))
            for _ in range(6)
        ]
        await eventually(lambda: len(open_now) == 6, "all six calls reach the agent")
        go.set()
        await asyncio.gather(*calls)

    assert max(open_now) == 6
    assert waits == []


async def test_a_failed_call_gives_its_host_slot_back() -> None:
    transport = AgentTransport(limits=PoolLimits(per_host=1))
    url = f"http://127.0.0.1:{free_port()}/"
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):  # with the one slot kept by a failed call, the next would wait
            async with asyncio.timeout(DEADLINE_SEC):
                with pytest.raises(httpx.ConnectError):
                    await client.post(url, content=b"{}")


async def test_a_streamed_answer_holds_its_slot_until_its_body_is_read() -> None:
    big = b"x" * (200 * 1024)  # over one chunk: handed over as a stream
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(big)}\r\n\r\n".encode()
    server, _ = await serve_once(head + big)
    port = server.sockets[0].getsockname()[1]
    waits: list[float] = []
    transport = AgentTransport(limits=PoolLimits(per_host=1), on_wait=waits.append)
    request = httpx.Request("POST", f"http://127.0.0.1:{port}/", content=b"{}")
    async with server:
        first = await transport.handle_async_request(request)
        second = asyncio.create_task(transport.handle_async_request(request))
        await eventually(
            lambda: transport._hosts and any(s.locked() for s in transport._hosts.values()),
            "the second call waits for the host's one slot",
        )
        assert not second.done()
        assert len(await first.aread()) == len(big)
        await first.aclose()
        answer = await second
        assert len(await answer.aread()) == len(big)
        await answer.aclose()
    await transport.aclose()

    assert len(waits) == 1
