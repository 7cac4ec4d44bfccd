"""GET /calls/{call_identify_id}/ws: one WebSocket per call, for voice gateways.

The handshake carries the API key (Authorization: Bearer or X-API-Key, permission
`orchestrate`). A refused one is answered as an HTTP request would be, status and error body:
401 `unauthenticated`, 403 `forbidden`, 422 `validation_error` (a malformed call id). Once
open, the socket takes the call's turns, one at a time:

- client -> server, one JSON text frame per turn: the POST /orchestrate body, where
  `call_identify_id` may be left out (it is the path's; if present it must equal it), plus an
  optional `idempotency_key` member (the Idempotency-Key header's rules and meaning).
- server -> client, JSON text frames `{"event": NAME, "data": {...}}`: the events of the
  `text/event-stream` answer, with the same data: `status`, `chunk`, and last `turn` (the
  JSON body the same turn answers unstreamed). A replay is its one `turn` frame, with
  `"replayed": true` beside `data`.
- A frame refused before the agent is called (an invalid frame, a stage rule, a key reused,
  overloaded, ...) is answered `{"event": "error", "data": {"status": S, "error": {"code",
  "message", ...}}}`: the error body and status S the same turn gets over HTTP. The socket
  stays open, and so it does for a frame sent while the socket's turn is still running: 409
  `turn_in_progress_on_socket`; that frame is dropped and the running turn goes on.
- A client that closes mid-turn stops hearing it; the turn still runs to its commit, and its
  answer is had again with its idempotency_key or GET /session/{id}.

Close codes the server sends: 1003 a binary frame; 1009 a frame over MAX_BODY_BYTES; 1012 the
server is stopping (uvicorn's; turns under way still commit); 1011 an unexpected server error
(uvicorn's); 1008 a refused handshake, only on a server without the WebSocket denial response
(uvicorn has it): the reason is the error's code. The server never closes a socket that
behaves; idle sockets are kept alive by the protocol's pings (uvicorn's ws_ping_interval).
"""

from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from starlette.websockets import WebSocketDisconnect

from orchestrator_flows.core.errors import (
    Forbidden,
    InvalidRequest,
    TurnInProgressOnSocket,
    Unauthenticated,
    UpgradeRequired,
)
from orchestrator_flows.core.models import CallId, OrchestrateRequest
from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.service.turn_streams import StreamEvent, open_stream
from orchestrator_flows.web.access_log import log_request, logged_path
from orchestrator_flows.web.api_docs import error_responses
from orchestrator_flows.web.auth import KeyRing, Permission, presented_key
from orchestrator_flows.web.error_answers import error_answer
from orchestrator_flows.web.request_ids import REQUEST_ID_HEADER
from orchestrator_flows.web.turn_endpoint import IdempotencyKeyText, TurnEndpoint, validated

PATH = "/calls/{call_identify_id}/ws"
TRANSPORT = "websocket"  # the metrics' label
CLOSE_UNSUPPORTED_DATA = 1003  # a binary frame
CLOSE_POLICY_VIOLATION = 1008  # a refused handshake, where no HTTP denial can be sent
CLOSE_MESSAGE_TOO_BIG = 1009  # a frame over MAX_BODY_BYTES

log = structlog.get_logger("orchestrator.http")
PathCallId = TypeAdapter(CallId)


def add_call_sockets(
    app: FastAPI, keyring: KeyRing, admission: TurnEndpoint, max_frame_bytes: int
) -> None:
    """The socket's route, and a plain GET of its path that OpenAPI documents it by."""
    app.add_api_websocket_route(PATH, CallSockets(app, keyring, admission, max_frame_bytes))

    async def call_socket(call_identify_id: CallId) -> Response:
        raise UpgradeRequired(
            "open this path with a WebSocket handshake", headers={"Upgrade": "websocket"}
        )

    app.add_api_route(
        PATH,
        call_socket,
        methods=["GET"],
        status_code=101,
        summary="A call's WebSocket, for voice gateways: turns in, the turns' events out",
        description=_describe(),
        responses={101: {"description": "The socket is open"}}
        | error_responses(
            Unauthenticated, Forbidden, InvalidRequest, UpgradeRequired, TurnInProgressOnSocket
        ),
    )


def _describe() -> str:
    # This module's docstring, but its first line: the protocol and the close codes.
    return (__doc__ or "").split("\n\n", 1)[1]


class TurnFrame(OrchestrateRequest):
    """A turn as a socket's client sends it: the POST body, its call id optional, and the
    Idempotency-Key as a member."""

    call_identify_id: CallId | None = None
    idempotency_key: IdempotencyKeyText | None = None

    def turn_of(self, call_id: str) -> tuple[OrchestrateRequest, str]:
        """The turn for the socket's call and its Idempotency-Key ("" without one)."""
        if self.call_identify_id not in (None, call_id):
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "call_identify_id"),
                        "type": "call_mismatch",
                        "msg": "must be left out or equal the call of the socket's path",
                    }
                ]
            )
        fields = self.model_dump(exclude={"idempotency_key"}) | {"call_identify_id": call_id}
        # Not validated again: the frame's fields passed the same rules, the path's call id its.
        return OrchestrateRequest.model_construct(**fields), self.idempotency_key or ""


class CallSockets:
    """The route's endpoint: checks the handshake, then serves the socket's turns."""

    def __init__(
        self, app: FastAPI, keyring: KeyRing, admission: TurnEndpoint, max_frame_bytes: int
    ) -> None:
        self.state = app.state  # `turns` is set there by the lifespan
        self._keyring = keyring
        self.admission = admission  # socket turns count in flight with POST /orchestrate's
        self.max_frame_bytes = max_frame_bytes

    async def __call__(self, websocket: WebSocket, call_identify_id: str) -> None:
        started = time.perf_counter()
        try:
            # The key first: a caller without one hears 401 whatever else it sent.
            headers = websocket.headers
            presented = presented_key(headers.get("authorization"), headers.get("x-api-key"))
            caller = self._keyring.authorize(presented, Permission.ORCHESTRATE)
            call_id = validated(
                PathCallId.validate_python, call_identify_id, "path", "call_identify_id"
            )
        except Exception as exc:
            await _deny(websocket, exc, started)
            return
        request_id = correlation_id.get()
        await websocket.accept(
            headers=[(REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
            if request_id
            else None
        )
        socket = _CallSocket(websocket, call_id, caller.key_id, self)
        await socket.serve()
        log.info(
            "call_socket",
            path=websocket.scope["path"],
            turns=socket.turns,
            refused=socket.refused,
            close_code=socket.close_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            request_id=request_id,
        )


async def _deny(websocket: WebSocket, exc: Exception, started: float) -> None:
    answer = error_answer(exc, "GET", websocket.scope["path"])
    request_id = correlation_id.get()
    if request_id:  # the request-id middleware adds it to HTTP answers only
        answer.headers[REQUEST_ID_HEADER] = request_id
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(answer)
    else:  # a server that can only refuse by closing: the reason is the error's code
        code = orjson.loads(answer.body)["error"]["code"]
        await websocket.close(CLOSE_POLICY_VIOLATION, code)
    path = logged_path(websocket.scope, answer.status_code)
    log_request("GET", path, answer.status_code, started, request_id)


class _CallSocket:
    """One open socket: reads frames while its one turn at a time streams its events."""

    def __init__(
        self, websocket: WebSocket, call_id: str, key_id: str | None, sockets: CallSockets
    ) -> None:
        self._ws = websocket
        self._call_id = call_id
        self._key_id = key_id
        self._sockets = sockets
        self._max_frame = sockets.max_frame_bytes
        self._metrics: Metrics = sockets.state.metrics
        self._sending = asyncio.Lock()  # one frame at a time: the reader's and the turn's
        self._turn: asyncio.Task[None] | None = None
        self._gone = False  # the client left, or was closed on: nothing more is sent
        self.turns = 0  # admitted
        self.refused = 0  # error frames sent
        self.close_code: int | None = None

    async def serve(self) -> None:
        try:
            await self._read_frames()
        finally:
            self._gone = True
            if self._turn is not None:
                # Not cancelled: the turn's own task runs to its commit whatever we do; this
                # one only stops relaying it, at its next event.
                await self._turn

    async def _read_frames(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code", 1000)
                return
            text = message.get("text")
            if text is None:
                await self._close(CLOSE_UNSUPPORTED_DATA, "send turns as JSON text frames")
                return
            if len(text) > self._max_frame or len(text.encode()) > self._max_frame:
                await self._close(
                    CLOSE_MESSAGE_TOO_BIG, f"frames are at most {self._max_frame} bytes"
                )
                return
            await self._take(text)

    async def _take(self, text: str) -> None:
        if self._turn is not None and not self._turn.done():
            await self._send_error(
                TurnInProgressOnSocket(
                    "this socket's turn is still running; the frame was dropped: send the next"
                    " turn after its `turn` event",
                    call_identify_id=self._call_id,
                )
            )
            return
        try:
            frame = validated(TurnFrame.model_validate_json, text, "body")
            turn, idempotency_key = frame.turn_of(self._call_id)
        except RequestValidationError as exc:
            await self._send_error(exc)
            return
        self._turn = asyncio.create_task(self._relay(turn, idempotency_key))

    async def _relay(self, turn: OrchestrateRequest, idempotency_key: str) -> None:
        """Runs one turn and sends its events; never raises (the reader awaits it)."""
        admission = self._sockets.admission
        try:
            admission.hold()
            try:
                turns = self._sockets.state.turns
                stream = await open_stream(turns, turn, idempotency_key, self._key_id)
            except BaseException:
                admission.release()
                raise
            # In flight until the turn ends, not its relay: a client may leave a turn that goes on.
            stream.when_over(admission.release)
            self.turns += 1
            self._metrics.streamed_turns_by(TRANSPORT).inc()
            suffix = b',"replayed":true}' if stream.replayed else b"}"
            async for event in stream.events():
                if not await self._send(_frame(event, suffix)):
                    # Leaving the stream never stops the turn (turn_streams.py).
                    self._metrics.stream_clients_gone_by(TRANSPORT).inc()
                    return
        except Exception as exc:
            await self._send_error(exc)

    async def _send_error(self, exc: Exception) -> None:
        answer = error_answer(exc, "WEBSOCKET", self._ws.scope["path"])
        data = {"status": answer.status_code} | orjson.loads(answer.body)
        if await self._send(orjson.dumps({"event": "error", "data": data})):
            self.refused += 1

    async def _send(self, frame: bytes) -> bool:
        """Sends `frame` unless the client is gone; whether it was sent."""
        async with self._sending:
            if self._gone:
                return False
            try:
                await self._ws.send_text(frame.decode())
            except WebSocketDisconnect:
                self._gone = True
                return False
            return True

    async def _close(self, code: int, reason: str) -> None:
        async with self._sending:
            self._gone = True
            self.close_code = code
            await self._ws.close(code, reason)


def _frame(event: StreamEvent, suffix: bytes) -> bytes:
    # The event's data is JSON already: spliced in as it is, not decoded and encoded again.
    return b'{"event":"' + event.name.encode() + b'","data":' + event.data + suffix
