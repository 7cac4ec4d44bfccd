"""The console's call search (service/call_search.py) over N live calls in a private
redis-server, against the floor: the same keys read bare with redis-py (SCAN + MGET, or one GET),
nothing decoded. Medians of several runs, each search and its floor timed in turn in every run.

    python bench/call_search.py                   # 1,000 and 10,000 calls, 7 runs each
    python bench/call_search.py --calls 500 --runs 3

The calls are built with the service's own code (core/transitions.py over the default flow
table): each has walked one to six turns of a happy path, its state and its steps stored as a
turn stores them, started within the last hour, spread over 1 account in 20 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from processes import free_port, start_redis, stop

from orchestrator_flows.core.call_search import CallQuery
from orchestrator_flows.core.flows import FlowConfig, load_flows
from orchestrator_flows.core.models import CallState, OrchestrateRequest, StepRecord
from orchestrator_flows.core.records import STATE, STEP
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.core.routing import plan_turn
from orchestrator_flows.core.transitions import TurnContext, apply_outcome, new_call
from orchestrator_flows.infra.redis_store import (
    SCAN_BATCH,
    RedisStore,
    call_keys,
    connect,
    disconnect,
    state_keys_pattern,
)
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from orchestrator_flows.ops.runtime import tune_garbage_collector
from orchestrator_flows.service.call_search import search_calls

PREFIX = "orch"
PAGE = 50
# What the caller wants at INTENT_CAPTURE, and the FULFILLMENT intent that goes with it.
ERRANDS = [
    ("refund_request", "process_refund"),
    ("billing_inquiry", "resolve_billing"),
    ("booking_request", "confirm_booking"),
    ("complaint", "resolve_complaint"),
    ("account_inquiry", "update_account"),
    ("balance_inquiry", "report_balance"),
]


def happy_path(errand: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("greeting", "hello, I need some help"),
        ("verify_identity", "I am the account holder"),
        ("otp_verify", "the code is 123456"),
        (errand[0], "it is about my last order"),
        (errand[1], "yes, go ahead please"),
        ("closing", "thanks, bye"),
    ]


def recorded_call(
    flows: FlowConfig, call_id: str, account_id: str, turns: int, started: datetime
) -> tuple[CallState, list[StepRecord]]:
    """A call after `turns` turns of a happy path, as the service would have stored it."""
    state: CallState | None = None
    steps: list[StepRecord] = []
    now = started
    for intent, words in happy_path(random.choice(ERRANDS))[:turns]:
        turn = OrchestrateRequest(
            call_identify_id=call_id,
            account_id=account_id,
            eci="ECI-1",
            input_message=words,
            intent=intent,
        )
        state = state or new_call(turn, now)
        plan = plan_turn(flows, state, turn)
        finished = now + timedelta(milliseconds=random.uniform(50, 900))
        context = TurnContext(turn, plan, f"msg-{call_id}-{len(steps)}", now, finished)
        state, step = apply_outcome(state, context, reply_to(intent, call_id))
        steps.append(step)
        now = finished + timedelta(seconds=random.uniform(2, 30))
    assert state is not None
    return state, steps


def reply_to(intent: str, call_id: str) -> AgentReply:
    if intent == "verify_identity":  # the auth agent asks for the one-time code
        asks = "Please tell me the one-time code we sent you."
        return AgentReply(asks, "task", task_id=f"t-{call_id}", task_state="input_required")
    return AgentReply(f"Done: {intent}.", "task", task_id=f"t-{call_id}", task_state="completed")


def fill(client: redis.Redis, flows: FlowConfig, count: int) -> list[str]:
    """`count` calls written as a turn writes them (state, steps, their byte count)."""
    random.seed(count)
    now = datetime.now(UTC)
    call_ids = [f"CALL-{n:06d}" for n in range(count)]
    for start in range(0, count, 1000):
        with client.pipeline(transaction=False) as pipe:
            for call_id in call_ids[start : start + 1000]:
                started = now - timedelta(seconds=random.uniform(0, 3600))
                account = f"ACC-{random.randrange(max(1, count // 20))}"
                state, steps = recorded_call(flows, call_id, account, random.randint(1, 6), started)
                keys = call_keys(PREFIX, call_id)
                written = [STEP.write(step) for step in steps]
                pipe.set(keys.state, STATE.write(state), ex=3600)
                pipe.rpush(keys.steps, *written)
                pipe.expire(keys.steps, 3600)
                pipe.set(keys.size, sum(map(len, written)), ex=3600)
            pipe.execute()
    return call_ids


async def floor_scan(client: redis.Redis) -> int:
    """SCAN the state keys and MGET them, as live_calls does, without decoding a byte."""
    keys = [key async for key in client.scan_iter(state_keys_pattern(PREFIX), count=SCAN_BATCH)]
    read = 0
    for start in range(0, len(keys), SCAN_BATCH):
        read += len(await client.mget(keys[start : start + SCAN_BATCH]))
    return read


async def elapsed_ms(run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) * 1000


async def longest_stall_ms(run: Callable[[], Awaitable[object]]) -> float:
    """The longest the event loop was held during `run`: what a turn served by the same worker
    could wait. A ticker asks for the loop every millisecond and notes its longest gap."""
    gaps: list[float] = [0.0]
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    await run()
    done.set()
    await ticker
    return max(gaps) * 1000


async def paired_medians(
    search: Callable[[], Awaitable[object]], floor: Callable[[], Awaitable[object]], runs: int
) -> tuple[float, float, float]:
    """Medians of the search's time, the floor's and their ratio, the two timed in turn in
    each run, so that a busy machine slows both alike."""
    pairs = [(await elapsed_ms(search), await elapsed_ms(floor)) for _ in range(runs)]
    searched, floors = zip(*pairs, strict=True)
    ratios = [s / f for s, f in pairs]
    return statistics.median(searched), statistics.median(floors), statistics.median(ratios)


async def measure(url: str, call_ids: list[str], runs: int) -> None:
    tune_garbage_collector()  # as the service does once started
    client = connect(url, 10.0)
    store = RedisStore(client, prefix=PREFIX, ttl_sec=3600, lease_sec=5, max_call_bytes=1 << 20)
    limit = len(call_ids)
    some_call = call_ids[len(call_ids) // 2]
    state = STATE.read(await client.get(call_keys(PREFIX, some_call).state), some_call)
    queries = {
        "no filter, page 1": CallQuery(),
        "account filter": CallQuery(account_id=state["account_id"]),
        "call id": CallQuery(call_id=some_call),
    }
    floors = {
        "no filter, page 1": lambda: floor_scan(client),
        "account filter": lambda: floor_scan(client),
        "call id": lambda: client.get(call_keys(PREFIX, some_call).state),
    }
    try:
        for name, query in queries.items():
            page = await search_calls(store, query, offset=0, limit=PAGE, scan_limit=limit)

            async def search(query: CallQuery = query) -> None:
                await search_calls(store, query, offset=0, limit=PAGE, scan_limit=limit)

            searched, floor, ratio = await paired_medians(search, floors[name], runs)
            stall = statistics.median([await longest_stall_ms(search) for _ in range(runs)])
            print(
                f"  {name:<18} {searched:9.2f} ms   floor {floor:8.2f} ms   "
                f"{ratio:6.1f}x   loop held {stall:6.2f} ms at most"
                f"   ({page.total} found, {len(page.rows)} on the page)"
            )
    finally:
        await disconnect(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    flows = load_flows(DEFAULT_FLOWS_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_redis(port, Path(tmp))
        url = f"redis://127.0.0.1:{port}/0"
        try:
            with redis.Redis.from_url(url) as client:
                for count in args.calls:
                    client.flushall()
                    call_ids = fill(client, flows, count)
                    keys = client.dbsize()
                    print(
                        f"{count} calls ({keys} keys), medians of {args.runs} runs"
                        " (the ratio: of each run's pair)"
                    )
                    asyncio.run(measure(url, call_ids, args.runs))
        finally:
            stop(server)


if __name__ == "__main__":
    main()
