"""How the cost of a step grows: turns with few vs many live calls, reads of short vs long trails.

Both run against the service alone, at low concurrency, so that the figures show the work a
bigger Redis or a longer call adds rather than queueing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import redis
from processes import run_loadgen
from redis_view import CallTemplate, call_key, fill_live_calls, write_call
from report import Latency, Scaling

TURNS_IN_FLIGHT = 4


@dataclass(frozen=True)
class ScalingPlan:
    live_calls: tuple[int, int]  # few, many
    trail_lengths: tuple[int, int]  # short, long
    turn_seconds: float
    reads: int
    rounds: int = 3


def measure_scaling(
    client: redis.Redis,
    service_url: str,
    template: CallTemplate,
    plan: ScalingPlan,
    keys: tuple[str, str],
) -> Scaling:
    """keys: the client's and the auditor's API keys. Each comparison alternates its two
    sides for `plan.rounds` rounds and keeps the medians: one round each, minutes apart on a
    shared machine, differed by the machine's load more than by what they compare."""
    client_key, auditor_key = keys
    few, many = plan.live_calls
    client.flushall()
    fill_live_calls(client, template, many)
    client.swapdb(0, 1)  # the many wait in database 1; the service reads database 0
    fill_live_calls(client, template, few)
    turns: dict[int, list[Latency]] = {few: [], many: []}
    for round_number in range(plan.rounds):
        for live in (few, many):
            tag = f"SCALE{live}R{round_number}"  # new call ids each round
            turns[live].append(_turns(service_url, plan, client_key, tag))
            client.swapdb(0, 1)  # in an instant, however many calls each holds
    client.flushall()
    for length in plan.trail_lengths:
        call_id = f"TRAIL-{length}"
        with client.pipeline(transaction=False) as pipe:
            write_call(pipe, call_id, *template.long_trail(call_id, length), 3600)
            pipe.execute()
        assert client.llen(call_key(call_id, "steps")) == length
    reads: dict[int, list[Latency]] = {length: [] for length in plan.trail_lengths}
    for _ in range(plan.rounds):
        for length in plan.trail_lengths:
            reads[length].append(_reads(service_url, plan, auditor_key, f"TRAIL-{length}"))
    client.flushall()
    return Scaling(
        turn_by_live_calls={live: _median_of(rounds) for live, rounds in turns.items()},
        steps_read_by_length={length: _median_of(rounds) for length, rounds in reads.items()},
    )


def _turns(service_url: str, plan: ScalingPlan, api_key: str, tag: str) -> Latency:
    out = run_loadgen(
        "calls",
        service_url + "/orchestrate",
        timeout=plan.turn_seconds + 60,
        concurrency=TURNS_IN_FLIGHT,
        seconds=plan.turn_seconds,
        warmup=1,
        tag=tag,
        api_key=api_key,
    )
    return Latency(out["step_ms"]["p50"], out["step_ms"]["p99"], out["errors"])


def _reads(service_url: str, plan: ScalingPlan, api_key: str, call_id: str) -> Latency:
    out = run_loadgen(
        "get",
        f"{service_url}/session/{call_id}/steps",
        timeout=120,
        requests=plan.reads,
        api_key=api_key,
    )
    return Latency(out["ms"]["p50"], out["ms"]["p99"], out["errors"])


def _median_of(rounds: list[Latency]) -> Latency:
    """The median p50 and p99 over the rounds, and every round's errors."""
    p50s = [r.p50_ms for r in rounds if r.p50_ms is not None]
    p99s = [r.p99_ms for r in rounds if r.p99_ms is not None]
    return Latency(
        statistics.median(p50s) if p50s else None,
        statistics.median(p99s) if p99s else None,
        sum(r.errors for r in rounds),
    )
