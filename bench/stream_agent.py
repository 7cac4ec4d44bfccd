"""A streaming A2A 1.0 stub agent for bench/stream.py: raw ASGI, no framework, no task store.

`GET /.well-known/agent-card.json` serves a card offering JSON-RPC 1.0 with
`capabilities.streaming: true`. A `SendStreamingMessage` (or 0.3's `message/stream`) is answered
with Server-Sent Events as a2a-sdk sends them (one `data:` line per JSON-RPC response): the Task
at once, the first artifactUpdate chunk STREAM_FIRST_MS after the request arrived, then
STREAM_CHUNKS more chunks STREAM_GAP_MS apart (`append: true`, `lastChunk` on the last), then a
COMPLETED statusUpdate, and the stream closes. Any other POST is taken as a `SendMessage` and
answered with the whole text, as a completed task, when the stream's last event would have been
sent. Every task completes, so every turn moves the call on; one URL serves every role.

Each event is due at a fixed offset from the request's arrival (not from the previous event), so
a busy moment delays one event, never the rest of the stream.
Run: `python -m uvicorn stream_agent:app --app-dir bench --port 9100 --no-access-log`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import orjson
from raw_asgi import empty_lifespan, read_body, respond, stub_card

URL = os.environ.get("STREAM_URL", "http://127.0.0.1:9100/")
FIRST_SEC = float(os.environ.get("STREAM_FIRST_MS", "200")) / 1000
CHUNKS_AFTER_FIRST = int(os.environ.get("STREAM_CHUNKS", "20"))
GAP_SEC = float(os.environ.get("STREAM_GAP_MS", "20")) / 1000
STREAM_METHODS = {"SendStreamingMessage", "message/stream"}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
CARD = stub_card(
    URL, "bench-stream-stub", "Streams its answer in chunks after a fixed delay.", streaming=True
)
# The chunks' texts; their concatenation is the whole answer, streamed or not.
WORDS = [f"word{n} " for n in range(CHUNKS_AFTER_FIRST)] + ["done."]
_task_numbers = itertools.count(1)


def _reply(request_id: Any, result: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def _event(request_id: Any, result: dict[str, Any]) -> bytes:
    return b"data: " + _reply(request_id, result) + b"\n\n"


def _chunk(request_id: Any, task: dict[str, str], number: int) -> bytes:
    update: dict[str, Any] = {
        "taskId": task["id"],
        "contextId": task["contextId"],
        "artifact": {"artifactId": "answer", "parts": [{"text": WORDS[number]}]},
    }
    if number > 0:
        update["append"] = True
    if number == len(WORDS) - 1:
        update["lastChunk"] = True
    return _event(request_id, {"artifactUpdate": update})


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - asyncio.get_running_loop().time()))


async def _stream(send: Any, request_id: Any, task: dict[str, str], arrived: float) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    submitted = task | {"status": {"state": "TASK_STATE_SUBMITTED"}}
    body = _event(request_id, {"task": submitted})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    for number in range(len(WORDS)):
        await _sleep_until(arrived + FIRST_SEC + number * GAP_SEC)
        body = _chunk(request_id, task, number)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    completed = {"taskId": task["id"], "contextId": task["contextId"]}
    completed["status"] = {"state": "TASK_STATE_COMPLETED"}
    # The last event and the end of the response body go out together.
    body = _event(request_id, {"statusUpdate": completed})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer_whole(send: Any, request_id: Any, task: dict[str, str], arrived: float) -> None:
    await _sleep_until(arrived + FIRST_SEC + CHUNKS_AFTER_FIRST * GAP_SEC)
    whole = task | {
        "status": {"state": "TASK_STATE_COMPLETED"},
        "artifacts": [{"artifactId": "answer", "parts": [{"text": "".join(WORDS)}]}],
    }
    await respond(send, 200, _reply(request_id, {"task": whole}))


async def _answer(send: Any, request: bytes, arrived: float) -> None:
    try:
        parsed = orjson.loads(request)
        request_id, method = parsed.get("id"), parsed.get("method")
        context_id = parsed["params"]["message"].get("contextId") or "ctx-bench"
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        error = {"code": -32700, "message": "not a SendMessage request"}
        await respond(send, 200, orjson.dumps({"jsonrpc": "2.0", "id": None, "error": error}))
        return
    task = {"id": f"task-{next(_task_numbers)}", "contextId": context_id}
    if method in STREAM_METHODS:
        await _stream(send, request_id, task, arrived)
    else:
        await _answer_whole(send, request_id, task, arrived)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await empty_lifespan(receive, send)
        return
    if scope["method"] == "POST":
        body = await read_body(receive)
        await _answer(send, body, asyncio.get_running_loop().time())
    elif scope["path"].endswith("agent-card.json"):
        await respond(send, 200, CARD)
    else:
        await respond(send, 404, b'{"error":"not found"}')
