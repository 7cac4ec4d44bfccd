"""The service on a real 3-primary Redis Cluster (`redis-cli --cluster create`): every key of a
call on one node, whole calls exact, and several service processes sharing the calls, each
turn of a call sent to any of them, with one call's turns still never overlapping."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.web.app import create_app
from tests.integration.conftest import (
    HAPPY_PATH,
    SERVICE_DIR,
    Agents,
    AgentServer,
    Caller,
    RedisClusterNodes,
    clean_environment,
    service_client,
    uvicorn_command,
    wait_until_serving,
)
from tests.support.agents import GatedAgent, free_port, serve_in_thread
from tests.support.service import API_KEYS, IDEMPOTENCY_SECRET
from tests.support.timing import DEADLINE_SEC, Gate

pytestmark = pytest.mark.integration

SEED = 20261123
PROCESSES = 3


@pytest.fixture
def cluster(redis_cluster: RedisClusterNodes) -> RedisClusterNodes:
    """The suite's 3-primary cluster (every test over the shared Redis also runs on it)."""
    return redis_cluster


@pytest.fixture
def cluster_store(cluster: RedisClusterNodes) -> Iterator[ClusterView]:
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    yield ClusterView(cluster, client)
    client.close()


class ClusterView:
    """What the cluster holds, read back with a cluster client and node by node."""

    def __init__(self, nodes: RedisClusterNodes, client) -> None:
        self.nodes = nodes
        self.client = client

    def steps(self, call_id: str) -> list[dict]:
        return [json.loads(raw) for raw in self.client.lrange(f"orch:{{{call_id}}}:steps", 0, -1)]

    def ttls(self, call_id: str) -> list[int]:
        return [self.client.ttl(f"orch:{{{call_id}}}:{kind}") for kind in ("state", "steps")]

    def nodes_holding(self, call_id: str) -> set[int]:
        held = set()
        for index in range(len(self.nodes.ports)):
            with redis.Redis.from_url(self.nodes.url_of(index)) as node:
                if node.keys(f"orch:{{{call_id}}}:*"):
                    held.add(index)
        return held


def assert_trail_exact(store: ClusterView, call_id: str) -> None:
    steps = store.steps(call_id)
    assert [s["seq"] for s in steps] == list(range(1, len(HAPPY_PATH) + 1)), call_id
    assert [s["intent"] for s in steps] == [intent for intent, _ in HAPPY_PATH], call_id
    assert all(ttl > 0 for ttl in store.ttls(call_id)), call_id


@pytest.fixture
async def cluster_service(
    cluster: RedisClusterNodes, cluster_store: ClusterView, agents: Agents
) -> AsyncIterator[Caller]:
    settings = Settings(
        redis_url=cluster.url,
        redis_cluster=True,
        agent_urls=agents.urls,
        api_keys=API_KEYS,
        idempotency_secret=IDEMPOTENCY_SECRET,
    )
    url, stop = serve_in_thread(lambda _: create_app(settings))
    async with service_client(url) as http:
        yield Caller(http)
    stop()


async def test_whole_calls_on_a_cluster_each_kept_on_one_node(
    cluster_service: Caller, cluster_store: ClusterView
) -> None:
    call_ids = [f"CLUSTER-{n:02d}" for n in range(12)]

    for call_id in call_ids:
        answers = await cluster_service.walk(len(HAPPY_PATH), call_id=call_id)
        assert answers[-1].json()["is_complete"] is True

    holders = {call_id: cluster_store.nodes_holding(call_id) for call_id in call_ids}
    for call_id in call_ids:
        assert_trail_exact(cluster_store, call_id)
        assert len(holders[call_id]) == 1, holders[call_id]  # state, steps, idempotency: one slot
    assert len(set().union(*holders.values())) >= 2  # and the calls spread over the primaries
    session = await cluster_service.http.get(f"/session/{call_ids[0]}")
    assert session.status_code == 200 and len(session.json()["steps"]) == len(HAPPY_PATH)
    assert (await cluster_service.http.delete(f"/session/{call_ids[0]}")).status_code == 204
    assert cluster_store.nodes_holding(call_ids[0]) == set()
    assert (await cluster_service.http.get("/readyz")).json()["redis"] == "ok"


def _start_processes(
    cluster: RedisClusterNodes, agent_urls: dict[str, str], tmp_path: Path
) -> tuple[list[str], list[subprocess.Popen]]:
    urls, processes = [], []
    for index in range(PROCESSES):
        port = free_port()
        # Each process is pointed at a different node: any node will do.
        env = clean_environment() | {
            "REDIS_URL": cluster.url_of(index % len(cluster.ports)),
            "REDIS_CLUSTER": "true",
            "IDEMPOTENCY_SECRET": IDEMPOTENCY_SECRET,
            **{f"AGENT_URL_{role.upper()}": url for role, url in agent_urls.items()},
        }
        log = (tmp_path / f"service-{index}.log").open("wb")
        process = subprocess.Popen(
            uvicorn_command(port), cwd=SERVICE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        processes.append(process)
        urls.append(f"http://127.0.0.1:{port}")
    for url, process in zip(urls, processes, strict=True):
        wait_until_serving(url, process)
    return urls, processes


@pytest.fixture
def start_processes(cluster: RedisClusterNodes, cluster_store: ClusterView, tmp_path: Path):
    started: list[subprocess.Popen] = []

    def start(agent_urls: dict[str, str]) -> list[str]:
        urls, processes = _start_processes(cluster, agent_urls, tmp_path)
        started.extend(processes)
        return urls

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=20)


async def test_turns_of_each_call_spread_at_random_over_three_processes(
    start_processes, agents: Agents, cluster_store: ClusterView
) -> None:
    urls = start_processes(agents.urls)
    rng = random.Random(SEED)
    call_ids = [f"SPREAD-{n:02d}" for n in range(24)]
    plans = {call_id: [rng.randrange(PROCESSES) for _ in HAPPY_PATH] for call_id in call_ids}
    clients = [service_client(url) for url in urls]

    async def drive(call_id: str) -> None:
        for (intent, words), process in zip(HAPPY_PATH, plans[call_id], strict=True):
            answer = await Caller(clients[process]).turn(intent, words, call_id=call_id)
            assert answer.status_code == 200, answer.text

    try:
        await asyncio.gather(*(drive(call_id) for call_id in call_ids))
    finally:
        for client in clients:
            await client.aclose()

    assert {p for plan in plans.values() for p in plan} == set(range(PROCESSES))
    for call_id in call_ids:
        assert_trail_exact(cluster_store, call_id)


async def test_one_calls_turns_on_two_processes_at_once_never_overlap(
    start_processes,
    agents: Agents,
    serve_agent: AgentServer,
    cluster_store: ClusterView,
    gate: Gate,
) -> None:
    slow = GatedAgent(gate)
    urls = start_processes(agents.urls | {"greeting": serve_agent(slow)})
    clients = [service_client(url) for url in urls[:2]]
    try:
        turns = {
            asyncio.create_task(Caller(client).turn("greeting", call_id="RACE-1"))
            for client in clients
        }
        first, running = await asyncio.wait(
            turns, timeout=DEADLINE_SEC, return_when=asyncio.FIRST_COMPLETED
        )
        # One turn answered while the agent held the other: it was not kept waiting.
        assert len(first) == 1, "neither turn was answered while the other was in the agent"
        busy = first.pop().result()
        gate.open()
        done = await running.pop()
    finally:
        for client in clients:
            await client.aclose()

    assert (done.status_code, busy.status_code) == (200, 409)
    assert busy.json()["error"]["code"] == "turn_in_progress"
    assert [s["seq"] for s in cluster_store.steps("RACE-1")] == [1]
    assert slow.seen.texts == ["hello"]


async def test_cluster_down_at_start_is_not_ready_and_turns_answer_503(agents: Agents) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(redis_url=nowhere, redis_cluster=True, agent_urls=agents.urls,
                        api_keys=API_KEYS, redis_timeout_sec=0.2,
                        idempotency_secret=IDEMPOTENCY_SECRET)  # fmt: skip
    url, stop = serve_in_thread(lambda _: create_app(settings))
    try:
        async with service_client(url) as http:
            ready = await http.get("/readyz")
            turn = await Caller(http).turn("greeting", call_id="DOWN-1")
    finally:
        stop()

    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert turn.status_code == 503
    assert turn.json()["error"]["code"] == "store_unavailable"
