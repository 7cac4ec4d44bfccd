"""The HTTP server's own limits (orchestrator_flows/web/http_limits.py), against the service as
the image starts it: `orchestrator-flows serve` in its own process, a real redis-server and real
a2a-sdk agents, probed over raw sockets the way slow or hostile clients behave."""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import (
    SERVICE_DIR,
    Agents,
    AgentServer,
    Caller,
    RedisTarget,
    RedisView,
    clean_environment,
    service_client,
)
from tests.support.agents import GatedAgent, free_port
from tests.support.service import bearer
from tests.support.timing import Gate

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

MiB = 1024 * 1024
SLOW_CONNECTIONS = 1_000
# A request begun and never finished: the start of a header block, then silence.
SLOW_START = b"POST /orchestrate HTTP/1.1\r\nHost: orchestrator\r\nContent-Ty"


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    port: int

    @property
    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


ServeWith = Callable[..., Served]


@pytest.fixture(autouse=True)
def room_for_many_sockets() -> None:
    """Enough open files for a thousand sockets here and a thousand in the server (which
    inherits this limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SLOW_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def serve_with(
    redis_target: RedisTarget, store: RedisView, agents: Agents, tmp_path: Path
) -> Iterator[ServeWith]:
    """`serve_with(HTTP_HEADER_TIMEOUT_SEC="1", ...)`: the image's command on a free port."""
    started: list[Served] = []

    def serve(**settings: str) -> Served:
        port = free_port()
        env = clean_environment() | redis_target.env
        env |= {f"AGENT_URL_{role.upper()}": url for role, url in agents.urls.items()}
        env |= settings
        program = str(Path(sys.executable).with_name("orchestrator-flows"))  # installed
        process = subprocess.Popen(
            [program, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=SERVICE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"service-{port}.log").open("wb"),
        )
        served = Served(f"http://127.0.0.1:{port}", process, port)
        started.append(served)
        wait_until_healthy(served)
        return served

    yield serve
    for served in started:
        served.process.terminate()
        served.process.wait(timeout=30)


def wait_until_healthy(served: Served) -> None:
    deadline = time.monotonic() + 30
    while served.process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(served.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the service did not start (exit {served.process.poll()})")


def closed_by_server(sockets: list[socket.socket], within_sec: float) -> list[socket.socket]:
    """The sockets the server closed (end of stream) before the deadline, waiting for all of
    them; poll(), not select(): descriptors here may pass 1,024."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed: list[socket.socket] = []
    deadline = time.monotonic() + within_sec
    while len(closed) < len(sockets) and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            if by_fd[fd].recv(65536) == b"":  # else the rest of an answer: read on
                poller.unregister(fd)
                closed.append(by_fd[fd])
    return closed


def still_open(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets with nothing to read now: neither an answer nor the end of the stream."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock.fileno(), select.POLLIN)
    answered = {fd for fd, _ in poller.poll(0)}
    return [sock for sock in sockets if sock.fileno() not in answered]


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def error_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


async def play_a_whole_call(url: str, call_id: str) -> None:
    async with service_client(url) as http:
        for answer in await Caller(http).walk(6, call_id=call_id):
            assert answer.status_code == 200, answer.text


async def test_turns_are_answered_while_a_thousand_slow_connections_are_held_open(
    serve_with: ServeWith, store: RedisView
) -> None:
    # Deadlines far beyond the test, so that every slow connection is still held at the end.
    served = serve_with(HTTP_HEADER_TIMEOUT_SEC="600")
    await play_a_whole_call(served.url, "CALL-WARM")
    before = served.rss
    slow = []
    try:
        for _ in range(SLOW_CONNECTIONS):
            sock = served.connect()
            sock.sendall(SLOW_START)
            slow.append(sock)

        await play_a_whole_call(served.url, "CALL-001")
        grown = served.rss - before

        assert len(still_open(slow)) == SLOW_CONNECTIONS
    finally:
        for sock in slow:
            sock.close()
    assert len(store.steps("CALL-001")) == 6
    assert grown < 100 * MiB, f"{grown / MiB:.0f} MiB for {SLOW_CONNECTIONS} slow connections"


def test_headers_over_the_limit_are_answered_431_and_closed_with_memory_bounded(
    serve_with: ServeWith, store: RedisView
) -> None:
    served = serve_with()
    before = served.rss
    huge = [served.connect() for _ in range(20)]
    for sock in huge:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: orchestrator\r\nX-Padding: ")
    # Each keeps sending an endless header (40 MiB) until the server answers.
    piece, sent = b"a" * 65536, dict.fromkeys(huge, 0)
    while sending := [sock for sock in huge if sent[sock] < 40 * MiB]:
        for sock in sending:
            if sock not in still_open([sock]):
                sent[sock] = 40 * MiB  # stop: the answer is there
                continue
            try:
                sock.sendall(piece)
                sent[sock] += len(piece)
            except OSError:
                sent[sock] = 40 * MiB
    grown = served.rss - before
    answers = [read_answer(sock) for sock in huge]
    for sock in huge:
        sock.close()

    for answer in answers:
        status, error = error_of(answer)
        assert (status, error["code"], error["limit"]) == (431, "header_too_large", 16384)
        assert b"connection: close" in answer
    assert grown < 100 * MiB, f"{grown / MiB:.0f} MiB after 20 oversized headers"
    assert httpx.get(served.url + "/healthz", timeout=10).status_code == 200
    assert store.keys() == []


def test_a_header_just_over_the_limit_is_refused_whole_and_one_within_it_served(
    serve_with: ServeWith,
) -> None:
    served = serve_with(HTTP_MAX_HEADER_BYTES="4096")

    within = httpx.get(served.url + "/healthz", headers={"X-Padding": "a" * 3500}, timeout=10)
    with served.connect() as sock:
        # In one piece, so that the server reads the whole header block at once.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 5000 + b"\r\n\r\n")
        status, error = error_of(read_answer(sock))

    assert within.status_code == 200
    assert (status, error["code"], error["limit"]) == (431, "header_too_large", 4096)


async def test_connections_that_do_not_send_their_header_or_body_in_time_are_closed(
    serve_with: ServeWith, serve_agent: AgentServer, store: RedisView
) -> None:
    # The greeting's agent holds the call's first turn until the server has closed every slow
    # connection: the deadlines bound what a client sends, not a turn in progress.
    gate = Gate()
    slow_greeting = serve_agent(GatedAgent(gate))
    served = serve_with(
        HTTP_HEADER_TIMEOUT_SEC="0.5",
        HTTP_BODY_TIMEOUT_SEC="0.5",
        AGENT_URL_GREETING=slow_greeting,
    )
    silent = [served.connect() for _ in range(10)]
    slow_header = [served.connect() for _ in range(40)]
    for sock in slow_header:
        sock.sendall(SLOW_START)
    slow_body = [served.connect() for _ in range(10)]
    key = bearer("client")["Authorization"].encode()
    for sock in slow_body:
        sock.sendall(
            b"POST /orchestrate HTTP/1.1\r\nHost: x\r\nAuthorization: " + key + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"call_'
        )
    # A keep-alive connection: one request answered, then the next one's header stalls.
    second = served.connect()
    second.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert second.recv(4096).startswith(b"HTTP/1.1 200")
    second.sendall(SLOW_START)
    every = [*silent, *slow_header, *slow_body, second]
    call = asyncio.create_task(play_a_whole_call(served.url, "CALL-001"))
    try:
        await gate.arrived()
        closed = await asyncio.to_thread(closed_by_server, every, within_sec=60)
        gate.open()
        await call
    finally:
        for sock in every:
            sock.close()

    assert len(closed) == len(every)
    assert len(store.steps("CALL-001")) == 6


def test_connections_past_the_cap_are_answered_503_and_the_cap_frees_as_they_close(
    serve_with: ServeWith,
) -> None:
    served = serve_with(HTTP_MAX_CONNECTIONS="20")
    held = [served.connect() for _ in range(20)]
    try:
        with served.connect() as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, error = error_of(read_answer(extra))
    finally:
        for sock in held:
            sock.close()

    assert (status, error["code"], error["limit"]) == (503, "too_many_connections", 20)
    assert served_once_the_server_let_go(served)


def served_once_the_server_let_go(served: Served) -> bool:
    """The server counts a connection until it has seen it close: retry until it has."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(served.url + "/healthz", timeout=10).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False
