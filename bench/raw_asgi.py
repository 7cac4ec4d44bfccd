"""The raw-ASGI chores the stub agents and the floor share: read a body, send JSON, a lifespan
with nothing to start, a stub's agent card."""

from __future__ import annotations

from typing import Any

import orjson

JSON_HEADERS = [(b"content-type", b"application/json")]


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def respond(send: Any, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def empty_lifespan(receive: Any, send: Any) -> None:
    """The lifespan protocol of an app with nothing to open or close."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def stub_card(url: str, name: str, description: str, *, streaming: bool) -> bytes:
    """A stub agent's A2A 1.0 card, as JSON."""
    return orjson.dumps(
        {
            "name": name,
            "description": description,
            "version": "1",
            "supportedInterfaces": [
                {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
            ],
            "capabilities": {"streaming": streaming},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "stub", "name": "stub", "description": "stub", "tags": ["bench"]}],
        }
    )
