"""The servers of bench/run.py, bench/burst.py and bench/overload.py: a private redis-server,
the stub agent (answering after --agent-delay-ms), the service (with --service-env settings) and
the floor, each in its own process, stopped on exit."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from processes import (
    BENCH,
    clean_environment,
    free_ports,
    service_environment,
    start_redis,
    start_uvicorn,
    stop,
)


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


@contextmanager
def running_stack(args: argparse.Namespace, tmp: Path, in_flight: int) -> Iterator[Stack]:
    """Redis, the stub, the service and the floor, each in its own process, stopped on exit.
    `in_flight`: the most turns the floor will hold at once (its Redis pool's size)."""
    with ExitStack() as stack:
        redis_port, stub_port, service_port, floor_port = free_ports(4)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        stack.callback(stop, start_redis(redis_port, tmp))
        client = stack.enter_context(redis.Redis.from_url(redis_url))
        stub_url = f"http://127.0.0.1:{stub_port}/"
        env = clean_environment() | {
            "STUB_URL": stub_url,
            "STUB_DELAY_MS": str(args.agent_delay_ms),
        }
        stub = start_uvicorn(
            "stub_agent:app", stub_port, env=env, log_file=tmp / "stub.log", app_dir=BENCH
        )
        stack.callback(stop, stub)
        client_key, auditor_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        api_keys = f"client:{client_key},auditor:{auditor_key}"
        env = service_environment(redis_url, stub_url, api_keys) | dict(args.service_env)
        service = start_uvicorn(
            "main:app",
            service_port,
            env=env,
            log_file=tmp / "service.log",
            workers=args.workers,
            cwd=args.service_dir,
        )
        stack.callback(stop, service)
        env = clean_environment() | {
            "FLOOR_REDIS_URL": redis_url,
            "FLOOR_AGENT_URL": stub_url,
            "FLOOR_REDIS_MAX_CONNECTIONS": str(max(in_flight, 1)),
        }
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
