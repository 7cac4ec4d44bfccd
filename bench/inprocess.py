"""The service's (or the floor's) ASGI app driven in this process: CPU per turn, no HTTP server.

The full benchmark's rounds vary from round to round on a shared machine, more than a single
small change is worth. This drives the app directly (real `redis-server`, the stub agent in its
own process, no uvicorn, no load generator) and prints the CPU this process spent per turn, so
two versions can be compared side by side. Under valgrind the count is exact: run it twice
with different --turns and divide the difference in instructions by the difference in turns
(start-up and warm-up cancel out):

    valgrind --tool=callgrind --callgrind-out-file=a.cg python bench/inprocess.py --turns 500
    valgrind --tool=callgrind --callgrind-out-file=b.cg python bench/inprocess.py --turns 1500
    # (summary of b.cg - summary of a.cg) / (turns printed by b - turns printed by a)

`--floor` drives bench/floor.py instead of the service; `--service-dir` another version of it.
`--stream` sends every turn with `Accept: text/event-stream` to the streaming stub agent
(bench/stream_agent.py, 21 chunks 1 ms apart): a streamed turn's CPU; `--stream-agent` sends
JSON turns to that same agent (which it then answers whole), the same turn unstreamed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop
from processes import BENCH, REPO, ROLES, free_ports, start_redis, start_uvicorn, stop

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
TURNS = [
    ("greeting", "hello"),
    ("verify_identity", "I am the account holder"),
    ("refund_request", "I want a refund for order 7"),
    ("process_refund", "yes, refund it"),
    ("closing", "thanks, bye"),
]


async def post(app: App, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One POST /orchestrate through the app, as uvicorn would hand it over."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/orchestrate",
        "raw_path": b"/orchestrate", "query_string": b"", "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect: the app never waits for one here
        return {}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def lifespan(app: App) -> Callable[[], Awaitable[None]]:
    """Runs the app's start-up; returns its shutdown."""
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "state": {}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"start-up failed: {started}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return shutdown


async def drive(app: App, headers: list, turns: int, warm: int, inflight: int) -> dict[str, Any]:
    """Whole calls, `inflight` at a time, until `warm` + `turns` turns are done (a call in
    progress is finished, so a few more may run); CPU is counted after the warm-up."""
    done, errors, cpu_at_warm = 0, 0, time.process_time()
    streamed = (b"accept", b"text/event-stream") in headers

    async def caller() -> None:
        nonlocal done, errors, cpu_at_warm
        while done < warm + turns:
            call_id = "C-" + secrets.token_hex(8)
            for intent, words in TURNS:
                body = orjson.dumps({
                    "call_identify_id": call_id, "account_id": "ACC-1", "eci": "ECI-1",
                    "input_message": words, "intent": intent,
                })  # fmt: skip
                status, answer = await post(app, body, headers)
                errors += status != 200 or b'"status":"error"' in answer
                errors += streamed and b"event: chunk" not in answer
                done += 1
                if done == warm:
                    cpu_at_warm = time.process_time()

    await asyncio.gather(*(caller() for _ in range(inflight)))
    measured = done - warm
    cpu_us = (time.process_time() - cpu_at_warm) / measured * 1e6
    return {"turns": measured, "cpu_us_per_turn": round(cpu_us), "errors": errors}


def build_app(floor: bool, redis_url: str, stub_url: str) -> tuple[App, list]:
    headers = [(b"content-type", b"application/json")]
    if floor:
        os.environ |= {"FLOOR_REDIS_URL": redis_url, "FLOOR_AGENT_URL": stub_url}
        import floor as floor_app

        return floor_app.app, headers
    key = secrets.token_urlsafe(32)
    os.environ |= {"REDIS_URL": redis_url, "API_KEYS": f"client:{key}"}
    os.environ["IDEMPOTENCY_SECRET"] = secrets.token_hex(32)
    os.environ |= {f"AGENT_URL_{role.upper()}": stub_url for role in ROLES}
    from orchestrator_flows.infra.settings import Settings
    from orchestrator_flows.ops.logs import configure_logging
    from orchestrator_flows.web.app import create_app

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings), [*headers, (b"authorization", f"Bearer {key}".encode())]


def start_stub(url: str, port: int, streaming: bool, tmp: Path) -> subprocess.Popen:
    """The stub agent, or the streaming one with short delays (the CPU of a turn, not its
    pace, is measured here)."""
    if not streaming:
        env = os.environ | {"STUB_URL": url}
        return start_uvicorn(
            "stub_agent:app", port, env=env, log_file=tmp / "stub.log", app_dir=BENCH
        )
    env = os.environ | {"STREAM_URL": url, "STREAM_FIRST_MS": "1", "STREAM_GAP_MS": "1"}
    return start_uvicorn(
        "stream_agent:app", port, env=env, log_file=tmp / "stub.log", app_dir=BENCH
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", action="store_true", help="drive bench/floor.py instead")
    parser.add_argument("--turns", type=int, default=5000, help="measured turns")
    parser.add_argument("--warm", type=int, default=500, help="turns before measuring")
    parser.add_argument("--inflight", type=int, default=1, help="calls in flight")
    parser.add_argument("--stream", action="store_true", help="streamed turns, streaming agent")
    parser.add_argument("--stream-agent", action="store_true", help="JSON turns, streaming agent")
    parser.add_argument(
        "--service-dir", type=Path, default=REPO, help="e.g. another commit's export"
    )
    args = parser.parse_args()
    os.chdir(args.service_dir)  # the service's (and the floor's) flows.toml is read from here
    sys.path[:0] = [str(args.service_dir), str(BENCH)]
    tmp = Path(tempfile.mkdtemp(prefix="orch-inprocess-"))
    redis_port, stub_port = free_ports(2)
    stub_url = f"http://127.0.0.1:{stub_port}/"
    started: list = []  # stopped whatever fails, so that no server outlives the script
    try:
        started.append(start_redis(redis_port, tmp))
        started.append(start_stub(stub_url, stub_port, args.stream or args.stream_agent, tmp))
        app, headers = build_app(args.floor, f"redis://127.0.0.1:{redis_port}/0", stub_url)
        if args.stream:
            headers.append((b"accept", b"text/event-stream"))
        stdout, sys.stderr = sys.stdout, (tmp / "app.log").open("w", buffering=1)  # its log lines
        shutdown = await lifespan(app)
        figures = await drive(app, headers, args.turns, args.warm, args.inflight)
        await shutdown()
        print(("floor" if args.floor else "service"), orjson.dumps(figures).decode(), file=stdout)
    finally:
        for process in reversed(started):
            stop(process)


if __name__ == "__main__":
    uvloop.run(main())
