"""How the cost of a step grows: turns with few vs many live calls, reads of short vs long trails.

Both run against the service alone, at low concurrency, so that the figures show the work a
bigger Redis or a longer call adds rather than queueing.
"""

from __future__ import annotations

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


def measure_scaling(
    client: redis.Redis,
    service_url: str,
    template: CallTemplate,
    plan: ScalingPlan,
    keys: tuple[str, str],
) -> Scaling:
    """keys: the client's and the auditor's API keys."""
    client_key, auditor_key = keys
    scaling = Scaling()
    for live in plan.live_calls:
        client.flushall()
        fill_live_calls(client, template, live)
        out = run_loadgen(
            "calls",
            service_url + "/orchestrate",
            timeout=plan.turn_seconds + 60,
            concurrency=TURNS_IN_FLIGHT,
            seconds=plan.turn_seconds,
            warmup=1,
            tag=f"SCALE{live}",
            api_key=client_key,
        )
        scaling.turn_by_live_calls[live] = Latency(
            out["step_ms"]["p50"], out["step_ms"]["p99"], out["errors"]
        )
    client.flushall()
    for length in plan.trail_lengths:
        call_id = f"TRAIL-{length}"
        with client.pipeline(transaction=False) as pipe:
            write_call(pipe, call_id, *template.long_trail(call_id, length), 3600)
            pipe.execute()
        assert client.llen(call_key(call_id, "steps")) == length
        out = run_loadgen(
            "get",
            f"{service_url}/session/{call_id}/steps",
            timeout=120,
            requests=plan.reads,
            api_key=auditor_key,
        )
        scaling.steps_read_by_length[length] = Latency(
            out["ms"]["p50"], out["ms"]["p99"], out["errors"]
        )
    client.flushall()
    return scaling
