"""Shared resources opened and closed with the app: the Redis client and the agents' HTTP pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import redis.asyncio as redis
from redis.exceptions import RedisClusterException, RedisError

from orchestrator_flows.infra.agent_transport import PoolLimits, agent_transport
from orchestrator_flows.infra.embedded_redis import start_embedded_redis
from orchestrator_flows.infra.redis_store import connect, disconnect
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.ops.tracing import traced

log = logging.getLogger("orchestrator")
SECRET_QUERY_ARGUMENTS = {"password", "ssl_password"}  # redis-py reads both from the URL


@asynccontextmanager
async def session_store(
    settings: Settings, given: redis.Redis | None
) -> AsyncIterator[redis.Redis]:
    """The Redis client: the one given (tests), REDIS_URL's, or an embedded server's."""
    if given is not None:
        yield given
        return
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = await asyncio.to_thread(start_embedded_redis, settings.orch_state_dir)
        url = embedded.url
        log.info(
            "session store: embedded Redis at %s, data in %s (set REDIS_URL to use a real one)",
            url,
            embedded.data_dir,
        )
    else:
        log.info("session store: Redis at %s", redacted(url))
    client = connect(
        url,
        settings.redis_timeout_sec,
        cluster=settings.redis_cluster,
        sentinel_master=settings.redis_sentinel_master,
        max_connections=settings.redis_max_connections,
    )
    try:
        if embedded is None:
            await _first_contact(client, url, cluster=settings.redis_cluster)
        yield client
    finally:
        await disconnect(client)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _first_contact(client: redis.Redis, url: str, *, cluster: bool) -> None:
    """Reaches REDIS_URL's Redis once at start, so that one that does not answer is said at
    once, in one line, rather than only by the first turns' 503s. The service starts anyway:
    /readyz says not ready, turns answer 503, and the client tries again on each command.
    A cluster's slot map is learnt now too, rather than by the first turns to arrive together
    (redis-py's cluster client set itself up concurrently then, and closed connections other
    turns were using)."""
    try:
        if cluster:
            await client.initialize()  # type: ignore[attr-defined]
        else:
            await client.ping()
    except (RedisError, RedisClusterException, OSError) as exc:
        log.warning(
            "session store: Redis at %s not reachable at start (%s: %s); /readyz says not ready "
            "and turns answer 503 until it is",
            redacted(url),
            type(exc).__name__,
            exc,
        )


def agent_pool(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None,
    on_wait: Callable[[float], None] = lambda seconds: None,
) -> httpx.AsyncBaseTransport:
    """The agents' connection pool (the one given, for tests), traced when OTEL_ENABLED.
    `on_wait` hears how long a call waited for a connection, when it had to."""
    if transport is None:
        limits = PoolLimits(
            total=settings.agent_max_connections,
            per_host=settings.agent_max_connections_per_host,
            keepalive_sec=settings.agent_keepalive_sec,
        )
        transport = agent_transport(limits, on_wait)
    if settings.otel_enabled:
        transport = traced(transport)  # sends `traceparent` to the agents
    return transport


def redacted(url: str) -> str:
    """The URL without its passwords (user-info or query), fit for a log line."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not parts.password and not any(name in SECRET_QUERY_ARGUMENTS for name, _ in query):
        return url
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = [(name, "***" if name in SECRET_QUERY_ARGUMENTS else value) for name, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*/")))
