"""What REDIS_WAIT_REPLICAS=1 costs a turn: `python bench/replica_wait.py` prints one table.

Starts a redis-server primary with one replica on loopback and times the service's own two
store operations (redis_store.RedisStore: begin_turn, then commit_step) for whole five-step
calls, with and without waiting for the replica, in alternating rounds. Sequential, one call
at a time: this is the latency a turn pays, not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from processes import describe_machine, free_ports, start_redis, stop_all

from orchestrator_flows.core.models import CallState, StepRecord
from orchestrator_flows.infra.redis_store import RedisStore, ReplicaWait, connect

STAMP = "2026-11-23T00:00:00Z"
# A step shaped like the service's own (a refund request at INTENT_CAPTURE).
STEP = {
    "intent_flow_id": 3, "flow_label": "INTENT_CAPTURE", "intent": "refund_request",
    "intent_source": "client", "intent_confidence": None, "intent_alternatives": [],
    "no_match_reason": None, "intent_classifier": None,
    "input_message": "I want a refund for order 7", "agent_role": "refund",
    "a2a_agent_url": "http://127.0.0.1:9000/refund/", "fallback": False,
    "response_status": "success",
    "response_data": {"text": "I can refund order 7 to your card ending 1111.", "data": {}},
    "error": None, "a2a_message_id": "5d0c7d2e-2f3b-4a51-9a4e-0d6e1f3b2a10", "attempts": 1,
    "idempotency_key": None, "api_key_id": None, "a2a_task_id": None, "a2a_context_id": None,
    "a2a_task_state": None, "duration_ms": 12.5, "timestamp": STAMP,
}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cost of waiting for a replica per step.")
    parser.add_argument("--calls", type=int, default=400, help="five-step calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each setting")
    return parser.parse_args(argv)


async def one_round(store: RedisStore, calls: int, tag: str) -> list[float]:
    """Milliseconds per commit_step, over `calls` whole calls."""
    timings = []
    for number in range(calls):
        call_id = f"{tag}-{number}"
        state: CallState = {
            "call_identify_id": call_id, "account_id": "ACC-BENCH", "eci": "ECI-1",
            "current_flow_id": 1, "completed_flows": [], "is_complete": False, "step_count": 0,
            "error_steps": 0, "created_at": STAMP, "updated_at": STAMP, "pending_tasks": {},
            "stages": {}, "session_summary": None, "no_match_streak": 0, "escalation": None,
        }  # fmt: skip
        for seq in range(1, 6):
            start = await store.begin_turn(call_id)
            step: StepRecord = {"seq": seq, **STEP}  # type: ignore[typeddict-item]
            began = time.perf_counter()
            await store.commit_step(start.lease, seq - 1, state, step)
            timings.append((time.perf_counter() - began) * 1000)
    return timings


async def in_sync(replica_url: str, deadline_sec: float = 30.0) -> None:
    """Until the replica has its primary's data: before that, WAIT can only time out. A replica
    still not linked at the deadline is an error that says what it reported."""
    client = connect(replica_url, 1.0)
    info: dict = {}
    try:
        async with asyncio.timeout(deadline_sec):
            while (info := await client.info("replication")).get("master_link_status") != "up":
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise SystemExit(f"the replica did not sync within {deadline_sec:g} s: {info}") from None
    finally:
        await client.aclose()


async def measure(url: str, replica_url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    await in_sync(replica_url)
    client = connect(url, 1.0)
    settings = {"no wait": ReplicaWait(), "WAIT 1 replica": ReplicaWait(1, 100)}
    unconfirmed: list[str] = []
    stores = {
        name: RedisStore(
            client, prefix="bench", ttl_sec=60, lease_sec=5, max_call_bytes=1 << 20,
            replica_wait=wait,
            on_unreplicated=lambda call_id, _: unconfirmed.append(call_id),
        )
        for name, wait in settings.items()
    }  # fmt: skip
    medians: dict[str, list[float]] = {name: [] for name in stores}
    for number in range(args.rounds):
        for name, store in stores.items():
            timings = await one_round(store, args.calls, f"{name[:2]}{number}")
            medians[name].append(statistics.median(timings))
        await client.flushall()
    await client.aclose()
    # A step the replica did not confirm within 100 ms would time the timeout, not the wait.
    print(f"steps no replica confirmed in time: {len(unconfirmed)}")
    return medians


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"command: python bench/replica_wait.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(describe_machine())
    with tempfile.TemporaryDirectory(prefix="orch-wait-") as tmp:
        primary_port, replica_port = free_ports(2)
        # Each in a directory of its own: the primary's full-sync RDB file and the replica's
        # received one must not meet under the same name.
        (Path(tmp) / "primary").mkdir()
        (Path(tmp) / "replica").mkdir()
        primary = start_redis(primary_port, Path(tmp) / "primary")
        replica = start_redis(replica_port, Path(tmp) / "replica", replica_of=primary_port)
        try:
            urls = (f"redis://127.0.0.1:{port}/0" for port in (primary_port, replica_port))
            medians = asyncio.run(measure(*urls, args))
        finally:
            stop_all([replica, primary])
    print(f"\n{args.rounds} alternating rounds of {args.calls} five-step calls, one at a time")
    print(f"{'commit_step ms':<18}{'median':>10}{'min-max of round medians':>28}")
    for name, values in medians.items():
        spread = f"{min(values):.3f}-{max(values):.3f}"
        print(f"{name:<18}{statistics.median(values):>10.3f}{spread:>28}")
    base, waited = (statistics.median(v) for v in medians.values())
    print(f"\nWAIT adds {(waited - base) * 1000:.0f} µs per step ({waited / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
