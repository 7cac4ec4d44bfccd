"""A call's WebSocket over a real socket: the service served by uvicorn with the HTTP limits
every shipped command serves it with, real a2a-sdk agents, a real redis-server, and the
`websockets` client a voice gateway would use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from websockets.asyncio.client import ClientConnection

from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.web.app import create_app
from orchestrator_flows.web.http_limits import HttpLimits, uvicorn_options
from tests.integration.conftest import (
    ACCOUNT_ID,
    CALL_ID,
    HAPPY_PATH,
    NEXT_STAGES,
    Agents,
    AgentServer,
    RedisTarget,
    RedisView,
    _stop_all,
)
from tests.support.agents import GatedAgent, Recording, serve_in_thread
from tests.support.service import API_KEYS, KEYS
from tests.support.timing import DEADLINE_SEC, Gate, eventually

pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

TURN = {"account_id": ACCOUNT_ID, "eci": "ECI-1", "input_message": "hello", "intent": "greeting"}
CLIENT = {"Authorization": f"Bearer {KEYS['client']}"}


class HeldWords(Recording):
    """Streams "Hello " as an artifact, waits at the gate, then appends "world." and completes:
    what the client hears before the gate opens was relayed while the agent was speaking."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        await up.add_artifact([new_text_part("Hello ")], artifact_id="a")
        await self.gate.pass_through()
        await up.add_artifact([new_text_part("world.")], artifact_id="a", append=True)
        await up.complete()


class SocketServers:
    """Serves the service as the CLI does (LimitedHttpProtocol and its WebSocket limit in front),
    over the test's Redis and agents: `serve({role: agent url}) -> "ws://host:port"`."""

    def __init__(self, redis_target: RedisTarget, agents: Agents) -> None:
        self._redis_target = redis_target
        self._agents = agents
        self.stops: dict[str, Callable[[], None]] = {}

    def serve(self, agent_urls: dict[str, str] | None = None, **overrides: Any) -> str:
        settings = Settings(
            **(self._redis_target.settings | {"api_keys": API_KEYS} | overrides),
            agent_urls=self._agents.urls | (agent_urls or {}),
        )
        options = uvicorn_options(HttpLimits.from_settings(settings))
        url, stop = serve_in_thread(lambda _: create_app(settings), **options)
        base = url.replace("http://", "ws://").rstrip("/")
        self.stops[base] = stop
        return base


@pytest.fixture
def servers(redis_target: RedisTarget, agents: Agents, store: RedisView) -> Iterator[SocketServers]:
    served = SocketServers(redis_target, agents)
    yield served
    _stop_all(list(served.stops.values()))


def connect(base: str, headers: dict[str, str] | None = None) -> Any:
    return websockets.connect(
        f"{base}/calls/{CALL_ID}/ws",
        additional_headers=CLIENT if headers is None else headers,
        open_timeout=DEADLINE_SEC,
    )


async def frames_of_turn(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame up to and including the turn's `turn` (or `error`) frame."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["event"] not in ("turn", "error"):
        frames.append(await next_frame(ws))
    return frames


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await _within_deadline(ws.recv()))


async def _within_deadline(work: Any) -> Any:
    return await asyncio.wait_for(work, DEADLINE_SEC)


async def close_code(ws: ClientConnection) -> int | None:
    """The code the server closes the socket with (None: closed without one)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await _within_deadline(ws.recv())
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthenticated"), ({"X-API-Key": KEYS["monitor"]}, 403, "forbidden")],
)
async def test_handshake_is_refused_with_our_error_without_a_key_or_with_a_monitors(
    servers: SocketServers, store: RedisView, headers: dict, status: int, code: str
) -> None:
    base = servers.serve()

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(base, headers):
            pass

    answer = refused.value.response
    assert answer.status_code == status
    assert json.loads(answer.body)["error"]["code"] == code
    assert store.keys() == []


async def test_a_whole_call_over_one_socket(servers: SocketServers, store: RedisView) -> None:
    base = servers.serve()

    async with connect(base) as ws:
        answers = []
        for intent, words in HAPPY_PATH:
            await ws.send(json.dumps(TURN | {"intent": intent, "input_message": words}))
            answers.append((await frames_of_turn(ws))[-1])

    assert [a["event"] for a in answers] == ["turn"] * len(HAPPY_PATH)
    assert [a["data"]["next_flow_id"] for a in answers] == NEXT_STAGES
    assert [s["seq"] for s in store.steps()] == list(range(1, len(HAPPY_PATH) + 1))
    assert store.state()["is_complete"] is True


async def test_chunks_reach_the_client_while_the_agent_speaks_then_the_turn(
    servers: SocketServers, serve_agent: AgentServer, gate: Gate
) -> None:
    base = servers.serve({"greeting": serve_agent(HeldWords(gate))})

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN))
        first = await next_frame(ws)
        while first["event"] == "status":
            first = await next_frame(ws)
        gate.open()  # only now does the agent say its second word
        rest = await frames_of_turn(ws)

    assert first == {"event": "chunk", "data": {"text": "Hello "}}
    chunks = [first["data"]["text"]] + [f["data"]["text"] for f in rest if f["event"] == "chunk"]
    turn = rest[-1]
    assert turn["event"] == "turn"
    assert "".join(chunks) == turn["data"]["response"]["text"] == "Hello world."


async def test_second_frame_during_a_turn_is_refused_while_the_first_completes(
    servers: SocketServers, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    agent = GatedAgent(gate)
    base = servers.serve({"greeting": serve_agent(agent)})

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN))
        await gate.arrived()
        await ws.send(json.dumps(TURN | {"input_message": "hello again"}))
        refused = await next_frame(ws)
        gate.open()
        first = (await frames_of_turn(ws))[-1]

    assert refused["event"] == "error"
    assert refused["data"]["status"] == 409
    assert refused["data"]["error"]["code"] == "turn_in_progress_on_socket"
    assert first["event"] == "turn" and first["data"]["response"]["text"] == "finally"
    assert agent.seen.texts == ["hello"]
    assert [s["seq"] for s in store.steps()] == [1]


async def test_invalid_frame_is_an_error_frame_and_the_socket_stays_usable(
    servers: SocketServers, store: RedisView
) -> None:
    base = servers.serve()

    async with connect(base) as ws:
        await ws.send("{not json")
        refused = (await frames_of_turn(ws))[-1]
        await ws.send(json.dumps(TURN | {"input_message": ""}))
        empty = (await frames_of_turn(ws))[-1]
        await ws.send(json.dumps(TURN))
        taken = (await frames_of_turn(ws))[-1]

    assert refused["event"] == empty["event"] == "error"
    assert refused["data"]["status"] == empty["data"]["status"] == 422
    assert empty["data"]["error"]["fields"][0]["loc"] == ["body", "input_message"]
    assert taken["event"] == "turn"
    assert [s["seq"] for s in store.steps()] == [1]


async def test_client_closing_mid_turn_leaves_the_step_committed(
    servers: SocketServers, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    base = servers.serve({"greeting": serve_agent(GatedAgent(gate))})

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN))
        await gate.arrived()
    gate.open()  # the agent answers after its client left

    await eventually(lambda: len(store.steps()) == 1, "the turn's step committed")
    step = store.steps()[0]
    assert step["intent"] == "greeting"
    assert store.state()["current_flow_id"] == 2


async def test_binary_frame_closes_1003_and_changes_nothing(
    servers: SocketServers, store: RedisView
) -> None:
    base = servers.serve()

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN).encode())
        code = await close_code(ws)

    assert code == 1003
    assert store.keys() == []


async def test_frame_over_the_body_limit_closes_1009_and_changes_nothing(
    servers: SocketServers, store: RedisView
) -> None:
    base = servers.serve(max_body_bytes=1024)

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN | {"input_message": "x" * 2000}))
        code = await close_code(ws)

    assert code == 1009
    assert store.keys() == []


async def test_shutdown_closes_the_socket_1012_and_the_turn_under_way_still_commits(
    servers: SocketServers, serve_agent: AgentServer, gate: Gate, store: RedisView
) -> None:
    base = servers.serve({"greeting": serve_agent(GatedAgent(gate))})

    async with connect(base) as ws:
        await ws.send(json.dumps(TURN))
        await gate.arrived()
        stopping = asyncio.create_task(asyncio.to_thread(servers.stops[base]))
        code = await close_code(ws)
    gate.open()  # the agent answers after the server began to stop
    await _within_deadline(stopping)

    assert code == 1012
    await eventually(lambda: len(store.steps()) == 1, "the turn's step committed")
