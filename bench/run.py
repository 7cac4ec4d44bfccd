"""Benchmark of the orchestrator against its floor: `python bench/run.py` prints one table.

Starts a private redis-server, the stub agent, the service (`uvicorn main:app`) and the floor
(a raw ASGI app doing the same Redis and agent I/O), then alternates closed-loop rounds of
whole calls between the service and the floor, checks every completed call's trail in Redis,
and measures how a step's cost grows with Redis and with the call. Exit status 1 if a turn
failed or a trail is wrong; the performance targets are reported, not enforced (timings on a
shared machine are too noisy to fail on).

With --agent-delay-ms the stub agent answers each turn that much later, as a language model
does: then nearly every call in flight is a turn waiting on the agent, and the table adds the
servers' memory (RSS) per turn in flight and the slow-agent targets of issue 22.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import profiling
from options import add_round_options, add_slow_agent_options, print_run_lines
from processes import BenchError, RssSampler, process_tree, rss_bytes, run_loadgen
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
from stack import Stack, running_stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the orchestrator against its floor.")
    add_round_options(parser, rounds=5, rounds_help="rounds each of service and floor")
    add_slow_agent_options(parser)
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


def measure_round(
    stack: Stack, url: str, pid: int, args: argparse.Namespace, tag: str
) -> tuple[RoundResult, list[str]]:
    """One closed-loop round over an empty Redis; also returns the completed call ids. The
    server's RSS is the median of samples taken during the measured window."""
    stack.redis.flushall()
    before = used_memory(stack.redis)
    with RssSampler(pid) as rss:
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
    result = RoundResult.from_loadgen(out, growth)
    result = dataclasses.replace(result, rss_bytes=rss.median_between(*out["window_monotonic"]))
    return result, out["completed_calls"]


def idle_rss(stack: Stack, url: str, pid: int, tag: str) -> int:
    """The server's RSS with nothing in flight, after one whole call (so what the first turn
    loads or caches is not counted per turn in flight)."""
    run_loadgen(
        "calls",
        url + "/orchestrate",
        timeout=120,
        concurrency=1,
        seconds=0.01,
        warmup=0,
        tag=tag,
        api_key=stack.client_key,
    )
    return rss_bytes(process_tree(pid))


def run_benchmark(stack: Stack, args: argparse.Namespace) -> Results:
    results = Results(concurrency=args.concurrency, agent_delay_ms=args.agent_delay_ms)
    results.service_idle_rss = idle_rss(stack, stack.service_url, stack.service_pid, "IDLE-S")
    results.floor_idle_rss = idle_rss(stack, stack.floor_url, stack.floor_pid, "IDLE-F")
    seconds, warmup = min(args.seconds, 5.0), min(args.warmup, 1.0)
    if args.agent_delay_ms:
        # The stub answers a closed loop in waves, one per delay: a window of whole delays
        # whose edges fall between waves counts each wave once.
        delay = args.agent_delay_ms / 1000
        seconds, warmup = max(2, math.ceil(seconds / delay)) * delay, 1.5 * delay
    calibration = run_loadgen(
        "stub",
        stack.stub_url,
        timeout=seconds + warmup + 60,
        concurrency=args.concurrency,
        seconds=seconds,
        warmup=warmup,
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
    print_run_lines(args.service_dir, args.service_env)
    print(
        f"setup: service {args.workers} worker(s), floor 1 worker, {args.concurrency} calls"
        f" in flight, {args.rounds} rounds x {args.seconds:g} s (+{args.warmup:g} s warm-up) each,"
        f" agent answers after {args.agent_delay_ms} ms"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args)
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp,
            running_stack(args, Path(tmp), args.concurrency) as stack,
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
