"""The benchmark's direct look into Redis: the trail check, memory, and synthetic calls.

Key names are spelled out here rather than imported, like the integration tests do: other
readers of Redis rely on them, so a renamed key should fail the check, not follow along.
The trail check and the flush take a single Redis or a Redis Cluster alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

STAGES = [1, 2, 3, 4, 5]
BATCH = 1000
MAX_FAILURES_SHOWN = 5

AnyRedis = redis.Redis | redis.RedisCluster


def call_key(call_id: str, kind: str) -> str:
    return f"orch:{{{call_id}}}:{kind}"


def flush(client: AnyRedis) -> None:
    """Empties Redis; on a cluster every primary (a cluster client's commands go to one node
    unless told otherwise)."""
    if isinstance(client, redis.RedisCluster):
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    else:
        client.flushall()


def used_memory(client: redis.Redis) -> int:
    # The dataset only: used_memory also counts client buffers, which Redis shrinks lazily
    # after a busy round, so its difference over a round undercounts the calls' keys.
    return int(client.info("memory")["used_memory_dataset"])


@dataclass
class TrailCheck:
    calls: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.calls > 0 and self.passed == self.calls

    def fail(self, call_id: str, why: str) -> None:
        if len(self.failures) < MAX_FAILURES_SHOWN:
            self.failures.append(f"{call_id}: {why}")


def check_trails(
    client: AnyRedis, call_ids: list[str], check: TrailCheck, turns: int = len(STAGES)
) -> None:
    """Every call: `turns` steps (all five by default), seq 1..turns in order, stages 1..turns
    once each, a TTL on both keys."""
    for batch in _batches(call_ids):
        # Not a transaction: on a cluster the batch spans every slot, and redis-py sends a
        # plain pipeline to each node with that node's commands, answers in the order asked.
        with client.pipeline(transaction=False) as pipe:
            for call_id in batch:
                pipe.lrange(call_key(call_id, "steps"), 0, -1)
                pipe.ttl(call_key(call_id, "steps"))
                pipe.ttl(call_key(call_id, "state"))
            answers = pipe.execute()
        for index, call_id in enumerate(batch):
            raw_steps, steps_ttl, state_ttl = answers[3 * index : 3 * index + 3]
            check.calls += 1
            steps = [json.loads(raw) for raw in raw_steps]
            why = _trail_problem(steps, steps_ttl, state_ttl, turns)
            if why:
                check.fail(call_id, why)
            else:
                check.passed += 1


def _trail_problem(steps: list[dict], steps_ttl: int, state_ttl: int, turns: int) -> str | None:
    if [step.get("seq") for step in steps] != list(range(1, turns + 1)):
        return f"seq {[step.get('seq') for step in steps]}"
    if [step.get("intent_flow_id") for step in steps] != STAGES[:turns]:
        return f"stages {[step.get('intent_flow_id') for step in steps]}"
    if steps_ttl <= 0 or state_ttl <= 0:
        return f"TTL steps={steps_ttl} state={state_ttl}"
    return None


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


@dataclass(frozen=True)
class CallTemplate:
    """A real call the service stored (its state and steps), to copy under other ids."""

    call_id: str
    state: bytes
    steps: list[bytes]

    @classmethod
    def read(cls, client: redis.Redis, call_id: str) -> CallTemplate:
        state = client.get(call_key(call_id, "state"))
        steps = client.lrange(call_key(call_id, "steps"), 0, -1)
        if state is None or not steps:
            raise ValueError(f"call {call_id} is not in Redis")
        return cls(call_id, state, steps)

    def memory_usage(self, client: redis.Redis) -> int:
        """What Redis says the call's two keys take (MEMORY USAGE, all list elements sampled)."""
        keys = [call_key(self.call_id, "state"), call_key(self.call_id, "steps")]
        return sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)

    def renamed(self, call_id: str) -> tuple[bytes, list[bytes]]:
        old, new = self.call_id.encode(), call_id.encode()
        return self.state.replace(old, new), [step.replace(old, new) for step in self.steps]

    def long_trail(self, call_id: str, length: int) -> tuple[bytes, list[bytes]]:
        """The same call with `length` steps: the real steps repeated, renumbered."""
        state, steps = self.renamed(call_id)
        longer = []
        for seq in range(1, length + 1):
            step = json.loads(steps[(seq - 1) % len(steps)])
            longer.append(json.dumps(step | {"seq": seq}, separators=(",", ":")).encode())
        return state, longer


def write_call(
    pipe: redis.client.Pipeline, call_id: str, state: bytes, steps: list[bytes], ttl: int
) -> None:
    pipe.set(call_key(call_id, "state"), state, ex=ttl)
    pipe.rpush(call_key(call_id, "steps"), *steps)
    pipe.expire(call_key(call_id, "steps"), ttl)


def fill_live_calls(
    client: redis.Redis, template: CallTemplate, count: int, ttl: int = 3600
) -> None:
    """`count` copies of the template call, as if that many calls were live in Redis."""
    for start in range(0, count, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for number in range(start, min(count, start + BATCH)):
                call_id = f"LIVE-{number}"
                write_call(pipe, call_id, *template.renamed(call_id), ttl)
            pipe.execute()
