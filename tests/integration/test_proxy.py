"""deploy/nginx.conf run by a real nginx in front of the service (as docker compose runs it):
turns pass through, and nginx refuses what the service would refuse, in the same words.
Skipped where nginx is not installed (CI installs it: .ci/run)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import (
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
    service_client,
)
from tests.support import nginx
from tests.support.agents import WORDS, StreamingAgent, free_port
from tests.support.console import csrf_token
from tests.support.service import KEYS, bearer
from tests.support.streams import StreamReader
from tests.support.timing import DEADLINE_SEC, Gate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.single_redis,
    pytest.mark.skipif(nginx.nginx_binary() is None, reason="nginx is not installed"),
]

Proxy = tuple[str, Path]  # its URL, its access log
ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def proxy_for(default_service_url: str, tmp_path: Path) -> Iterator[ProxyFactory]:
    """`proxy_for(upstream=None, **directives)`: nginx with deploy/nginx.conf in front of the
    service (the default one, or the one at `upstream`), the named directives given other
    arguments."""
    started: list[subprocess.Popen] = []

    def start(upstream: str | None = None, **directives: str) -> Proxy:
        service = urlsplit(upstream or default_service_url)
        port = free_port()
        conf = nginx.runnable_conf(
            f"{service.hostname}:{service.port}", f"127.0.0.1:{port}", tmp_path, **directives
        )
        log = tmp_path / "access.log"
        process = subprocess.Popen(
            [nginx.nginx_binary(), "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
            stdout=log.open("wb"),
            stderr=subprocess.PIPE,
        )
        started.append(process)
        wait_for_port(port, process)
        return f"http://127.0.0.1:{port}", log

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nginx did not start: {process.communicate(timeout=5)[1]}")


async def test_a_whole_call_passes_through_the_proxy_logged_without_query_strings(
    proxy_for: ProxyFactory, store: RedisView
) -> None:
    url, log = proxy_for()

    async with service_client(url) as http:
        answers = await Caller(http).walk(6)
        tagged = await http.get("/healthz?pan=4111111111111111", headers={"X-Request-ID": "r-1"})

    assert [answer.json()["step_seq"] for answer in answers] == [1, 2, 3, 4, 5, 6]
    assert len(store.steps()) == 6
    assert tagged.headers["X-Request-ID"] == "r-1"  # the caller's id reaches the service
    logged = log.read_text()
    assert '"GET /healthz" 200' in logged and "r-1" in logged
    assert "pan=" not in logged and "4111111111111111" not in logged


def test_the_proxy_refuses_an_oversized_header_or_body_in_the_services_words(
    proxy_for: ProxyFactory, store: RedisView
) -> None:
    url, _ = proxy_for()

    header = httpx.get(url + "/healthz", headers={"X-Padding": "a" * 20_000}, timeout=10)
    body = httpx.post(
        url + "/orchestrate", content=b"{" + b" " * 70_000 + b"}", headers=bearer(), timeout=10
    )

    assert (header.status_code, header.json()["error"]["code"]) == (431, "header_too_large")
    assert (body.status_code, body.json()["error"]["code"]) == (413, "body_too_large")
    assert store.keys() == []


def test_the_proxy_closes_a_connection_that_does_not_send_its_header_in_time(
    proxy_for: ProxyFactory,
) -> None:
    url, _ = proxy_for(client_header_timeout="1s")
    port = urlsplit(url).port

    with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: orchestrator\r\nAcc")
        ended = slow.recv(4096)  # blocks until nginx closes: nothing is answered

    assert ended == b""
    assert json.loads(httpx.get(url + "/healthz", timeout=10).text) == {"status": "ok"}


async def test_streamed_words_pass_the_proxy_as_the_agent_speaks_them(
    proxy_for: ProxyFactory,
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    gate: Gate,
    store: RedisView,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    service = make_service(agent_urls={"greeting": serve_agent(agent)})
    url, _ = proxy_for(upstream=str(service.http.base_url))

    async with (
        asyncio.timeout(DEADLINE_SEC),
        service_client(url) as http,
        Caller(http).stream("greeting") as response,
    ):
        stream = StreamReader(response)
        first = await stream.until("chunk")
        # The agent waits at the gate: nginx passed the first words on without buffering.
        assert agent.finished == 0
        gate.open()
        await stream.to_end()

    assert first.data == {"text": WORDS[0]}
    assert "".join(stream.chunks) == stream.turn["response"]["text"] == agent.text
    assert len(store.steps()) == 1


async def test_the_console_signs_in_through_the_proxy(proxy_for: ProxyFactory) -> None:
    # nginx passes `Host: $host`, without the port the browser's Origin names.
    url, _ = proxy_for()
    browser_like = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    async with httpx.AsyncClient(base_url=url, headers=browser_like) as browser:
        form = await browser.get("/console/sign-in")
        answer = await browser.post(
            "/console/sign-in",
            data={"api_key": KEYS["auditor"], "csrf_token": csrf_token(form.text)},
        )
        assert answer.status_code == 303, answer.text
        assert (await browser.get("/console/calls")).status_code == 200
        cross_site = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        page = await browser.get("/console/calls")
        refused = await browser.post(
            "/console/sign-out", data={"csrf_token": csrf_token(page.text)}, headers=cross_site
        )
        assert refused.status_code == 403
