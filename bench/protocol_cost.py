"""What the HTTP limits cost a request: uvicorn's httptools protocol and http_limits' one, each
fed the same turn-sized requests in this process (no sockets, no app work), one after another
on one keep-alive connection.

    python bench/protocol_cost.py --protocol stock --requests 20000
    python bench/protocol_cost.py --protocol limited --requests 20000

Prints the wall time per request. On a shared machine that varies; under valgrind the count is
exact: run each protocol with two --requests values and divide the difference in instructions
by the difference in requests (start-up cancels out), as bench/inprocess.py explains.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orchestrator_flows.web.http_limits import HttpLimits, limited_protocol

BODY = (
    b'{"call_identify_id":"CALL-000123","account_id":"ACC-42","eci":"ECI-1",'
    b'"input_message":"I would like a refund for order 10442, the vase was shattered.",'
    b'"intent":"refund_request"}'
)
REQUEST = (
    b"POST /orchestrate HTTP/1.1\r\nHost: orchestrator:8000\r\nUser-Agent: python-httpx/0.28\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
    b"Authorization: Bearer client-key-0123456789abcdef0123456789abcdef\r\n"
    b"Idempotency-Key: 7f9c2d1e-5b7a-4c11-9e0f-3a2b1c0d9e8f\r\n"
    b"X-Request-ID: 4e1f0c2b9a8d7e6f5a4b3c2d1e0f9a8b\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
) + BODY
ANSWER = b'{"status":"success","step_seq":4}' * 16


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers, as the turn endpoint does, without its work."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class Transport(asyncio.Transport):
    """Takes what the protocol writes; tells it when an answer is complete."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        if data.endswith(ANSWER):
            self.answered.set()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def serve(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    config = Config(app, http=protocol_class, log_level="warning", access_log=False)
    config.load()
    protocol = protocol_class(config, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for _ in range(requests):
        transport.answered.clear()
        protocol.data_received(REQUEST)
        await transport.answered.wait()
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["stock", "limited"], required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    limits = HttpLimits(16384, 10.0, 30.0, 2048, descriptors=0)
    chosen = HttpToolsProtocol if args.protocol == "stock" else limited_protocol(limits)
    elapsed = uvloop.run(serve(chosen, args.requests))
    print(f"{args.protocol}: {args.requests} requests, {elapsed / args.requests * 1e6:.2f} µs each")


if __name__ == "__main__":
    main()
