"""The service on a primary watched by a real Redis Sentinel (REDIS_SENTINEL_MASTER): calls are
served through the primary the sentinel names, and when that primary dies, turns answer 503
until the sentinel has promoted the replica, then go on with every step committed before."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator_flows.infra.redis_store import connect, disconnect
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.web.app import create_app
from tests.integration.conftest import (
    HAPPY_PATH,
    Agents,
    Caller,
    call_key,
    paused,
    redis_server_binary,
    service_client,
    wait_for_ping,
)
from tests.support.agents import free_port, serve_in_thread
from tests.support.service import API_KEYS, IDEMPOTENCY_SECRET
from tests.support.timing import eventually, wait_until

pytestmark = pytest.mark.integration

MASTER = "orchestrator"
# A replica that runs confirms a step in milliseconds, however loaded the machine: a turn waits
# this long only for a stopped one.
PATIENT_MS = 10_000
WAIT_MS = 500  # the wait a step on a stopped replica is shown to run out of


@dataclass
class Watched:
    primary: subprocess.Popen
    primary_port: int
    replica_port: int
    sentinel_port: int
    processes: list[subprocess.Popen]

    @property
    def sentinel_url(self) -> str:
        return f"redis://127.0.0.1:{self.sentinel_port}/0"

    def sentinel_knows_the_replica(self) -> bool:
        # A sentinel learns a primary's replicas from its INFO, every ten seconds: until then
        # it has no one to promote.
        with redis.Redis(port=self.sentinel_port) as sentinel:
            replicas = sentinel.execute_command("SENTINEL", "REPLICAS", MASTER)
        return f"127.0.0.1:{self.replica_port}" in str(replicas)

    def replica_holds(self, call_id: str, steps: int) -> bool:
        with redis.Redis(port=self.replica_port) as replica:
            return replica.llen(call_key(call_id, "steps")) == steps

    def replica_confirms_writes(self) -> bool:
        # Asked by WAIT, as the service asks: with the replication offsets found equal, a
        # test's first step still once went unconfirmed within 250 ms on a loaded CI machine.
        with redis.Redis(port=self.primary_port) as primary:
            primary.set("warm-up", 1)
            confirmed = primary.execute_command("WAIT", 1, 500) >= 1
            primary.delete("warm-up")
        return confirmed


def _server(workdir: Path, port: int, *extra: str) -> subprocess.Popen:
    command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    return subprocess.Popen([*command, *extra], cwd=workdir, stdout=subprocess.DEVNULL)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    primary_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    primary = _server(tmp_path, primary_port)
    replica = _server(tmp_path, replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 5000\n"
    )
    sentinel = subprocess.Popen(
        [redis_server_binary(), str(config), "--sentinel"], cwd=tmp_path, stdout=subprocess.DEVNULL
    )
    processes = [primary, replica, sentinel]
    found = Watched(primary, primary_port, replica_port, sentinel_port, processes)
    try:
        ports = (primary_port, replica_port, sentinel_port)
        for port, process in zip(ports, processes, strict=True):
            wait_for_ping(f"redis://127.0.0.1:{port}/0", process)
        wait_until(found.replica_confirms_writes, "the replica to confirm a write")
        wait_until(found.sentinel_knows_the_replica, "the sentinel to find the replica")
        yield found
    finally:
        for process in processes:
            process.kill()
            process.wait()


@contextmanager
def served(watched: Watched, agents: Agents, wait_ms: int, **overrides: Any) -> Iterator[str]:
    """The service through the sentinel, each step waiting for the replica (up to wait_ms)."""
    settings = Settings(
        **overrides,
        redis_url=watched.sentinel_url,
        redis_sentinel_master=MASTER,
        redis_wait_replicas=1,
        redis_wait_timeout_ms=wait_ms,
        agent_urls=agents.urls,
        api_keys=API_KEYS,
        idempotency_secret=IDEMPOTENCY_SECRET,
        redis_timeout_sec=2 * wait_ms / 1000,  # the least the settings allow with wait_ms
    )
    url, stop = serve_in_thread(lambda _: create_app(settings))
    try:
        yield url
    finally:
        stop()


async def test_calls_follow_the_primary_the_sentinel_names_through_a_failover(
    watched: Watched, agents: Agents
) -> None:
    with served(watched, agents, WAIT_MS) as url:
        async with service_client(url) as http:
            caller = Caller(http)
            await caller.walk(3, call_id="SENTINEL-1")
            # Killed once the replica has every step (that a step is answered only once the
            # replica has it is the next test's).
            await eventually(lambda: watched.replica_holds("SENTINEL-1", 3), "3 steps replicated")
            watched.primary.kill()
            watched.primary.wait()
            statuses = []
            deadline = time.monotonic() + 60
            for intent, words in HAPPY_PATH[3:]:
                while time.monotonic() < deadline:  # the same key each time: no second step
                    key = {"Idempotency-Key": f"SENTINEL-1:{intent}"}
                    answer = await caller.turn(intent, words, call_id="SENTINEL-1", headers=key)
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        break
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "store_unavailable"
                    await asyncio.sleep(0.2)
            steps = (await http.get("/session/SENTINEL-1/steps")).json()

    assert 503 in statuses  # the primary was gone for a while ...
    assert statuses[-1] == 200  # ... then its replica took over
    assert [s["seq"] for s in steps] == list(range(1, len(HAPPY_PATH) + 1))
    assert [s["intent"] for s in steps] == [intent for intent, _ in HAPPY_PATH]
    with redis.Redis(port=watched.replica_port) as promoted:
        assert promoted.info("replication")["role"] == "master"


async def test_a_burst_through_the_sentinel_waits_for_its_few_connections_and_none_is_refused(
    watched: Watched, agents: Agents
) -> None:
    # Four Redis operations at once for 100 first turns; waiting as long as it takes (this is
    # about waiting rather than refusing, not about how long the wait is).
    narrow = {"redis_max_connections": 4, "redis_pool_timeout_sec": 60}
    with served(watched, agents, PATIENT_MS, **narrow) as url:
        async with service_client(url) as http:
            caller = Caller(http)
            call_ids = [f"SENTINEL-BURST-{n:03d}" for n in range(100)]
            answers = await asyncio.gather(
                *(caller.turn(*HAPPY_PATH[0], call_id=call_id) for call_id in call_ids)
            )

    assert sorted({answer.status_code for answer in answers}) == [200]
    with redis.Redis(port=watched.primary_port) as primary:
        assert all(primary.llen(call_key(call_id, "steps")) == 1 for call_id in call_ids)


async def test_each_step_waits_for_the_replica_and_one_that_lags_is_counted(
    watched: Watched, agents: Agents
) -> None:
    unreplicated = "orch_redis_unreplicated_commits_total"
    with (
        served(watched, agents, PATIENT_MS) as patient_url,
        served(watched, agents, WAIT_MS) as impatient_url,
    ):
        async with service_client(patient_url) as http, service_client(impatient_url) as hasty:
            patient, impatient = Caller(http), Caller(hasty)
            first = await patient.turn(*HAPPY_PATH[0], call_id="SENTINEL-2")
            with paused(watched.processes[1]):  # the replica
                lagging = await impatient.turn(*HAPPY_PATH[1], call_id="SENTINEL-2")
            after = await patient.turn(*HAPPY_PATH[2], call_id="SENTINEL-2")
            counted = [await patient.metric(unreplicated), await impatient.metric(unreplicated)]

    assert [a.status_code for a in (first, lagging, after)] == [200, 200, 200]
    # The replica confirmed each step when it could (counted by WAIT's answer, not by the
    # clock); stopped, it made the step wait its full timeout, then the turn answered anyway
    # (the step is on the primary) and counted the step as unreplicated.
    assert counted == [0, 1]
    assert lagging.elapsed.total_seconds() >= WAIT_MS / 1000


def clients_of(port: int) -> int:
    """Connections the server has, besides the one asking."""
    with redis.Redis(port=port) as server:
        return server.info("clients")["connected_clients"] - 1


async def test_disconnect_closes_the_connections_to_the_sentinels_too(watched: Watched) -> None:
    before = clients_of(watched.sentinel_port)
    client = connect(watched.sentinel_url, 1.0, sentinel_master=MASTER)
    await client.ping()  # asks a sentinel where the primary is
    during = clients_of(watched.sentinel_port)

    await disconnect(client)

    assert during > before
    wait_until(lambda: clients_of(watched.sentinel_port) == before, "the connections to close")
