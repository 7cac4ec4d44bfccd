"""Streaming turns (issue 23): the delay the service adds to an agent's first chunk and to the
end of its answer. `python bench/stream.py` prints one table.

Starts a private redis-server, the streaming stub agent (bench/stream_agent.py: a Task at once,
the first chunk after --first-chunk-ms, then --chunks more --chunk-gap-ms apart, then
COMPLETED) and the service (`uvicorn main:app`, every agent URL pointed at the stub), each in its
own process. Each round runs bench/stream_loadgen.py twice, in its own process: the floor
(--concurrency streams straight from the stub: time to the first chunk and to the stream's
end) and the service (as many calls in flight, each turn `POST /orchestrate` with
`Accept: text/event-stream`: time to the first `chunk` event and to the `turn` event). The
service's figure minus the floor's of the same round is the delay the service adds; the table
quotes the median over rounds. Every completed call's trail is checked in Redis.
Exit status 1 if a request failed or a trail is wrong; the targets are reported, not enforced
(timings on a shared machine are too noisy to fail on).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import profiling
import redis
from options import add_round_options, add_service_options, print_run_lines
from processes import (
    BENCH,
    BenchError,
    clean_environment,
    free_ports,
    machine_busy_seconds,
    process_tree,
    run_loadgen,
    service_environment,
    start_redis,
    start_uvicorn,
    stop,
)
from redis_view import TrailCheck, check_trails
from report import print_trail_check

# Issue 23: what the service may add to the agent alone, in ms.
ADDED_P50_TARGET_MS = 2.0
ADDED_P99_TARGET_MS = 10.0
FIGURES = [  # (row label, the load generator's key, percentile)
    ("answer head p50 ms", "head_ms", "p50"),
    ("answer head p99 ms", "head_ms", "p99"),
    ("first chunk p50 ms", "first_ms", "p50"),
    ("first chunk p99 ms", "first_ms", "p99"),
    ("end p50 ms", "end_ms", "p50"),
    ("end p99 ms", "end_ms", "p99"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(parser, rounds=3, rounds_help="rounds each of floor and service")
    add_service_options(parser)
    parser.add_argument("--first-chunk-ms", type=float, default=200.0, help="agent's first chunk")
    parser.add_argument("--chunks", type=int, default=20, help="chunks after the first")
    parser.add_argument("--chunk-gap-ms", type=float, default=20.0, help="between chunks")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=None,
        metavar="CORES",
        help="before each round, wait until the rest of the machine keeps at most this many"
        " cores busy (a shared machine), up to --quiet-wait-sec",
    )
    parser.add_argument("--quiet-wait-sec", type=float, default=120.0)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more service round under py-spy: where the service's CPU goes",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup, args.rounds, args.concurrency = 1.5, 0.5, 1, 8
        args.first_chunk_ms, args.chunks, args.chunk_gap_ms = 20.0, 4, 5.0
    return args


def stream_sec(args: argparse.Namespace) -> float:
    """How long the stub takes over one stream, first event to last."""
    return (args.first_chunk_ms + args.chunks * args.chunk_gap_ms) / 1000


@dataclass(frozen=True)
class StreamStack:
    redis: redis.Redis
    redis_pid: int
    agent_url: str
    agent_pid: int
    service_url: str
    service_pid: int
    client_key: str


@contextmanager
def running_stack(args: argparse.Namespace, tmp: Path) -> Iterator[StreamStack]:
    """Redis, the streaming stub and the service, each in its own process, stopped on exit."""
    with ExitStack() as stack:
        redis_port, agent_port, service_port = free_ports(3)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis_server = start_redis(redis_port, tmp)
        stack.callback(stop, redis_server)
        client = stack.enter_context(redis.Redis.from_url(redis_url))
        agent_url = f"http://127.0.0.1:{agent_port}/"
        env = clean_environment() | {
            "STREAM_URL": agent_url,
            "STREAM_FIRST_MS": str(args.first_chunk_ms),
            "STREAM_CHUNKS": str(args.chunks),
            "STREAM_GAP_MS": str(args.chunk_gap_ms),
        }
        agent = start_uvicorn(
            "stream_agent:app", agent_port, env=env, log_file=tmp / "agent.log", app_dir=BENCH
        )
        stack.callback(stop, agent)
        client_key = secrets.token_urlsafe(32)
        env = service_environment(redis_url, agent_url, f"client:{client_key}")
        service = start_uvicorn(
            "main:app",
            service_port,
            env=env | dict(args.service_env),
            log_file=tmp / "service.log",
            workers=args.workers,
            cwd=args.service_dir,
        )
        stack.callback(stop, service)
        yield StreamStack(
            client,
            redis_server.pid,
            agent_url,
            agent.pid,
            f"http://127.0.0.1:{service_port}",
            service.pid,
            client_key,
        )


def floor_round(stack: StreamStack, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    return _loadgen(
        "agent",
        stack.agent_url,
        args,
        tag=tag,
        chunks=args.chunks + 1,
        cpu_pids=str(stack.agent_pid),
        cpu_group=[f"redis={stack.redis_pid}"],
    )


def service_round(stack: StreamStack, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    stack.redis.flushall()
    return _loadgen(
        "turns",
        stack.service_url + "/orchestrate",
        args,
        tag=tag,
        api_key=stack.client_key,
        cpu_pids=",".join(str(pid) for pid in process_tree(stack.service_pid)),
        cpu_group=[f"stub={stack.agent_pid}", f"redis={stack.redis_pid}"],
    )


def _loadgen(mode: str, url: str, args: argparse.Namespace, **options: object) -> dict[str, Any]:
    return run_loadgen(
        mode,
        url,
        script="stream_loadgen.py",
        timeout=stream_sec(args) + args.warmup + args.seconds + 120,
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        stagger_sec=stream_sec(args),
        **options,
    )


@dataclass
class Results:
    floor: list[dict[str, Any]] = field(default_factory=list)
    service: list[dict[str, Any]] = field(default_factory=list)
    trails: TrailCheck = field(default_factory=TrailCheck)
    profile: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(out["errors"] for out in self.floor + self.service)

    def added_ms(self, key: str, percentile: str) -> list[float]:
        """Per round: the service's figure minus the floor's of the same round."""
        return [
            service[key][percentile] - floor[key][percentile]
            for floor, service in zip(self.floor, self.service, strict=True)
            if service[key][percentile] is not None and floor[key][percentile] is not None
        ]


def run_rounds(stack: StreamStack, args: argparse.Namespace) -> Results:
    results = Results()
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}: floor ...", end="", flush=True)
        _wait_for_quiet(args)
        floor = floor_round(stack, args, f"F{number}")
        results.floor.append(floor)
        print(f" {_brief(floor)}; service ...", end="", flush=True)
        _wait_for_quiet(args)
        service = service_round(stack, args, f"S{number}")
        results.service.append(service)
        check_trails(stack.redis, service["completed_calls"], results.trails)
        print(f" {_brief(service)}", flush=True)
    if args.profile:
        print("profiling a service round with py-spy ...", flush=True)
        results.profile = profile_round(stack, args)
    return results


def _brief(out: dict[str, Any]) -> str:
    first, end = out["first_ms"], out["end_ms"]
    return (
        f"first chunk {_ms(first['p50'])}/{_ms(first['p99'])} ms,"
        f" end {_ms(end['p50'])}/{_ms(end['p99'])} ms (p50/p99), {out['errors']} errors,"
        f" other work {_others_busy(out):.2f} cores"
    )


def _wait_for_quiet(args: argparse.Namespace) -> None:
    """With --quiet-below: until a second in which the machine (our servers idle between
    rounds) kept at most that many cores busy, or --quiet-wait-sec passed."""
    if args.quiet_below is None:
        return
    started = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        waited = time.monotonic() - started
        if busy <= args.quiet_below or waited >= args.quiet_wait_sec:
            print(f" (waited {waited:.0f} s, machine {busy:.2f} cores busy)", end="", flush=True)
            return


def profile_round(stack: StreamStack, args: argparse.Namespace) -> list[str]:
    """One unreported service round with py-spy sampling its measured window."""
    # Kept after the run, for a flame graph (e.g. inferno / speedscope read this format).
    output = Path(tempfile.gettempdir()) / "orch-bench-stream-profile.raw"
    output.unlink(missing_ok=True)
    spies: list[subprocess.Popen] = []
    timer = threading.Timer(
        stream_sec(args) + args.warmup,
        lambda: spies.append(profiling.record(stack.service_pid, args.seconds, output)),
    )
    timer.start()
    out = service_round(stack, args, "PROFILE")
    timer.join()
    for spy in spies:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0 or not output.exists():
            return [f"py-spy failed (exit {spy.returncode}): {err.strip()[-500:]}"]
    return [*profiling.summary(output.read_text(), out["measured"]), f"(raw stacks: {output})"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _per_request_ms(outs: list[dict[str, Any]], cpu_sec: Callable[[dict], float]) -> str:
    """Median over rounds of CPU ms per measured request."""
    each = [cpu_sec(out) / out["measured"] * 1000 for out in outs if out["measured"]]
    return _ms(_median(each))


def _others_busy(out: dict[str, Any]) -> float:
    """Cores kept busy by everything on the machine that is not this benchmark."""
    ours = out["cpu_sec"] + sum(out["cpu_sec_by_group"].values())
    return max(0.0, out["machine_busy_sec"] - ours) / out["window_sec"]


def print_table(results: Results) -> None:
    sides = (results.floor, results.service)
    print(f"{'':28}{'floor':>12}{'service':>12}{'added':>12}   (median over rounds)")
    for label, key, percentile in FIGURES:
        floor, service = (_median([out[key][percentile] for out in side]) for side in sides)
        added = _median(results.added_ms(key, percentile))
        print(f"{label:28}{_ms(floor):>12}{_ms(service):>12}{_signed(added):>12}")
    for label, of in (("requests measured/round", "measured"), ("requests sent/round", "requests")):
        cells = [_median([out[of] for out in side]) for side in sides]
        print(f"{label:28}{cells[0]:>12,.0f}{cells[1]:>12,.0f}")
    errors = [sum(out["errors"] for out in side) for side in sides]
    print(f"{'errors (all rounds)':28}{errors[0]:>12,}{errors[1]:>12,}")
    cpu = [_per_request_ms(side, lambda out: out["cpu_sec"]) for side in sides]
    print(f"{'CPU ms/request, server':28}{cpu[0]:>12}{cpu[1]:>12}   (floor: the stub's)")
    own = [
        _per_request_ms(side, lambda out: out["cpu_sec_by_group"]["load generator"])
        for side in sides
    ]
    print(f"{'CPU ms/request, load gen.':28}{own[0]:>12}{own[1]:>12}")
    others = [_median([_others_busy(out) for out in side]) for side in sides]
    print(f"{'other work, cores busy':28}{others[0]:>12.2f}{others[1]:>12.2f}   (not ours)")
    _print_errors(results.floor + results.service)
    added = "; ".join(
        f"{label.removesuffix(' ms')} " + " ".join(_signed(v) for v in results.added_ms(key, p))
        for label, key, p in FIGURES
    )
    print(f"added per round, ms: {added}")


def _print_errors(outs: list[dict[str, Any]]) -> None:
    for out in outs:
        for kind, count in out["error_kinds"].items():
            print(f"  errors: {kind}: {count}")
    for sample in [sample for out in outs for sample in out["error_samples"]][:5]:
        print(f"  error: {sample}")


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def print_targets(results: Results) -> None:
    print("targets (issue 23, added to the agent alone):")
    for label, key, percentile in FIGURES:
        if key == "head_ms":
            continue  # where a first chunk's delay starts, not a target of its own
        target = ADDED_P50_TARGET_MS if percentile == "p50" else ADDED_P99_TARGET_MS
        added = _median(results.added_ms(key, percentile))
        verdict = "no figure" if added is None else "met" if added <= target else "MISSED"
        name = label.removesuffix(f" {percentile} ms")
        print(f"  {name} {percentile}: {_signed(added)} ms <= {target:g} ms: {verdict}")


def print_header(args: argparse.Namespace) -> None:
    print_run_lines(args.service_dir, args.service_env)
    print(
        f"setup: service {args.workers} worker(s), {args.concurrency} streams in flight,"
        f" {args.rounds} rounds x {args.seconds:g} s (+{stream_sec(args):g} s staggered start"
        f" +{args.warmup:g} s warm-up) each of floor and service; the stub agent's first chunk"
        f" after {args.first_chunk_ms:g} ms, then {args.chunks} more {args.chunk_gap_ms:g} ms"
        " apart"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args)
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orch-bench-stream-") as tmp,
            running_stack(args, Path(tmp)) as stack,
        ):
            results = run_rounds(stack, args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(results)
    print()
    print_trail_check(results.trails.calls, results.trails.passed, results.trails.failures)
    if results.profile:
        print()
        print("where the service's time goes (py-spy, one extra round, not in the table above):")
        print("\n".join(results.profile))
    print()
    print_targets(results)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0 if results.errors == 0 and results.trails.ok else 1


if __name__ == "__main__":
    sys.exit(main())
