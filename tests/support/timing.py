"""Tests wait for what they need, never for time to pass.

A `Gate` holds agents' answers until the test opens it, so "the turn is inside the agent call"
is known, not guessed; a `FakeClock` is moved by the test; `wait_until` and `eventually` poll a
condition, their deadline only bounding a failure.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable

# Long enough for anything a test waits for on two loaded cores; reached only when it fails.
DEADLINE_SEC = 30.0


class FakeClock:
    """A monotonic clock that stands still until the test moves it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gate:
    """Holds each request an agent passes through it until the test opens it, and counts them.

    Agents run on event loops of their own threads: a held agent waits on a future of its own
    loop, which `open` resolves from the test's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.arrivals = 0

    async def pass_through(self) -> None:
        """In an agent: waits until the gate is open."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self.arrivals += 1
            if self._open:
                return
            self._held.append((loop, future))
        await future

    def open(self) -> None:
        """Lets every held request through, and every later one."""
        with self._lock:
            self._open = True
            held, self._held = self._held, []
        for loop, future in held:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, future)

    async def arrived(self, count: int = 1) -> None:
        """Waits until `count` requests in all have reached the gate."""
        await eventually(lambda: self.arrivals >= count, f"{count} request(s) at the gate")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # the agent may have stopped waiting (its caller hung up)
        future.set_result(None)


def wait_until(condition: Callable[[], bool], what: str, within: float = DEADLINE_SEC) -> None:
    """Polls `condition` until it holds; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:g} s waiting for {what}")
        time.sleep(0.02)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = DEADLINE_SEC
) -> None:
    """`wait_until` for the event loop; `condition` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)
