"""The streaming load generator of bench/stream.py: a closed loop of streamed requests, run in
its own process, answering in JSON.

`agent` (the floor): N `SendStreamingMessage` requests in flight straight at the streaming stub
agent; per request, the time to its first artifactUpdate chunk and to the end of its stream.
`turns`: N calls in flight through the service, each walking the five stages, every turn a
`POST /orchestrate` with `Accept: text/event-stream`; per turn, the time to its first `chunk`
event and to its `turn` event. A turn counts as an error unless it streams 200
text/event-stream, its `turn` event is last and says success, and its chunks add up to the
answer's text; a call with an error is abandoned and the next one starts fresh.

Only requests whose end falls inside the measured window count. The workers start spread
evenly over --stagger-sec: with an agent whose every stream takes the same time, workers
started together would stay in lock-step, every first chunk of the 64 due in the same
millisecond, and the figures would measure that pile-up rather than a stream's path.

SSE is read line by line here (aiohttp, as bench/loadgen.py) so that each event is timed
when its blank line arrives; the format's few rules (`event:`, `data:`, `:` comments) are all
a reader of these two servers needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
import orjson
from loadgen import (
    CALL_TURNS,
    MAX_ERROR_SAMPLES,
    Window,
    _cpu_group,
    _cpu_over,
    _pids,
    _turn_body,
    add_common_options,
    fastest_runner,
    percentiles_ms,
)


class StreamFault(Exception):
    """A request that did not stream what it should; the message names the kind first."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Timing(NamedTuple):
    """Seconds from sending a request to its answer's head, its first chunk, its end."""

    head: float
    first: float
    end: float


@dataclass
class StreamTally:
    head_sec: list[float] = field(default_factory=list)
    first_sec: list[float] = field(default_factory=list)
    end_sec: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    completed_calls: list[str] = field(default_factory=list)

    def error(self, fault: StreamFault) -> None:
        self.errors += 1
        self.error_kinds[fault.kind] = self.error_kinds.get(fault.kind, 0) + 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(str(fault)[:300])


async def sse_events(answer: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, bytes]]:
    """(event name, data) of each event, as its closing blank line arrives."""
    name, data = "message", []
    async for raw in answer.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield name, b"\n".join(data)
            name, data = "message", []
        elif not line.startswith(b":"):
            key, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if key == b"event":
                name = value.decode()
            elif key == b"data":
                data.append(value)


async def _check_head(answer: aiohttp.ClientResponse) -> None:
    if answer.status == 200 and answer.content_type == "text/event-stream":
        return
    body = await answer.read()
    kind = f"{answer.status} {answer.content_type}"
    try:
        error = orjson.loads(body).get("error")
        kind += f" {error.get('code', '?')}" if isinstance(error, dict) else ""
    except (orjson.JSONDecodeError, AttributeError):
        pass
    raise StreamFault(kind, repr(body[:200]))


async def stream_from_agent(
    http: aiohttp.ClientSession, url: str, message_id: str, chunks: int
) -> Timing:
    """One SendStreamingMessage, timed to its answer's head, first chunk and end."""
    message = {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": "hi"}]}
    rpc = {"jsonrpc": "2.0", "id": message_id, "method": "SendStreamingMessage"}
    body = orjson.dumps(rpc | {"params": {"message": message, "configuration": {}}})
    headers = {"A2A-Version": "1.0", "Accept": "text/event-stream"}
    started, first, seen, state = time.monotonic(), None, 0, None
    async with http.post(url, data=body, headers=headers) as answer:
        head = time.monotonic()
        await _check_head(answer)
        async for _, data in sse_events(answer):
            reply = orjson.loads(data)
            result = reply.get("result") or {}
            if "artifactUpdate" in result:
                first = first or time.monotonic()
                seen += 1
            elif "statusUpdate" in result:
                state = result["statusUpdate"]["status"]["state"]
            elif "error" in reply:
                raise StreamFault("agent error", repr(data[:200]))
    ended = time.monotonic()
    if first is None or seen != chunks or state != "TASK_STATE_COMPLETED":
        raise StreamFault("agent stream incomplete", f"{seen} chunks, last state {state}")
    return Timing(head - started, first - started, ended - started)


async def stream_turn(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> Timing:
    """One streamed turn, timed to its answer's head, first `chunk` event and `turn` event."""
    started, first, ended, turn = time.monotonic(), None, None, None
    texts: list[str] = []
    async with http.post(url, data=body, headers=headers) as answer:
        head = time.monotonic()
        await _check_head(answer)
        async for name, data in sse_events(answer):
            if turn is not None:
                raise StreamFault("event after turn", name)
            if name == "chunk":
                first = first or time.monotonic()
                texts.append(orjson.loads(data)["text"])
            elif name == "turn":
                ended, turn = time.monotonic(), orjson.loads(data)
    if turn is None or ended is None:
        raise StreamFault("no turn event")
    if turn.get("status") != "success":
        code = ((turn.get("response") or {}).get("error") or turn.get("error") or {}).get("code")
        raise StreamFault(f"turn {turn.get('status', 'error body')} {code}", repr(data[:200]))
    if first is None or "".join(texts) != turn["response"]["text"]:
        raise StreamFault("chunks differ from the answer's text", f"{len(texts)} chunks")
    return Timing(head - started, first - started, ended - started)


def _record(tally: StreamTally, window: Window, timing: Timing) -> None:
    if window.holds(time.monotonic()):
        tally.head_sec.append(timing.head)
        tally.first_sec.append(timing.first)
        tally.end_sec.append(timing.end)


async def _agent_worker(
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    name: str,
    window: Window,
    tally: StreamTally,
) -> None:
    number = 0
    while time.monotonic() < window.end:
        number += 1
        tally.requests += 1
        try:
            timing = await stream_from_agent(http, args.url, f"{name}-{number}", args.chunks)
        except (StreamFault, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            tally.error(_as_fault(exc))
            continue
        _record(tally, window, timing)


async def _call_worker(
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    name: str,
    window: Window,
    tally: StreamTally,
) -> None:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    headers["Authorization"] = f"Bearer {args.api_key}"
    number = 0
    while time.monotonic() < window.end:
        number += 1
        call_id = f"{name}-{number}"
        for turn in range(len(CALL_TURNS)):
            tally.requests += 1
            try:
                timing = await stream_turn(http, args.url, _turn_body(call_id, turn), headers)
            except (StreamFault, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                tally.error(_as_fault(exc))
                break  # a broken call is abandoned; the next one starts fresh
            _record(tally, window, timing)
        else:
            tally.completed_calls.append(call_id)


def _as_fault(exc: Exception) -> StreamFault:
    if isinstance(exc, StreamFault):
        return exc
    return StreamFault(f"no answer: {type(exc).__name__}", str(exc))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    now = time.monotonic()
    start = now + args.stagger_sec + args.warmup
    window = Window(start, start + args.seconds)
    tally = StreamTally()
    worker = _agent_worker if args.mode == "agent" else _call_worker
    cpu_groups = {"server": _pids(args.cpu_pids), "load generator": [os.getpid()]}
    cpu_groups |= dict(_cpu_group(group) for group in args.cpu_group)

    async def staggered(number: int) -> None:
        await asyncio.sleep(number * args.stagger_sec / args.concurrency)
        await worker(http, args, f"{args.tag}-{number}", window, tally)

    # No cap on connections: one per request in flight, never a queue of the generator's own.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        cpu = asyncio.create_task(_cpu_over(window, cpu_groups))
        await asyncio.gather(*(staggered(number) for number in range(args.concurrency)))
        cpu_sec = await cpu
    return {
        "window_sec": args.seconds,
        "measured": len(tally.end_sec),
        "head_ms": percentiles_ms(tally.head_sec),
        "first_ms": percentiles_ms(tally.first_sec),
        "end_ms": percentiles_ms(tally.end_sec),
        "requests": tally.requests,
        "errors": tally.errors,
        "error_kinds": tally.error_kinds,
        "error_samples": tally.error_samples,
        "completed_calls": tally.completed_calls,
        "cpu_sec": cpu_sec.pop("server"),
        "machine_busy_sec": cpu_sec.pop("machine"),
        "cpu_sec_by_group": cpu_sec,  # the load generator's own, and each --cpu-group
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["agent", "turns"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="after the staggered start")
    parser.add_argument("--stagger-sec", type=float, default=0.0, help="workers start over this")
    parser.add_argument("--chunks", type=int, default=21, help="agent: chunks a stream must have")
    add_common_options(parser, tag="STREAM")
    args = parser.parse_args(argv)
    json.dump(fastest_runner()(run(args)), sys.stdout)


if __name__ == "__main__":
    main()
