"""Benchmark of the orchestrator against its floor: `python bench/run.py` prints one table.

Starts a private redis-server, the stub agent, the service (`uvicorn main:app`) and the floor
(a raw ASGI app doing the same Redis and agent I/O), then alternates closed-loop rounds of
whole calls between the service and the floor, checks every completed call's trail in Redis,
and measures how a step's cost grows with Redis and with the call. Exit status 1 if a turn
failed or a trail is wrong; the performance targets are reported, not enforced (timings on a
shared machine are too noisy to fail on).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import profiling
import redis
from options import add_round_options, print_run_lines
from processes import (
    BENCH,
    BenchError,
    clean_environment,
    free_port,
    process_tree,
    run_loadgen,
    service_environment,
    start_redis,
    start_uvicorn,
    stop,
)
from redis_view import CallTemplate, TrailCheck, check_trails, used_memory
from report import (
    Results,
    RoundResult,
    print_calibration,
    print_scaling,
    print_table,
    print_targets,
    print_trail,
)
from scaling import ScalingPlan, measure_scaling


@dataclass(frozen=True)
class Stack:
    redis: redis.Redis
    stub_url: str
    service_url: str
    service_pid: int
    floor_url: str
    floor_pid: int
    client_key: str
    auditor_key: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the orchestrator against its floor.")
    add_round_options(parser, rounds=5, rounds_help="rounds each of service and floor")
    parser.add_argument("--workers", type=int, default=1, help="service uvicorn workers")
    parser.add_argument("--live-calls", type=int, default=100_000, help="Redis size to compare")
    parser.add_argument("--long-trail", type=int, default=200, help="steps of the long call")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more service round under py-spy: where the service's CPU goes",
    )
    parser.add_argument("--skip-scaling", action="store_true", help="no cost-growth checks")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup, args.rounds, args.live_calls = 2.0, 0.5, 1, 2_000
    return args


@contextmanager
def running_stack(args: argparse.Namespace, tmp: Path) -> Iterator[Stack]:
    """Redis, the stub, the service and the floor, each in its own process, stopped on exit."""
    with ExitStack() as stack:
        redis_port, stub_port, service_port, floor_port = (free_port() for _ in range(4))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        stack.callback(stop, start_redis(redis_port, tmp))
        client = stack.enter_context(redis.Redis.from_url(redis_url))
        stub_url = f"http://127.0.0.1:{stub_port}/"
        env = clean_environment() | {"STUB_URL": stub_url}
        stub = start_uvicorn(
            "stub_agent:app", stub_port, env=env, log_file=tmp / "stub.log", app_dir=BENCH
        )
        stack.callback(stop, stub)
        client_key, auditor_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        api_keys = f"client:{client_key},auditor:{auditor_key}"
        env = service_environment(redis_url, stub_url, api_keys)
        service = start_uvicorn(
            "main:app",
            service_port,
            env=env,
            log_file=tmp / "service.log",
            workers=args.workers,
            cwd=args.service_dir,
        )
        stack.callback(stop, service)
        env = clean_environment() | {"FLOOR_REDIS_URL": redis_url, "FLOOR_AGENT_URL": stub_url}
        # The floor imports the service's Lua scripts: from the same directory as the service.
        floor = start_uvicorn(
            "floor:app",
            floor_port,
            env=env,
            log_file=tmp / "floor.log",
            app_dir=BENCH,
            cwd=args.service_dir,
        )
        stack.callback(stop, floor)
        yield Stack(
            client,
            stub_url,
            f"http://127.0.0.1:{service_port}",
            service.pid,
            f"http://127.0.0.1:{floor_port}",
            floor.pid,
            client_key,
            auditor_key,
        )


def measure_round(
    stack: Stack, url: str, pid: int, args: argparse.Namespace, tag: str
) -> tuple[RoundResult, list[str]]:
    """One closed-loop round over an empty Redis; also returns the completed call ids."""
    stack.redis.flushall()
    before = used_memory(stack.redis)
    out = run_loadgen(
        "calls",
        url + "/orchestrate",
        timeout=args.warmup + args.seconds + 120,
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        tag=tag,
        api_key=stack.client_key,
        cpu_pids=",".join(str(p) for p in process_tree(pid)),
    )
    growth = used_memory(stack.redis) - before
    return RoundResult.from_loadgen(out, growth), out["completed_calls"]


def run_benchmark(stack: Stack, args: argparse.Namespace) -> Results:
    results = Results()
    calibration = run_loadgen(
        "stub",
        stack.stub_url,
        timeout=60,
        concurrency=args.concurrency,
        seconds=min(args.seconds, 5.0),
        warmup=min(args.warmup, 1.0),
    )
    results.stub_requests_per_sec = calibration["steps"] / calibration["window_sec"]
    trails, template = TrailCheck(), None
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: service ...", end="", flush=True)
        result, completed = measure_round(
            stack, stack.service_url, stack.service_pid, args, f"S{number}"
        )
        results.service.append(result)
        check_trails(stack.redis, completed, trails)
        if completed and template is None:
            template = CallTemplate.read(stack.redis, completed[0])
            results.call_key_bytes = template.memory_usage(stack.redis)
        print(f" {result.steps_per_sec:.0f} steps/s; floor ...", end="", flush=True)
        result, _ = measure_round(stack, stack.floor_url, stack.floor_pid, args, f"F{number}")
        results.floor.append(result)
        print(f" {result.steps_per_sec:.0f} steps/s", flush=True)
    results.trail_calls, results.trail_passed = trails.calls, trails.passed
    results.trail_failures = trails.failures
    if not args.skip_scaling and template is not None:
        print("cost growth ...", flush=True)
        plan = ScalingPlan(
            live_calls=(10, args.live_calls),
            trail_lengths=(5, args.long_trail),
            turn_seconds=1.0 if args.smoke else 5.0,
            reads=30 if args.smoke else 300,
            rounds=2 if args.smoke else 3,
        )
        keys = (stack.client_key, stack.auditor_key)
        results.scaling = measure_scaling(stack.redis, stack.service_url, template, plan, keys)
    if args.profile:
        print("profiling a service round with py-spy ...", flush=True)
        results.profile = profile_round(stack, args)
    return results


def profile_round(stack: Stack, args: argparse.Namespace) -> list[str]:
    """One unreported service round with py-spy sampling its measured window."""
    # Kept after the run, for a flame graph (e.g. inferno / speedscope read this format).
    output = Path(tempfile.gettempdir()) / "orch-bench-service-profile.raw"
    output.unlink(missing_ok=True)
    spies: list[subprocess.Popen] = []
    # Sample only the measured window: start py-spy once the warm-up is over.
    timer = threading.Timer(
        args.warmup,
        lambda: spies.append(profiling.record(stack.service_pid, args.seconds, output)),
    )
    timer.start()
    result, _ = measure_round(stack, stack.service_url, stack.service_pid, args, "PROFILE")
    timer.join()
    for spy in spies:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0 or not output.exists():
            return [f"py-spy failed (exit {spy.returncode}): {err.strip()[-500:]}"]
    steps = round(result.steps_per_sec * args.seconds)
    return [*profiling.summary(output.read_text(), steps), f"(raw stacks: {output})"]


def print_header(args: argparse.Namespace) -> None:
    print_run_lines(args.service_dir)
    print(
        f"setup: service {args.workers} worker(s), floor 1 worker, {args.concurrency} calls"
        f" in flight, {args.rounds} rounds x {args.seconds:g} s (+{args.warmup:g} s warm-up) each"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args)
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp,
            running_stack(args, Path(tmp)) as stack,
        ):
            results = run_benchmark(stack, args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print()
    print_calibration(results)
    print()
    print_table(results)
    print()
    print_trail(results)
    if results.scaling:
        print()
        print_scaling(results.scaling)
    if results.profile:
        print()
        print("where the service's time goes (py-spy, one extra round, not in the table above):")
        print("\n".join(results.profile))
    print()
    print_targets(results)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0 if results.errors == 0 and results.trail_ok else 1


if __name__ == "__main__":
    sys.exit(main())
