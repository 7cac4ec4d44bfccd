"""The load generator: a closed loop of whole calls, run in its own process, answering in JSON.

`calls`: N calls in flight, each a fresh call id walking the five stages in order; only steps
and calls that finish inside the measured window count, and when the window closes every
worker finishes the call it is in (so every completed call has its whole trail) and stops.
Given several --url, each turn goes to one of them at random, as a load balancer in front of
several service processes would send it.
`stub`: the same loop of single SendMessage requests straight at the stub agent, to show that
this generator can go much faster than the service it measures.
`get`: one GET at a time, N times, for the latency of a read endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from processes import cpu_seconds, machine_busy_seconds

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

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what[:300])


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99 in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "p90": None, "p99": None}
    pick = lambda q: ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]  # noqa: E731
    return {name: pick(q) * 1000 for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    async with http.post(url, data=body, headers=headers) as answer:
        return answer.status, await answer.read()


def _turn_error(status: int, body: bytes) -> str | None:
    """Why a turn failed, or None: an HTTP status other than 200, or status "error" inside."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        if orjson.loads(body).get("status") == "error":
            return f"status error: {body[:200]!r}"
    except (orjson.JSONDecodeError, AttributeError):
        return f"not JSON: {body[:200]!r}"
    return None


async def _walk_calls(
    http: aiohttp.ClientSession,
    urls: list[str],
    headers: dict[str, str],
    name: str,
    window: Window,
    tally: Tally,
) -> None:
    """One worker: whole calls, one after another, until the window closes."""
    number = 0
    while time.monotonic() < window.end:
        number += 1
        call_id = f"{name}-{number}"
        call_started = time.monotonic()
        served_by: set[str] = set()
        for intent, words in CALL_TURNS:
            body = orjson.dumps(
                {
                    "call_identify_id": call_id,
                    "account_id": ACCOUNT_ID,
                    "eci": "ECI-BENCH",
                    "input_message": words,
                    "intent": intent,
                }
            )
            url = random.choice(urls)
            served_by.add(url)
            started = time.monotonic()
            try:
                status, answer = await _post(http, url, body, headers)
                failure = _turn_error(status, answer)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            finished = time.monotonic()
            tally.requests += 1
            if failure:
                tally.error(failure)
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
        try:
            status, answer = await _post(http, url, body, {"A2A-Version": "1.0"})
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, answer = 0, f"{type(exc).__name__}: {exc}".encode()
        finished = time.monotonic()
        tally.requests += 1
        if status != 200 or b'"result"' not in answer:
            tally.error(f"HTTP {status}: {answer[:200]!r}")
        elif window.holds(finished):
            tally.step_sec.append(finished - started)


def _session(concurrency: int) -> aiohttp.ClientSession:
    # One pooled connection per call in flight; keep-alive shorter than uvicorn's 5 s.
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=2.0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


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
    async with _session(args.concurrency) as http:
        workers = [
            _walk_calls(http, args.url, headers, f"{args.tag}-{i}", window, tally)
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
        "steps": len(tally.step_sec),
        "calls": len(tally.call_sec),
        "step_ms": percentiles_ms(tally.step_sec),
        "call_ms": percentiles_ms(tally.call_sec),
        "requests": tally.requests,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
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
    async with _session(1) as http:
        for number in range(args.requests + 10):
            started = time.monotonic()
            async with http.get(args.url[0], headers=headers) as answer:
                body = await answer.read()
            elapsed = time.monotonic() - started
            if answer.status != 200:
                tally.error(f"HTTP {answer.status}: {body[:200]!r}")
            elif number >= 10:
                tally.step_sec.append(elapsed)
    return {"ms": percentiles_ms(tally.step_sec), "errors": tally.errors, "bytes": len(body)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["calls", "stub", "get"])
    parser.add_argument(
        "--url", required=True, action="append", help="repeat (calls): turns spread at random"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tag", default="BENCH")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--cpu-pids", default="", help="comma-separated pids to time")
    parser.add_argument(
        "--cpu-group", action="append", default=[], help="NAME=pid,pid,...: more pids to time"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop  # the generator must not be the bottleneck: use the faster loop if any

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run_gets(args) if args.mode == "get" else run_loop(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
