"""The floor: the least a turn can cost, as a raw ASGI app (no framework) doing the same I/O.

Per POST: parse the body, one Redis round trip running the service's own BEGIN_TURN script
(lease + read state), one JSON-RPC SendMessage to the agent through aiohttp (the fastest
client we have), one round trip running the service's own COMMIT_STEP script (state, step,
TTL, lease release), and a small JSON answer. No validation, routing, logging or metrics: what
the service spends beyond this is what its framework and code add.
Run: `python -m uvicorn floor:app --app-dir bench --port 9200 --no-access-log` from the
repository root, with FLOOR_REDIS_URL and FLOOR_AGENT_URL set; FLOOR_REDIS_MAX_CONNECTIONS (default
1024) sizes its Redis pool, which should be at least the turns in flight.

Neither pool ever holds a turn back: the agent pool has no cap, and a turn waits for a Redis
connection only when more turns than FLOOR_REDIS_MAX_CONNECTIONS talk to Redis at once, which
bench/run.py prevents by sizing it to its calls in flight. So the floor stays the floor however
many turns wait on a slow agent.
"""

from __future__ import annotations

import os
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import redis.asyncio as redis
from raw_asgi import read_body, respond

from orchestrator_flows.core.flows import load_flows
from orchestrator_flows.infra.redis_store import BEGIN_TURN, COMMIT_STEP, call_keys
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE

PREFIX = "orch"
TTL_SEC = 3600
LEASE_MS = 20_000
MAX_CALL_BYTES = 1024 * 1024
# The service's flows: the ones its package ships.
FLOWS = load_flows(DEFAULT_FLOWS_FILE)
STAGE_OF_INTENT = {intent: int(stage) for intent, stage in FLOWS.stage_of_intent.items()}
AGENT_HEADERS = {"Content-Type": "application/json", "A2A-Version": "1.0"}


class Floor:
    """The open connections and loaded scripts, made once at start-up."""

    def __init__(self, redis_url: str, agent_url: str, redis_connections: int):
        # Waits for a free connection rather than raising (redis-py's plain pool raises past
        # its size); sized to the turns in flight, it never has to wait.
        pool = redis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=redis_connections,
            timeout=10,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )
        self.redis = redis.Redis(connection_pool=pool)
        self.agent_url = agent_url
        # No cap on connections to the agent (limit=0). Shorter keep-alive than the agent's
        # (uvicorn: 5 s), so an idle pooled connection is never reused just as the agent
        # closes it.
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0),
            timeout=aiohttp.ClientTimeout(total=15),
        )
        self.begin_sha = ""
        self.commit_sha = ""

    async def load_scripts(self) -> None:
        self.begin_sha = await self.redis.script_load(BEGIN_TURN)
        self.commit_sha = await self.redis.script_load(COMMIT_STEP)

    async def close(self) -> None:
        await self.http.close()
        await self.redis.aclose()

    async def turn(self, request: dict[str, Any]) -> dict[str, Any]:
        call_id = request["call_identify_id"]
        keys = call_keys(PREFIX, call_id)
        token = secrets.token_hex(16) + "|"
        got = await self.redis.evalsha(
            self.begin_sha, len(keys.begin), *keys.begin, token, LEASE_MS, ""
        )
        if got[0] != 1:
            return {"call_identify_id": call_id, "status": "error", "reason": "busy"}
        state = orjson.loads(got[1]) if got[1] else _new_state(request)
        reply = await self._send(request, state)
        task = reply["result"]["task"]
        step_count = state["step_count"] + 1
        stage = STAGE_OF_INTENT.get(request["intent"], state["current_flow_id"])
        now = datetime.now(UTC).isoformat()
        step = {
            "seq": step_count,
            "intent_flow_id": stage,
            "intent": request["intent"],
            "input_message": request["input_message"],
            "response_status": "success",
            "response_data": {"text": task["artifacts"][0]["parts"][0]["text"]},
            "a2a_task_id": task["id"],
            "timestamp": now,
        }
        state |= {"step_count": step_count, "current_flow_id": min(stage + 1, 5), "updated_at": now}
        done = await self.redis.evalsha(
            self.commit_sha,
            len(keys.all),
            *keys.all,
            step_count - 1,
            orjson.dumps(state),
            orjson.dumps(step),
            TTL_SEC,
            token,
            "",
            "",
            MAX_CALL_BYTES,
        )
        status = "success" if done else "error"
        return {"call_identify_id": call_id, "status": status, "step_seq": step_count}

    async def _send(self, request: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        message_id = str(uuid.uuid4())
        message = {
            "messageId": message_id,
            "role": "ROLE_USER",
            "parts": [{"text": request["input_message"]}],
            "metadata": {
                "call_identify_id": state["call_identify_id"],
                "intent": request["intent"],
            },
        }
        rpc = {
            "jsonrpc": "2.0",
            "id": message_id,
            "method": "SendMessage",
            "params": {"message": message, "configuration": {}},
        }
        async with self.http.post(
            self.agent_url, data=orjson.dumps(rpc), headers=AGENT_HEADERS
        ) as answer:
            return orjson.loads(await answer.read())


def _new_state(request: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "call_identify_id": request["call_identify_id"],
        "account_id": request["account_id"],
        "eci": request["eci"],
        "current_flow_id": 1,
        "step_count": 0,
        "created_at": now,
        "updated_at": now,
    }


_running: dict[str, Floor] = {}  # "floor" -> the Floor, while the lifespan is up


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    floor = _running.get("floor")
    if scope["method"] != "POST" or floor is None:
        await respond(send, 200, b'{"status":"ok"}')
        return
    body = orjson.loads(await read_body(receive))
    await respond(send, 200, orjson.dumps(await floor.turn(body)))


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            floor = Floor(
                os.environ["FLOOR_REDIS_URL"],
                os.environ["FLOOR_AGENT_URL"],
                int(os.environ.get("FLOOR_REDIS_MAX_CONNECTIONS", "1024")),
            )
            await floor.load_scripts()
            _running["floor"] = floor
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if floor := _running.pop("floor", None):
                await floor.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
