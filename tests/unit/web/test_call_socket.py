"""A call's WebSocket (GET /calls/{id}/ws): the handshake's key, turns as frames, their events
as frames, one turn at a time, bad frames (fakeredis, in-process agents, in-process socket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from tests.support.agents import GatedAgent
from tests.support.service import KEYS, Service, ServiceFactory, bearer
from tests.support.timing import DEADLINE_SEC, Gate, eventually

CALL = "CALL-WS"
PATH = f"/calls/{CALL}/ws"
TURN = {"account_id": "ACC-1", "eci": "ECI-1", "input_message": "hello", "intent": "greeting"}
WHOLE_CALL = [
    ("greeting", "hi there"),
    ("verify_identity", "it is me"),
    ("otp_verify", "123456"),
    ("refund_request", "refund order 7"),
    ("process_refund", "yes please"),
    ("closing", "bye"),
]


def with_denial_extension(app: Any) -> Any:
    """The app as uvicorn calls it: a websocket scope that says a handshake may be refused
    with an HTTP answer (httpx-ws reads such an answer but does not say so in the scope)."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = scope | {"extensions": {"websocket.http.response": {}}}
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def socket(
    service: Service,
    path: str = PATH,
    headers: dict[str, str] | None = None,
    denial: bool = True,
) -> AsyncIterator[AsyncWebSocketSession]:
    app = with_denial_extension(service.app) if denial else service.app
    transport = ASGIWebSocketTransport(app=app, initial_receive_timeout=DEADLINE_SEC)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://svc") as http,
            aconnect_ws(path, http, headers=bearer("client") if headers is None else headers) as ws,
        ):
            yield ws
    except BaseExceptionGroup as group:  # the transport's task group wraps what it raised
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def frames_of_turn(ws: AsyncWebSocketSession) -> list[dict[str, Any]]:
    """Every frame up to and including the turn's `turn` (or `error`) frame."""
    frames = []
    while not frames or frames[-1]["event"] not in ("turn", "error"):
        frames.append(json.loads(await ws.receive_text(timeout=DEADLINE_SEC)))
    return frames


async def answer_then_answer(
    ws: AsyncWebSocketSession, first: dict[str, Any] | str, then: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last frame of the answer to `first` (a frame, or text sent as it is), then of `then`
    sent on the same socket: whether the socket stays usable after `first`."""
    if isinstance(first, str):
        await ws.send_text(first)
    else:
        await ws.send_json(first)
    answered = (await frames_of_turn(ws))[-1]
    await ws.send_json(then)
    return answered, (await frames_of_turn(ws))[-1]


async def steps_of(service: Service, call_id: str = CALL) -> list[dict[str, Any]]:
    answer = await service.http.get(f"/session/{call_id}/steps")
    return answer.json() if answer.status_code == 200 else []


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer not-a-known-key-at-all"}, 401, "unauthenticated"),
        (bearer("monitor"), 403, "forbidden"),
        (bearer("auditor"), 403, "forbidden"),
    ],
)
async def test_handshake_without_a_key_allowed_to_orchestrate_is_refused_with_our_error(
    service: Service, headers: dict[str, str], status: int, code: str
) -> None:
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with socket(service, headers=headers):
            pass

    answer = refused.value.response
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


async def test_socket_and_refusal_carry_the_request_id_of_the_handshake(
    service: Service,
) -> None:
    async with socket(service, headers=bearer("client") | {"X-Request-ID": "gw-7"}) as ws:
        assert ws.response is not None
        accepted = ws.response.headers["X-Request-ID"]
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with socket(service, headers={"X-Request-ID": "gw-8"}):
            pass

    assert (accepted, refused.value.response.headers["X-Request-ID"]) == ("gw-7", "gw-8")


async def test_handshake_takes_the_key_from_x_api_key_too(service: Service) -> None:
    async with socket(service, headers={"X-API-Key": KEYS["client"]}) as ws:
        await ws.send_json(TURN)
        assert (await frames_of_turn(ws))[-1]["event"] == "turn"


async def test_malformed_call_id_in_the_path_is_refused_422(service: Service) -> None:
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with socket(service, path="/calls/CALL!1/ws"):
            pass

    answer = refused.value.response
    assert answer.status_code == 422
    assert answer.json()["error"]["fields"][0]["loc"] == ["path", "call_identify_id"]


async def test_server_without_http_denials_refuses_the_handshake_by_closing_1008(
    service: Service,
) -> None:
    with pytest.raises(WebSocketDisconnect) as closed:
        async with socket(service, headers={}, denial=False):
            pass

    assert (closed.value.code, closed.value.reason) == (1008, "unauthenticated")


async def test_plain_get_of_the_socket_path_is_426_upgrade_required(service: Service) -> None:
    answer = await service.http.get(PATH)

    assert answer.status_code == 426
    assert answer.headers["Upgrade"] == "websocket"
    assert answer.json()["error"]["code"] == "upgrade_required"


async def test_a_whole_call_over_one_socket_walks_the_five_stages(service: Service) -> None:
    async with socket(service) as ws:
        answers = []
        for intent, words in WHOLE_CALL:
            await ws.send_json(TURN | {"intent": intent, "input_message": words})
            answers.append((await frames_of_turn(ws))[-1]["data"])

    assert [a["call_identify_id"] for a in answers] == [CALL] * 6
    assert [a["next_flow_id"] for a in answers] == [2, 2, 3, 4, 5, None]
    assert answers[-1]["is_complete"] is True
    assert len(await steps_of(service)) == 6


async def test_turn_frame_carries_exactly_the_json_answer_after_chunks_of_its_text(
    service: Service,
) -> None:
    async with socket(service) as ws:
        await ws.send_json(TURN | {"intent": "greeting"})
        frames = await frames_of_turn(ws)

    chunks = [f["data"]["text"] for f in frames if f["event"] == "chunk"]
    turn = frames[-1]
    assert turn["event"] == "turn" and "replayed" not in turn
    assert chunks and "".join(chunks) == turn["data"]["response"]["text"]
    assert {f["event"] for f in frames[:-1]} <= {"status", "chunk"}
    stored = (await service.http.get(f"/session/{CALL}")).json()
    assert turn["data"]["next_flow_id"] == stored["current_flow_id"]


async def test_call_id_in_the_frame_may_repeat_the_paths_but_not_differ(
    service: Service,
) -> None:
    async with socket(service) as ws:
        refused, taken = await answer_then_answer(
            ws, TURN | {"call_identify_id": "CALL-OTHER"}, TURN | {"call_identify_id": CALL}
        )

    assert refused["event"] == "error"
    assert refused["data"]["status"] == 422
    assert refused["data"]["error"]["fields"][0]["loc"] == ["body", "call_identify_id"]
    assert taken["event"] == "turn"
    assert await steps_of(service, "CALL-OTHER") == []


@pytest.mark.parametrize(
    ("frame", "loc"),
    [
        ("not json", ["body"]),
        ("[1, 2]", ["body"]),
        (json.dumps(TURN | {"intent": "Not An Intent"}), ["body", "intent"]),
        (json.dumps(TURN | {"agent_url": "http://evil"}), ["body", "agent_url"]),
        (json.dumps(TURN | {"idempotency_key": "has spaces"}), ["body", "idempotency_key"]),
    ],
)
async def test_invalid_frame_is_an_error_frame_and_the_socket_stays_usable(
    service: Service, frame: str, loc: list[str]
) -> None:
    async with socket(service) as ws:
        refused, taken = await answer_then_answer(ws, frame, TURN)

    assert refused["event"] == "error"
    assert refused["data"]["status"] == 422
    assert refused["data"]["error"]["code"] == "validation_error"
    assert refused["data"]["error"]["fields"][0]["loc"] == loc
    assert "Not An Intent" not in json.dumps(refused)  # never echoes what was sent
    assert taken["event"] == "turn"
    assert len(await steps_of(service)) == 1


async def test_turn_refused_before_the_agent_is_an_error_frame_with_its_http_status(
    service: Service,
) -> None:
    async with socket(service) as ws:
        refused, taken = await answer_then_answer(ws, TURN | {"intent": "closing"}, TURN)

    assert refused == {
        "event": "error",
        "data": {"status": 409, "error": refused["data"]["error"]},
    }
    assert refused["data"]["error"]["code"] == "intent_not_allowed"
    assert taken["event"] == "turn"


async def test_second_frame_during_a_turn_is_refused_and_the_first_completes(
    make_service: ServiceFactory,
) -> None:
    gate = Gate()
    service = await make_service(agents={"greeting": GatedAgent(gate)})
    async with socket(service) as ws:
        await ws.send_json(TURN)
        await gate.arrived()
        await ws.send_json(TURN | {"input_message": "again"})
        refused = json.loads(await ws.receive_text(timeout=DEADLINE_SEC))
        gate.open()
        first = (await frames_of_turn(ws))[-1]

    assert refused["event"] == "error"
    assert refused["data"]["status"] == 409
    assert refused["data"]["error"]["code"] == "turn_in_progress_on_socket"
    assert first["event"] == "turn"
    assert first["data"]["response"]["text"] == "finally"
    assert gate.arrivals == 1
    assert len(await steps_of(service)) == 1


async def test_client_closing_mid_turn_leaves_the_step_committed(
    make_service: ServiceFactory,
) -> None:
    gate = Gate()
    service = await make_service(agents={"greeting": GatedAgent(gate)})
    async with socket(service) as ws:
        await ws.send_json(TURN)
        await gate.arrived()
    gate.open()

    await eventually(lambda: _has_steps(service, 1), "the turn's step committed")
    gone = 'orch_stream_clients_gone_total{transport="websocket"} 1.0'
    await eventually(lambda: _exposes(service, gone), "the client counted as gone")


async def _has_steps(service: Service, count: int) -> bool:
    return len(await steps_of(service)) == count


async def _exposes(service: Service, sample: str) -> bool:
    return sample in (await service.http.get("/metrics", headers=bearer("monitor"))).text


async def test_replayed_turn_is_its_one_turn_frame_marked_replayed(service: Service) -> None:
    keyed = TURN | {"idempotency_key": "turn-1"}
    async with socket(service) as ws:
        await ws.send_json(keyed)
        first = (await frames_of_turn(ws))[-1]
        await ws.send_json(keyed)
        again = await frames_of_turn(ws)

    assert again == [{"event": "turn", "data": first["data"], "replayed": True}]
    assert len(await steps_of(service)) == 1


async def test_key_reused_for_another_body_is_an_error_frame(service: Service) -> None:
    async with socket(service) as ws:
        await ws.send_json(TURN | {"idempotency_key": "turn-1"})
        await frames_of_turn(ws)
        await ws.send_json(
            TURN | {"idempotency_key": "turn-1", "intent": "verify_identity", "input_message": "x"}
        )
        refused = (await frames_of_turn(ws))[-1]

    assert refused["data"]["status"] == 422
    assert refused["data"]["error"]["code"] == "idempotency_key_reused"


async def test_binary_frame_closes_the_socket_1003(service: Service) -> None:
    async with socket(service) as ws:
        await ws.send_bytes(json.dumps(TURN).encode())
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text(timeout=DEADLINE_SEC)

    assert closed.value.code == 1003
    assert await steps_of(service) == []


async def test_frame_over_the_body_limit_closes_the_socket_1009(
    make_service: ServiceFactory,
) -> None:
    service = await make_service(max_body_bytes=1024)
    async with socket(service) as ws:
        await ws.send_json(TURN | {"input_message": "é" * 600})  # 1,200 bytes in UTF-8
        with pytest.raises(WebSocketDisconnect) as closed:
            await ws.receive_text(timeout=DEADLINE_SEC)

    assert closed.value.code == 1009
    assert await steps_of(service) == []


async def test_socket_turns_count_as_streamed_turns_by_websocket(service: Service) -> None:
    async with socket(service) as ws:
        await ws.send_json(TURN)
        await frames_of_turn(ws)

    assert await _exposes(service, 'orch_streamed_turns_total{transport="websocket"} 1.0')


async def test_socket_turns_are_shed_when_the_worker_holds_its_limit(
    make_service: ServiceFactory,
) -> None:
    gate = Gate()
    service = await make_service(agents={"greeting": GatedAgent(gate)}, max_turns_in_flight=1)
    async with socket(service) as first, socket(service, path="/calls/CALL-2/ws") as second:
        await first.send_json(TURN)
        await gate.arrived()
        await second.send_json(TURN)
        shed = (await frames_of_turn(second))[-1]
        gate.open()
        await frames_of_turn(first)

    assert shed["data"]["status"] == 503
    assert shed["data"]["error"]["code"] == "overloaded"
    assert await steps_of(service, "CALL-2") == []


async def test_socket_leaves_one_log_line_with_its_turns_refusals_and_close_code(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    async with socket(service, headers=bearer("client") | {"X-Request-ID": "gw-9"}) as ws:
        await ws.send_text("not json")
        await frames_of_turn(ws)
        await ws.send_json(TURN)
        await frames_of_turn(ws)

    # The transport's exit awaited the socket's handler, which logs as it ends.
    lines = capsys.readouterr().err.splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    (line,) = [e for e in logged if e["event"] == "call_socket"]
    assert line["path"] == PATH and line["request_id"] == "gw-9"
    assert (line["turns"], line["refused"], line["close_code"]) == (1, 1, 1000)
    assert "hello" not in json.dumps(logged)  # the caller's words stay out of the logs


async def test_turn_sent_over_http_is_replayed_on_the_socket_with_the_same_key(
    service: Service,
) -> None:
    sent = await service.http.post(
        "/orchestrate",
        json=TURN | {"call_identify_id": CALL},
        headers={"Idempotency-Key": "turn-7"},
    )
    async with socket(service) as ws:
        await ws.send_json(TURN | {"idempotency_key": "turn-7"})
        again = await frames_of_turn(ws)

    assert again == [{"event": "turn", "data": sent.json(), "replayed": True}]
    assert len(await steps_of(service)) == 1
