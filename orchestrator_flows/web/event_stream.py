"""A streamed turn's events written as Server-Sent Events, straight to the ASGI server.

Each event is one `event:` line and one `data:` line of compact JSON (which never holds a line
break), then a blank line, sent as it comes; `: ping` comment lines fill silences longer than
`ping_sec`, so that proxies keep the stream open. Written here rather than by an SSE response
class: per event that costs one ASGI send, and per stream one task listening for the client's
disconnect (their cost against sse-starlette's: bench/RESULTS.md, "Streaming turns").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator_flows.service.turn_streams import TurnStream

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx passes each event on at once
]
REPLAYED = (b"idempotent-replayed", b"true")
PING: Message = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}


async def send_events(
    stream: TurnStream, receive: Receive, send: Send, *, ping_sec: float, replayed: bool
) -> bool:
    """Sends the stream's events to its last; False if the client left before it."""
    headers = [*HEADERS, REPLAYED] if replayed else HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The server reports a disconnect only through `receive`; its sends to a gone client
    # return quietly. A client's leaving ends the wait for the next event at once (its
    # timeout brought forward), so the answer is over without waiting for a write.
    gone = asyncio.ensure_future(_disconnect(receive))
    waiting: asyncio.Timeout | None = None

    def wake(_: asyncio.Future[None]) -> None:
        if waiting is not None and not waiting.expired():
            # Between two waits (exited): the loop's own test of `gone` sees it instead.
            with contextlib.suppress(RuntimeError):
                waiting.reschedule(asyncio.get_running_loop().time())

    gone.add_done_callback(wake)
    try:
        while not gone.done():
            try:
                async with asyncio.timeout(ping_sec) as waiting:
                    event = await stream.next_event()
            except TimeoutError:
                if not gone.done():
                    await send(PING)
                continue
            last = event.name == "turn"
            body = b"event: " + event.name.encode() + b"\ndata: " + event.data + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": not last})
            if last:
                return not gone.done()
        return False
    finally:
        gone.cancel()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
