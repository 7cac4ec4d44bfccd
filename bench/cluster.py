"""Scale-out on a Redis Cluster: `python bench/cluster.py` prints steps/s with 1, 2 and 3 service
processes sharing a 3-primary cluster, next to 1 process on a single redis-server.

Starts a Redis Cluster (3 primaries, no replicas) and a single redis-server on loopback, the
stub agent, three service processes on the cluster (each given a different node as REDIS_URL)
and one on the single Redis. Rounds of whole calls alternate between the configurations; with
N processes every turn goes to one of the N at random, as behind a load balancer, so the turns
of one call land on different processes. Every completed call's trail is checked in Redis.
Exit status 1 if a turn failed or a trail is wrong; the timings are reported, not enforced.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from options import add_round_options, print_run_lines
from processes import (
    BENCH,
    BenchError,
    clean_environment,
    free_port,
    free_ports,
    process_tree,
    run_loadgen,
    service_environment,
    start_redis,
    start_redis_cluster,
    start_uvicorn,
    stop,
    stop_all,
    wait_for_uvicorn,
)
from redis_view import AnyRedis, TrailCheck, check_trails, flush
from report import (
    Configuration,
    RoundResult,
    print_configurations,
    print_cores_note,
    print_trail_check,
)

PRIMARIES = 3
CLUSTER_PROCESSES = 3
HEADINGS = [
    ("single Redis", "1 process"),
    ("cluster", "1 process"),
    ("cluster", "2 processes"),
    ("cluster", "3 processes"),
]  # the table's columns, in the order of Stack.targets


@dataclass(frozen=True)
class Service:
    url: str
    pid: int


@dataclass(frozen=True)
class Target:
    """What one configuration's rounds drive and time: a Redis and the service processes on it."""

    redis: AnyRedis
    redis_pids: list[int]
    services: list[Service]


@dataclass(frozen=True)
class Stack:
    targets: list[Target]  # in the order of HEADINGS
    stub_pid: int
    client_key: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Steps/s with 1, 2 and 3 processes on a cluster.")
    add_round_options(parser, rounds=3, rounds_help="rounds of each configuration")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup, args.rounds = 0.8, 0.2, 1
    return args


@contextmanager
def running_stack(args: argparse.Namespace, tmp: Path) -> Iterator[Stack]:
    """Both Redis set-ups, the stub and four service processes, each stopped on exit."""
    with ExitStack() as stack:
        single_port, stub_port = free_ports(2)
        single_url = f"redis://127.0.0.1:{single_port}/0"
        single_redis = start_redis(single_port, tmp)
        stack.callback(stop, single_redis)
        nodes = start_redis_cluster(PRIMARIES, tmp)
        stack.callback(nodes.stop)
        stub_url = f"http://127.0.0.1:{stub_port}/"
        stub = start_uvicorn(
            "stub_agent:app",
            stub_port,
            env=clean_environment() | {"STUB_URL": stub_url},
            log_file=tmp / "stub.log",
            app_dir=BENCH,
        )
        stack.callback(stop, stub)
        client_key = secrets.token_urlsafe(32)
        api_keys = f"client:{client_key}"
        # Each cluster process learns the cluster from a different node: any node will do.
        envs = [service_environment(single_url, stub_url, api_keys)] + [
            service_environment(nodes.url_of(index % PRIMARIES), stub_url, api_keys)
            | {"REDIS_CLUSTER": "true"}
            for index in range(CLUSTER_PROCESSES)
        ]
        single, *on_cluster = start_services(stack, envs, args.service_dir, tmp)
        single_client = stack.enter_context(redis.Redis.from_url(single_url))
        cluster_client = redis.RedisCluster.from_url(nodes.url_of(0))
        stack.callback(cluster_client.close)
        targets = [Target(single_client, [single_redis.pid], [single])]
        targets += [
            Target(cluster_client, nodes.pids, on_cluster[:count])
            for count in range(1, CLUSTER_PROCESSES + 1)
        ]
        yield Stack(targets, stub.pid, client_key)


def start_services(
    stack: ExitStack, envs: list[dict[str, str]], service_dir: Path, tmp: Path
) -> list[Service]:
    """`uvicorn main:app`, one worker each, started side by side (each takes ~2 s to import)."""
    services, processes = [], []
    stack.callback(stop_all, processes)
    for index, env in enumerate(envs):
        port, log_file = free_port(), tmp / f"service-{index}.log"
        process = start_uvicorn(
            "main:app", port, env=env, log_file=log_file, cwd=service_dir, wait=False
        )
        processes.append(process)
        services.append((port, process, log_file))
    for port, process, log_file in services:
        wait_for_uvicorn(port, process, log_file)
    return [Service(f"http://127.0.0.1:{port}", process.pid) for port, process, _ in services]


def measure_round(
    stack: Stack, target: Target, args: argparse.Namespace, tag: str
) -> tuple[RoundResult, list[str]]:
    """One closed-loop round over an empty Redis; also returns the completed call ids."""
    flush(target.redis)
    service_pids = [pid for s in target.services for pid in process_tree(s.pid)]
    out = run_loadgen(
        "calls",
        [service.url + "/orchestrate" for service in target.services],
        timeout=args.warmup + args.seconds + 120,
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup=args.warmup,
        tag=tag,
        api_key=stack.client_key,
        cpu_pids=_listed(service_pids),
        cpu_group=[f"redis={_listed(target.redis_pids)}", f"stub={stack.stub_pid}"],
    )
    return RoundResult.from_loadgen(out), out["completed_calls"]


def _listed(pids: list[int]) -> str:
    return ",".join(str(pid) for pid in pids)


def run_benchmark(stack: Stack, args: argparse.Namespace) -> list[Configuration]:
    """Rounds alternate over the configurations, so a noisy minute hits all of them alike."""
    columns = [Configuration(heading) for heading in HEADINGS]
    trails = [TrailCheck() for _ in columns]
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}, steps/s:", flush=True)
        for index, (target, column) in enumerate(zip(stack.targets, columns, strict=True)):
            result, completed = measure_round(stack, target, args, f"C{index}R{number}")
            column.rounds.append(result)
            check_trails(target.redis, completed, trails[index])
            print(
                f"  {', '.join(column.heading)}: {result.steps_per_sec:.0f}"
                f" (other work {result.other_cores_busy:.2f} cores)",
                flush=True,
            )
    for column, trail in zip(columns, trails, strict=True):
        column.trail_calls, column.trail_passed = trail.calls, trail.passed
        column.trail_failures = trail.failures
    return columns


def print_header(args: argparse.Namespace) -> None:
    print_run_lines(args.service_dir)
    print(
        f"setup: a Redis Cluster of {PRIMARIES} primaries (no replicas) or a single"
        " redis-server; `uvicorn main:app`, 1 worker per process, all on this machine"
    )
    print(
        f"load: {args.concurrency} calls in flight, each turn to one of the configuration's"
        f" processes at random; {args.rounds} rounds x {args.seconds:g} s"
        f" (+{args.warmup:g} s warm-up) each"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_header(args)
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orch-bench-cluster-") as tmp,
            running_stack(args, Path(tmp)) as stack,
        ):
            columns = run_benchmark(stack, args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print()
    print_configurations(columns)
    print("(each figure: the median over rounds; latencies are per round, then the median)")
    print()
    calls, passed = sum(c.trail_calls for c in columns), sum(c.trail_passed for c in columns)
    print_trail_check(calls, passed, [f for c in columns for f in c.trail_failures])
    print()
    print_cores_note(os.cpu_count(), columns)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    errors = sum(r.errors for c in columns for r in c.rounds)
    return 0 if errors == 0 and calls > 0 and passed == calls else 1


if __name__ == "__main__":
    sys.exit(main())
