"""The load generator: a closed loop of whole calls, run in its own process, answering in JSON.

`calls`: N calls in flight, each a fresh call id walking the five stages in order; only steps
and calls that finish inside the measured window count, and when the window closes every
worker finishes the call it is in (so every completed call has its whole trail) and stops.
Given several --url, each turn goes to one of them at random, as a load balancer in front of
several service processes would send it.
`stub`: the same loop of single SendMessage requests straight at the stub agent, to show that
this generator can go much faster than the service it measures.
`get`: one GET at a time, N times, for the latency of a read endpoint.
`burst`: N first turns of N new calls, released at once over connections opened beforehand;
answers counted by status and error code.

In `calls`, a turn answered 503 `overloaded` is an error like any other unless --shed-pause-ms
is given: then the worker waits that long (-1: the answer's Retry-After) and sends the same
turn again, as a client told to come back later does; those answers are counted, and timed,
apart from the errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from processes import cpu_seconds, machine_busy_seconds

T = TypeVar("T")

# One whole call with an agent that never asks for input: one turn per stage.
CALL_TURNS = [
    ("greeting", "hello"),
    ("verify_identity", "I am the account holder"),
    ("refund_request", "I want a refund for order 7"),
    ("process_refund", "yes, refund it"),
    ("closing", "thanks, bye"),
]
ACCOUNT_ID = "ACC-BENCH"
MAX_ERROR_SAMPLES = 5


@dataclass
class Window:
    """The measured interval, on the monotonic clock."""

    start: float
    end: float

    def holds(self, moment: float) -> bool:
        return self.start <= moment <= self.end


@dataclass
class Tally:
    step_sec: list[float] = field(default_factory=list)
    call_sec: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    completed_calls: list[str] = field(default_factory=list)
    spread_calls: int = 0  # completed calls whose turns went to more than one URL
    error_kinds: Counter[str] = field(default_factory=Counter)  # "503 store_unavailable", ...
    shed_sec: list[float] = field(default_factory=list)  # 503 overloaded answers, when retried

    def error(self, what: str, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what[:300])


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99 in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p90": None, "p99": None}
    pick = lambda q: ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]  # noqa: E731
    return {name: pick(q) * 1000 for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer at all
    body: bytes
    retry_after_sec: float | None = None


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    try:
        async with http.post(url, data=body, headers=headers) as answer:
            retry_after = answer.headers.get("Retry-After")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            return Answer(answer.status, await answer.read(), seconds)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(0, f"{type(exc).__name__}: {exc}".encode())


def _turn_error(answer: Answer) -> tuple[str, str] | None:
    """Why a turn failed and its kind ("503 store_unavailable (MaxConnectionsError)",
    "200 status error", "no answer: ClientOSError"), or None for a 200 with a success inside."""
    status, body = answer.status, answer.body
    if status == 0:
        return body.decode(errors="replace"), "no answer: " + body.decode().partition(":")[0]
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status} not JSON: {body[:200]!r}", f"{status} not JSON"
    if status != 200:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        error = error if isinstance(error, dict) else {}
        kind = f"{status} {error.get('code', '?')}"
        if "reason" in error:
            kind += f" ({error['reason']})"
        return f"HTTP {status}: {body[:200]!r}", kind
    if not isinstance(parsed, dict) or parsed.get("status") == "error":
        return f"status error: {body[:200]!r}", "200 status error"
    return None


def _is_shed(answer: Answer) -> bool:
    return answer.status == 503 and b'"overloaded"' in answer.body


async def _walk_calls(
    http: aiohttp.ClientSession,
    urls: list[str],
    headers: dict[str, str],
    name: str,
    window: Window,
    tally: Tally,
    shed_pause_ms: float | None = None,
) -> None:
    """One worker: whole calls, one after another, until the window closes."""
    number = 0
    while time.monotonic() < window.end:
        number += 1
        call_id = f"{name}-{number}"
        call_started = time.monotonic()
        served_by: set[str] = set()
        for turn in range(len(CALL_TURNS)):
            body = _turn_body(call_id, turn)
            while True:
                url = random.choice(urls)
                started = time.monotonic()
                answer = await _post(http, url, body, headers)
                finished = time.monotonic()
                tally.requests += 1
                if shed_pause_ms is None or not _is_shed(answer):
                    break
                if window.holds(finished):
                    tally.shed_sec.append(finished - started)
                pause = shed_pause_ms / 1000
                if pause < 0:
                    pause = 1.0 if answer.retry_after_sec is None else answer.retry_after_sec
                await asyncio.sleep(pause)
            served_by.add(url)
            failure = _turn_error(answer)
            if failure:
                tally.error(*failure)
                break  # a broken call is abandoned; the next one starts fresh
            if window.holds(finished):
                tally.step_sec.append(finished - started)
        else:
            tally.completed_calls.append(call_id)
            tally.spread_calls += len(served_by) > 1
            if window.holds(finished):
                tally.call_sec.append(finished - call_started)


async def _ask_stub(
    http: aiohttp.ClientSession, url: str, name: str, window: Window, tally: Tally
) -> None:
    number = 0
    while time.monotonic() < window.end:
        number += 1
        message = {"messageId": f"{name}-{number}", "role": "ROLE_USER", "parts": [{"text": "hi"}]}
        rpc = {"jsonrpc": "2.0", "id": number, "method": "SendMessage"}
        body = orjson.dumps(rpc | {"params": {"message": message, "configuration": {}}})
        started = time.monotonic()
        answer = await _post(http, url, body, {"A2A-Version": "1.0"})
        finished = time.monotonic()
        tally.requests += 1
        if answer.status != 200 or b'"result"' not in answer.body:
            tally.error(f"HTTP {answer.status}: {answer.body[:200]!r}", str(answer.status))
        elif window.holds(finished):
            tally.step_sec.append(finished - started)


def _session() -> aiohttp.ClientSession:
    # No cap on connections (limit=0): a closed loop opens one per call in flight and never
    # more, so the generator never queues a turn of its own. Keep-alive shorter than uvicorn's
    # 5 s. A minute per answer: a slow agent behind a queue is measured, not cut off.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def run_loop(args: argparse.Namespace) -> dict[str, Any]:
    """`calls` or `stub`: a closed loop for warm-up + seconds, measuring after the warm-up."""
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    cpu_groups = {"server": _pids(args.cpu_pids), "load generator": [os.getpid()]}
    cpu_groups |= dict(_cpu_group(group) for group in args.cpu_group)
    tally = Tally()
    now = time.monotonic()
    window = Window(now + args.warmup, now + args.warmup + args.seconds)
    async with _session() as http:
        workers = [
            _walk_calls(
                http, args.url, headers, f"{args.tag}-{i}", window, tally, args.shed_pause_ms
            )
            if args.mode == "calls"
            else _ask_stub(http, args.url[0], f"{args.tag}-{i}", window, tally)
            for i in range(args.concurrency)
        ]
        cpu = asyncio.create_task(_cpu_over(window, cpu_groups))
        await asyncio.gather(*workers)
        cpu_sec = await cpu
    machine_busy_sec = cpu_sec.pop("machine")
    return {
        "window_sec": args.seconds,
        "window_monotonic": [
            window.start,
            window.end,
        ],  # CLOCK_MONOTONIC: the same in every process
        "steps": len(tally.step_sec),
        "calls": len(tally.call_sec),
        "step_ms": percentiles_ms(tally.step_sec),
        "call_ms": percentiles_ms(tally.call_sec),
        "requests": tally.requests,
        "errors": tally.errors,
        "error_kinds": dict(tally.error_kinds),
        "error_samples": tally.error_samples,
        "shed": len(tally.shed_sec),
        "shed_ms": percentiles_ms(tally.shed_sec),
        "completed_calls": tally.completed_calls,
        "spread_calls": tally.spread_calls,
        "cpu_sec": cpu_sec.pop("server"),
        "cpu_sec_by_group": cpu_sec,  # the load generator's own, and each --cpu-group
        "machine_busy_sec": machine_busy_sec,  # every process on the machine, ours or not
    }


def _pids(listed: str) -> list[int]:
    return [int(pid) for pid in listed.split(",") if pid]


def _cpu_group(option: str) -> tuple[str, list[int]]:
    name, _, listed = option.partition("=")
    return name, _pids(listed)


async def _cpu_over(window: Window, groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds each group of processes, and the whole machine, used during the window."""
    await asyncio.sleep(max(0.0, window.start - time.monotonic()))
    before = _cpu_now(groups)
    await asyncio.sleep(max(0.0, window.end - time.monotonic()))
    return {name: seconds - before[name] for name, seconds in _cpu_now(groups).items()}


def _cpu_now(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: cpu_seconds(pids) for name, pids in groups.items()} | {
        "machine": machine_busy_seconds()
    }


async def run_gets(args: argparse.Namespace) -> dict[str, Any]:
    """`get`: sequential GETs (after a few unmeasured ones) for a clean per-request latency."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    tally = Tally()
    async with _session() as http:
        for number in range(args.requests + 10):
            started = time.monotonic()
            async with http.get(args.url[0], headers=headers) as answer:
                body = await answer.read()
            elapsed = time.monotonic() - started
            if answer.status != 200:
                tally.error(f"HTTP {answer.status}: {body[:200]!r}", str(answer.status))
            elif number >= 10:
                tally.step_sec.append(elapsed)
    return {"ms": percentiles_ms(tally.step_sec), "errors": tally.errors, "bytes": len(body)}


def _turn_body(call_id: str, turn: int = 0) -> bytes:
    intent, words = CALL_TURNS[turn]
    return orjson.dumps(
        {
            "call_identify_id": call_id,
            "account_id": ACCOUNT_ID,
            "eci": "ECI-BENCH",
            "input_message": words,
            "intent": intent,
        }
    )


async def _open_connections(http: aiohttp.ClientSession, url: str, count: int) -> int:
    """`count` keep-alive connections to the server, pooled in `http`: as many GETs held open
    together until each has its answer's head, then read. Returns how many were open at once
    (fewer if the server refused some within 30 s)."""
    all_open = asyncio.Event()
    opened = 0

    async def hold() -> None:
        nonlocal opened
        async with http.get(url) as answer:
            opened += 1
            if opened == count:
                all_open.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_open.wait(), 30)
            await answer.read()

    await asyncio.gather(*(hold() for _ in range(count)), return_exceptions=True)
    return opened


async def run_burst(args: argparse.Namespace) -> dict[str, Any]:
    """`burst`: --turns first turns of as many new calls, released together once every one has a
    connection open (so the server sees them arrive at once, not as fast as TCP handshakes go)."""
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    url = args.url[0]
    bodies = [(f"{args.tag}-{n}", _turn_body(f"{args.tag}-{n}")) for n in range(args.turns)]
    answers: list[tuple[str, Answer, float]] = []
    go = asyncio.Event()

    async def turn(call_id: str, body: bytes) -> None:
        await go.wait()
        started = time.monotonic()
        answer = await _post(http, url, body, headers)
        answers.append((call_id, answer, time.monotonic() - started))

    async with _session() as http:
        opened = await _open_connections(http, url.rsplit("/", 1)[0] + "/healthz", args.turns)
        tasks = [asyncio.create_task(turn(call_id, body)) for call_id, body in bodies]
        await asyncio.sleep(0)  # every task runs up to go.wait() before the main task resumes
        released = time.monotonic()
        go.set()
        await asyncio.gather(*tasks)
        all_answered = time.monotonic() - released
    kinds: Counter[str] = Counter()
    samples: list[str] = []
    for _, answer, _ in answers:
        failure = _turn_error(answer)
        kinds[failure[1] if failure else "200 success"] += 1
        if failure and len(samples) < MAX_ERROR_SAMPLES:
            samples.append(failure[0][:300])
    ok = [(call_id, sec) for call_id, answer, sec in answers if _turn_error(answer) is None]
    return {
        "turns": args.turns,
        "connections_open": opened,
        "answers": dict(kinds),
        "error_samples": samples,
        "ms": percentiles_ms([sec for _, _, sec in answers]),
        "ok_ms": percentiles_ms([sec for _, sec in ok]),
        "all_answered_ms": all_answered * 1000,
        "completed_calls": [call_id for call_id, _ in ok],
    }


def add_common_options(parser: argparse.ArgumentParser, *, tag: str) -> None:
    """The flags every load generator takes: its report's tag, the key, the pids to time."""
    parser.add_argument("--tag", default=tag)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--cpu-pids", default="", help="comma-separated pids to time")
    parser.add_argument(
        "--cpu-group", action="append", default=[], help="NAME=pid,pid,...: more pids to time"
    )


def fastest_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """uvloop's run when installed, else asyncio's: the generator must not be the bottleneck."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["calls", "stub", "get", "burst"])
    parser.add_argument(
        "--url", required=True, action="append", help="repeat (calls): turns spread at random"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--turns", type=int, default=1000, help="burst: turns released at once")
    parser.add_argument(
        "--shed-pause-ms",
        type=float,
        default=None,
        help="calls: retry a turn answered 503 overloaded after this pause (-1: Retry-After)",
    )
    add_common_options(parser, tag="BENCH")
    args = parser.parse_args(argv)
    runner = fastest_runner()
    runs = {"get": run_gets, "burst": run_burst}
    result = runner(runs.get(args.mode, run_loop)(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
