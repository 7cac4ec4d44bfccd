"""A minimal, fast A2A 1.0 agent for the benchmark: raw ASGI, no framework, no task store.

`GET /.well-known/agent-card.json` serves a card offering JSON-RPC 1.0; any POST is taken as a
`SendMessage` and answered at once with a completed task echoing the request id. It never asks
for input, so every turn moves the call on. It serves every role from one URL.
STUB_STATE=TASK_STATE_INPUT_REQUIRED makes every task ask for input instead: the call stays at
its stage (bench/classify_banking77.py). STUB_DELAY_MS=N answers each SendMessage N ms after
it arrived (asyncio.sleep: the agent waits without using CPU, as a slow language model does).
Run: `python -m uvicorn stub_agent:app --app-dir bench --port 9100 --no-access-log`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import orjson
from raw_asgi import empty_lifespan, read_body, respond, stub_card

URL = os.environ.get("STUB_URL", "http://127.0.0.1:9100/")
STATE = os.environ.get("STUB_STATE", "TASK_STATE_COMPLETED")
DELAY_SEC = int(os.environ.get("STUB_DELAY_MS", "0")) / 1000
CARD = stub_card(
    URL, "bench-stub", "Answers every message with a completed task, at once.", streaming=False
)
_task_numbers = itertools.count(1)


def answer(request: bytes) -> bytes:
    """A completed task for a SendMessage request (a JSON-RPC error for anything unreadable)."""
    try:
        parsed = orjson.loads(request)
        request_id = parsed.get("id")
        context_id = parsed["params"]["message"].get("contextId") or "ctx-bench"
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        error = {"code": -32700, "message": "not a SendMessage request"}
        return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error})
    task = {
        "id": f"task-{next(_task_numbers)}",
        "contextId": context_id,
        "status": {"state": STATE},
        "artifacts": [{"artifactId": "answer", "parts": [{"text": "done"}]}],
    }
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"task": task}})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await empty_lifespan(receive, send)
        return
    if scope["method"] == "POST":
        body = await read_body(receive)
        if DELAY_SEC:
            await asyncio.sleep(DELAY_SEC)
        await respond(send, 200, answer(body))
    elif scope["path"].endswith("agent-card.json"):
        await respond(send, 200, CARD)
    else:
        await respond(send, 404, b'{"error":"not found"}')
