"""Where the service's CPU goes: py-spy samples of one loaded round, summed by library.

py-spy's raw output is one line per distinct stack, `frame;frame;...;leaf count`, each frame
`function (path:line)`. Idle samples are left out by py-spy, so shares are of busy CPU.
Each sample is charged to the innermost frame that belongs to a known library (or to the
service's own modules); the plain stdlib and the interpreter (asyncio, json, re...) called
from a library count for that library.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (label, pattern on a frame's path), innermost match wins; the first pattern that fits a
# frame names it, so the more specific ones come first.
LIBRARIES = [
    ("httpx + httpcore (agent HTTP client)", r"(^|/)(httpx|httpcore|h11)/"),
    ("aiohttp (agent connection pool)", r"(^|/)(aiohttp|yarl|multidict)/"),
    ("anyio (httpcore's sockets and locks, FastAPI's thread pool)", r"(^|/)anyio/"),
    ("redis-py (client, parser, pool)", r"(^|/)redis/"),
    ("logging + structlog", r"(^|/)(structlog|logging)/"),
    ("prometheus_client (metrics)", r"(^|/)prometheus_client/"),
    ("pydantic (validation, dumps)", r"(^|/)pydantic(_core|_settings)?/"),
    ("tenacity (agent retries)", r"(^|/)tenacity/"),
    ("asgi_correlation_id (request id)", r"(^|/)asgi_correlation_id/"),
    ("fastapi (routing, dependencies, encoding)", r"(^|/)fastapi/"),
    ("starlette (middleware, requests, responses)", r"(^|/)starlette/"),
    ("uvicorn + httptools (HTTP server)", r"(^|/)uvicorn/"),
    ("service code (orchestrator_flows/ and the root's entry points)",
     r"(^|/)orchestrator_flows/|^(main|models|router|redis_store|a2a_client)\.py$"),
]  # fmt: skip
# A thread parked on a lock or queue is not using CPU, though py-spy may sample it as busy.
WAITING = re.compile(r"^(Condition\.wait|Queue\.get|Event\.wait|Thread\.join)$")
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*):\d+\)$")


def record(pid: int, seconds: float, output: Path) -> subprocess.Popen:
    """Starts py-spy on the process for `seconds`; wait on the returned process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    command += ["--format", "raw", "--output", str(output), "--rate", "200", "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def parse(raw: str) -> list[tuple[list[tuple[str, str]], int]]:
    """[(frames outermost first as (function, path)), samples]"""
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            frames.append((match["function"], match["path"]) if match else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def busy(stacks: list[tuple[list[tuple[str, str]], int]]) -> list[tuple[list, int]]:
    """The stacks of threads doing something (not parked on a lock or a queue)."""
    return [(frames, n) for frames, n in stacks if not WAITING.match(frames[-1][0])]


def by_library(stacks: list[tuple[list[tuple[str, str]], int]]) -> Counter[str]:
    charged: Counter[str] = Counter()
    for frames, count in stacks:
        charged[_library_of(frames)] += count
    return charged


def _library_of(frames: list[tuple[str, str]]) -> str:
    if frames[-1][0] == "Runner.run":  # uvloop's C loop: socket I/O, callbacks, polling
        return "the event loop itself (uvloop, C; may include some idle polling)"
    for _, path in reversed(frames):
        for label, pattern in LIBRARIES:
            if re.search(pattern, path):
                return label
    return "stdlib and interpreter, not called from the above"


def by_function(stacks: list[tuple[list[tuple[str, str]], int]]) -> Counter[str]:
    """Self samples per leaf function."""
    charged: Counter[str] = Counter()
    for frames, count in stacks:
        function, path = frames[-1]
        charged[f"{function} ({_short(path)})"] += count
    return charged


def _short(path: str) -> str:
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else Path(path).name


def summary(raw: str, steps: int, top: int = 10) -> list[str]:
    every = parse(raw)
    stacks = busy(every)
    total = sum(count for _, count in stacks)
    if not total:
        return ["py-spy recorded no samples"]
    parked = sum(count for _, count in every) - total
    lines = [
        f"{total:,} busy samples at 200 Hz over {steps:,} steps ({parked:,} samples of threads"
        " parked on a lock or queue left out); shares of the service's busy samples:"
    ]
    lines += ["  by library (a sample counts for the innermost library on its stack):"]
    lines += [f"    {n / total:6.1%}  {label}" for label, n in by_library(stacks).most_common()]
    lines += [f"  top {top} functions by self time:"]
    lines += [f"    {n / total:6.1%}  {name}" for name, n in by_function(stacks).most_common(top)]
    return lines
