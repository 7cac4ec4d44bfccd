"""A2A client: sends one caller turn to an agent over JSON-RPC 2.0 and returns one typed reply.

Speaks A2A 1.0 (`SendMessage`, `A2A-Version: 1.0`) by default; an agent whose card says it only
speaks 0.3 gets `message/send` instead. The card is read once per agent URL and cached. Given a
listener, a call to an agent whose card says it streams is `SendStreamingMessage`
(`message/stream`), read as Server-Sent Events (a2a_stream.py), the listener hearing the words as
they arrive.
Every transport or protocol failure leaves here as an `AgentFault` subclass.

It speaks httpx's transport API (`httpx.Request` in, `httpx.Response` out) rather than going
through `httpx.AsyncClient`: an A2A call needs none of a client's URL merging, cookie jar, auth
and redirect machinery, which would run on every turn (their cost: bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NamedTuple

import httpx
import orjson
from asgi_correlation_id import correlation_id
from httpx_sse import EventSource, SSEError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentDisconnected,
    AgentError,
    AgentFault,
    AgentHttpError,
    AgentTimeout,
    AgentUnreachable,
)
from orchestrator_flows.core.models import PendingTask
from orchestrator_flows.core.replies import AgentReply
from orchestrator_flows.infra.a2a_stream import (
    StreamAssembly,
    StreamListener,
    normalise_state,
    task_reply,
)
from orchestrator_flows.infra.settings import VERSION

Protocol = Literal["1.0", "0.3"]
CARD_PATHS = (".well-known/agent-card.json", ".well-known/agent.json")


class Card(NamedTuple):
    """What an agent's card tells the client: the protocol it speaks, whether it streams."""

    protocol: Protocol
    streams: bool


class A2AClient:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        timeout: float,
        max_response_bytes: int,
        max_attempts: int = 3,
    ):
        self._transport = transport
        self._timeout = timeout
        # One deadline for the whole call, card and retries included (send_message). Per-phase
        # timeouts of the same length could never fire first; they would only add timers.
        self._extensions = {"timeout": httpx.Timeout(None).as_dict()}
        self._max_bytes = max_response_bytes
        self._max_attempts = max_attempts
        self._cards: dict[str, Card] = {}
        # Agent URLs come from configuration: few. Each with its Host header.
        self._targets: dict[str, tuple[httpx.URL, tuple[bytes, bytes]]] = {}

    async def send_message(
        self,
        url: str,
        text: str,
        metadata: dict[str, Any],
        *,
        message_id: str,
        continues: PendingTask | None = None,
        idempotent: bool = False,
        data: dict[str, Any] | None = None,
        listener: StreamListener | None = None,
    ) -> AgentReply:
        """SendMessage, card look-up included, retried while safe, all within the turn's deadline.

        Every attempt carries the same messageId, so an agent can recognise a repeat. With a
        `listener`, the answer is streamed when the agent streams, else told whole as it comes;
        once words were told, a fault is not retried (they would be told twice).
        """
        attempts = 0
        spoken = False

        async def attempt() -> AgentReply:
            nonlocal attempts, spoken
            attempts += 1
            card = await self._card_of(url)
            if listener is not None and card.streams:
                body = _request(card.protocol, text, metadata, message_id, continues, data, True)
                assembly = StreamAssembly(listener)
                try:
                    await self._stream(url, body, card.protocol, assembly)
                finally:
                    spoken = assembly.spoken
                return assembly.reply()
            body = _request(card.protocol, text, metadata, message_id, continues, data)
            reply = _parse_answer(await self._post(url, body, card.protocol), card.protocol)
            if listener is not None and reply.text:
                listener.chunk(reply.text)
            return reply

        def may_retry(fault: BaseException) -> bool:
            return not spoken and _worth_retrying(fault, idempotent)

        deadline = time.monotonic() + self._timeout
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._attempts(attempt, may_retry, deadline)
        except TimeoutError as exc:
            late = f"agent did not answer within {self._timeout:g}s"
            raise AgentTimeout(late, attempts=attempts) from exc
        except AgentFault as fault:
            if attempts == 1:
                raise
            raise fault.after(attempts) from fault.__cause__
        return reply if attempts == 1 else replace(reply, attempts=attempts)

    async def _attempts(
        self,
        attempt: Callable[[], Awaitable[AgentReply]],
        may_retry: Callable[[BaseException], bool],
        deadline: float,
    ) -> AgentReply:
        """The first attempt on its own, since nearly every call ends there; tenacity's loop,
        whose set-up every call would pay, only once it failed in a way worth retrying."""
        try:
            return await attempt()
        except AgentFault as fault:
            if not may_retry(fault):
                raise
            first_fault = fault
        replayed = False

        async def again() -> AgentReply:
            nonlocal replayed
            if not replayed:  # tenacity's attempt 1 is the one already made: its fault, again
                replayed = True
                raise first_fault
            return await attempt()

        return await self._retrying(may_retry, deadline)(again)

    def _retrying(
        self, may_retry: Callable[[BaseException], bool], deadline: float
    ) -> AsyncRetrying:
        def out_of_time(state: RetryCallState) -> bool:
            late = time.monotonic() + state.upcoming_sleep >= deadline
            return late or state.attempt_number >= self._max_attempts

        return AsyncRetrying(
            retry=retry_if_exception(may_retry),
            wait=_backoff_or_retry_after,
            stop=out_of_time,
            reraise=True,
        )

    async def _card_of(self, url: str) -> Card:
        if url not in self._cards:
            self._cards[url] = await self._read_card(url)
        return self._cards[url]

    async def _read_card(self, url: str) -> Card:
        for path in CARD_PATHS:
            card_url = url.rstrip("/") + "/" + path
            _, raw = await self._exchange("GET", card_url, _CARD_HEADERS)
            if raw is not None:
                try:
                    card = orjson.loads(raw)
                except ValueError:
                    return Card("1.0", streams=False)
                return Card(protocol_from_card(card), streams_from_card(card))
        return Card("1.0", streams=False)  # no card: the current protocol, one-shot answers

    async def _stream(
        self, url: str, body: dict[str, Any], protocol: Protocol, assembly: StreamAssembly
    ) -> None:
        """Reads the agent's stream into `assembly`, to its final event or the stream's end."""
        request = self._request("POST", url, _STREAM_HEADERS[protocol], orjson.dumps(body))
        try:
            answer = await self._transport.handle_async_request(request)
            try:
                await self._read_stream(answer, assembly)
            finally:
                await answer.aclose()
        except httpx.HTTPError as exc:
            raise _fault_of(exc) from exc
        except SSEError as exc:
            raise AgentBadResponse(f"agent stream is not Server-Sent Events: {exc}") from exc

    async def _read_stream(self, answer: httpx.Response, assembly: StreamAssembly) -> None:
        if answer.status_code != 200:
            raise _http_error(answer)
        if not _is_event_stream(answer.headers):
            # One JSON answer instead of a stream: a refusal before the first event (bad request,
            # streaming not supported), or the whole answer at once.
            decoded = _json_rpc(await self._read_limited(answer))
            if "error" in decoded:
                raise _json_rpc_error(decoded["error"])
            assembly.take(decoded.get("result"))
            return
        # Held to the size limit as bytes arrive: an event is decoded only once whole, and an
        # agent could send one that never ends.
        capped = httpx.Response(
            200, headers=answer.headers, stream=_Capped(answer.stream, self._max_bytes)
        )
        async for event in EventSource(capped).aiter_sse():
            if not event.data:
                continue
            try:
                decoded = orjson.loads(event.data)
            except orjson.JSONDecodeError as exc:
                raise AgentBadResponse("agent stream event is not JSON") from exc
            if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
                raise AgentBadResponse("agent stream event is not a JSON-RPC 2.0 response")
            if "error" in decoded:
                raise _json_rpc_error(decoded["error"])
            assembly.take(decoded.get("result"))
            if assembly.finished:
                return
        raise AgentDisconnected("agent stream ended before its final event")

    async def _post(self, url: str, body: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
        answer, raw = await self._exchange("POST", url, _POST_HEADERS[protocol], orjson.dumps(body))
        if raw is None:
            raise _http_error(answer)
        return _json_rpc(raw)

    async def _exchange(
        self, method: str, url: str, headers: RawHeaders, content: bytes = b""
    ) -> tuple[httpx.Response, bytes | None]:
        """One request through the transport: the answer, and its body if it is a 200."""
        request = self._request(method, url, headers, content)
        try:
            answer = await self._transport.handle_async_request(request)
            try:
                body = await self._read_limited(answer) if answer.status_code == 200 else None
            finally:
                # A body in memory holds no connection: closing its Response would free nothing,
                # only run httpx's request context.
                if not isinstance(answer.stream, httpx.ByteStream):
                    await answer.aclose()
        except httpx.HTTPError as exc:
            raise _fault_of(exc) from exc
        return answer, body

    def _request(self, method: str, url: str, headers: RawHeaders, content: bytes) -> httpx.Request:
        # The headers given whole, Host and Content-Length included, and the body as a stream:
        # from `content=` httpx rescans and rebuilds the headers on every request (its cost:
        # bench/RESULTS.md). The request on the wire is the same. The stream is left unread: a
        # transport reads it (httpx's own do; ours takes a ByteStream's bytes).
        target, host = self._target(url)
        raw = [host, *headers]
        if content:
            raw.append((b"Content-Length", str(len(content)).encode()))
        if request_id := correlation_id.get():
            raw.append((b"X-Request-ID", request_id.encode()))  # the agent's logs can name it
        return httpx.Request(
            method,
            target,
            headers=raw,
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )

    def _target(self, url: str) -> tuple[httpx.URL, tuple[bytes, bytes]]:
        if (known := self._targets.get(url)) is None:
            parsed = httpx.URL(url)
            known = self._targets[url] = (parsed, (b"Host", parsed.netloc))
        return known

    async def _read_limited(self, answer: httpx.Response) -> bytes:
        # A body without a Content-Encoding has nothing to decode: its stream is read as it
        # is, without httpx's chunker and decoders around it, which would have nothing to do.
        plain = not answer.is_stream_consumed and not _has_content_encoding(answer.headers)
        chunks, size = [], 0
        async for chunk in answer.stream if plain else answer.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise AgentBadResponse(f"agent answer is over {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


class _Capped(httpx.AsyncByteStream):
    """A response body that fails once more than `limit` bytes of it have arrived."""

    def __init__(self, body: httpx.AsyncByteStream | httpx.SyncByteStream, limit: int) -> None:
        assert isinstance(body, httpx.AsyncByteStream)
        self._body = body
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._body:
            size += len(chunk)
            if size > self._limit:
                raise AgentBadResponse(f"agent stream is over {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._body.aclose()


def _http_error(answer: httpx.Response) -> AgentHttpError:
    return AgentHttpError(
        f"agent answered HTTP {answer.status_code}",
        status=answer.status_code,
        retry_after=retry_after_seconds(answer.headers.get("retry-after")),
    )


def _json_rpc(raw: bytes) -> dict[str, Any]:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AgentBadResponse("agent answer is not JSON") from exc
    if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
        raise AgentBadResponse("agent answer is not a JSON-RPC 2.0 response")
    return decoded


def _json_rpc_error(error: Any) -> AgentError:
    error = error if isinstance(error, dict) else {}
    return AgentError(
        f"agent JSON-RPC error {error.get('code')}: {str(error.get('message', ''))[:500]}"
    )


def _is_event_stream(headers: httpx.Headers) -> bool:
    return headers.get("content-type", "").partition(";")[0].strip() == "text/event-stream"


def _has_content_encoding(headers: httpx.Headers) -> bool:
    # Over the raw names: a lookup by name (`in`, `get`) first works out the headers' text
    # encoding and raises KeyError when absent, costlier than this scan (bench/RESULTS.md).
    return any(name.lower() == b"content-encoding" for name, _ in headers.raw)


RawHeaders = list[tuple[bytes, bytes]]
_HEADERS = [
    (b"Accept", b"application/json"),
    (b"User-Agent", f"orchestrator-flows/{VERSION}".encode()),
]
_JSON = (b"Content-Type", b"application/json")
_A2A_1 = (b"A2A-Version", b"1.0")
_CARD_HEADERS: RawHeaders = [*_HEADERS, _A2A_1]
_POST_HEADERS: dict[Protocol, RawHeaders] = {
    "1.0": [*_HEADERS, _JSON, _A2A_1],
    "0.3": [*_HEADERS, _JSON],
}
_STREAMING = [(b"Accept", b"text/event-stream"), (b"Cache-Control", b"no-store")]
_STREAM_HEADERS: dict[Protocol, RawHeaders] = {
    protocol: [*_STREAMING, *headers[1:]] for protocol, headers in _POST_HEADERS.items()
}
_backoff = wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05)


def _worth_retrying(exc: BaseException, idempotent: bool) -> bool:
    """Never when the agent may have acted, unless it is idempotent and the answer was lost."""
    if not isinstance(exc, AgentFault):
        return False
    sent_and_lost = isinstance(exc, AgentTimeout | AgentDisconnected)
    return not exc.may_have_acted or (idempotent and sent_and_lost)


def _backoff_or_retry_after(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or longer when the agent asked for it (Retry-After)."""
    fault = state.outcome.exception() if state.outcome else None
    asked = getattr(fault, "retry_after", None) or 0.0
    return max(_backoff(state), asked)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _fault_of(exc: httpx.HTTPError) -> AgentFault:
    """httpx's exceptions as our AgentFault tree, once, at the boundary."""
    if isinstance(exc, httpx.TimeoutException):
        return AgentTimeout(f"agent timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError):
        return AgentUnreachable(f"cannot connect to agent: {exc or type(exc).__name__}")
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
        return AgentDisconnected(f"connection to agent broke: {type(exc).__name__}")
    return AgentUnreachable(f"agent call failed: {type(exc).__name__}")


def protocol_from_card(card: Any) -> Protocol:
    """An agent speaks 0.3 only when its card offers no 1.x JSON-RPC interface and claims 0.x."""
    if not isinstance(card, dict):
        return "1.0"
    versions = [
        str(i.get("protocolVersion", ""))
        for i in card.get("supportedInterfaces") or []
        if isinstance(i, dict) and str(i.get("protocolBinding", "JSONRPC")).upper() == "JSONRPC"
    ]
    if any(v.startswith("1") for v in versions):
        return "1.0"
    legacy = str(card.get("protocolVersion", ""))
    if legacy.startswith("0.") or any(v.startswith("0.") for v in versions):
        return "0.3"
    return "1.0"


def streams_from_card(card: Any) -> bool:
    """Only an agent whose card says `capabilities.streaming: true` is asked to stream."""
    capabilities = card.get("capabilities") if isinstance(card, dict) else None
    return isinstance(capabilities, dict) and capabilities.get("streaming") is True


def _request(
    protocol: Protocol,
    text: str,
    metadata: dict[str, Any],
    message_id: str,
    continues: PendingTask | None,
    data: dict[str, Any] | None = None,
    streaming: bool = False,
) -> dict[str, Any]:
    """The JSON-RPC request: the caller's words as a text part, and `data`, if any, as a data
    part after it."""
    if protocol == "1.0":
        parts: list[dict[str, Any]] = [{"text": text}]
        if data is not None:
            parts.append({"data": data})
        message: dict[str, Any] = {"role": "ROLE_USER", "parts": parts}
        method = "SendStreamingMessage" if streaming else "SendMessage"
        params_extra: dict[str, Any] = {"configuration": {}}
    else:
        parts = [{"kind": "text", "text": text}]
        if data is not None:
            parts.append({"kind": "data", "data": data})
        message = {"kind": "message", "role": "user", "parts": parts}
        method, params_extra = "message/stream" if streaming else "message/send", {}
    message |= {"messageId": message_id, "metadata": metadata}
    if continues is not None:
        message["taskId"] = continues["task_id"]
        if continues["context_id"]:
            message["contextId"] = continues["context_id"]
    return {
        "jsonrpc": "2.0",
        "id": message_id,
        "method": method,
        "params": {"message": message, **params_extra},
    }


def _parse_answer(answer: dict[str, Any], protocol: Protocol) -> AgentReply:
    if "error" in answer:
        raise _json_rpc_error(answer["error"])
    result = answer.get("result")
    if not isinstance(result, dict):
        raise AgentBadResponse("agent answer has neither result nor error")
    if isinstance(result.get("message"), dict):
        return _reply_from_message(result["message"])
    if isinstance(result.get("task"), dict):
        return _reply_from_task(result["task"])
    if result.get("kind") == "message":
        return _reply_from_message(result)
    if result.get("kind") == "task":
        return _reply_from_task(result)
    raise AgentBadResponse("agent result is neither a message nor a task")


def _reply_from_message(message: dict[str, Any]) -> AgentReply:
    texts, data = _read_parts(message.get("parts"))
    return AgentReply(
        text="\n".join(texts),
        kind="message",
        data=data,
        task_id=_str_or_none(message.get("taskId")),
        context_id=_str_or_none(message.get("contextId")),
    )


def _reply_from_task(task: dict[str, Any]) -> AgentReply:
    status = task.get("status") if isinstance(task.get("status"), dict) else {}
    state = normalise_state(status.get("state"))
    task_id = _str_or_none(task.get("id"))
    if not task_id or state is None:  # before reading the rest
        raise AgentBadResponse("agent task has no id or no state")
    texts: list[str] = []
    data: list[Any] = []
    for artifact in task.get("artifacts") or []:
        if isinstance(artifact, dict):
            # An artifact's parts are its content in order: a streamed artifact grows by
            # appended parts, word by word, so they join as they are.
            pieces: list[str] = []
            _extend(pieces, data, artifact.get("parts"))
            if pieces:
                texts.append("".join(pieces))
    if isinstance(status.get("message"), dict):
        _extend(texts, data, status["message"].get("parts"))
    return task_reply("\n".join(texts), data, task_id, _str_or_none(task.get("contextId")), state)


def _read_parts(parts: Any) -> tuple[list[str], list[Any]]:
    texts: list[str] = []
    data: list[Any] = []
    _extend(texts, data, parts)
    return texts, data


def _extend(texts: list[str], data: list[Any], parts: Any) -> None:
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif "data" in part:
            data.append(part["data"])


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = ["A2AClient", "AgentFault", "AgentReply", "protocol_from_card"]
