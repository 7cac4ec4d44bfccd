"""The HTTP API: the app factory, the four endpoints and the one place where errors become answers.

`uvicorn main:app` serves the app built from the environment's settings.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import orjson
import redis.asyncio as redis
import structlog
from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator_flows.core.errors import (
    AccountMismatch,
    BodyTooLarge,
    CallComplete,
    CallNotFound,
    CallSizeLimit,
    CallStepLimit,
    ConfigError,
    Forbidden,
    HeaderTooLarge,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IntentNotAllowed,
    IntentRequired,
    InvalidRequest,
    NoIntentMatched,
    Overloaded,
    StoredRecordUnreadable,
    StoreUnavailable,
    TooManyConnections,
    TurnConflict,
    TurnInProgress,
    Unauthenticated,
    UnknownIntent,
)
from orchestrator_flows.core.flows import FlowConfig, load_flows
from orchestrator_flows.core.masking.mask import MaskingPolicy
from orchestrator_flows.core.models import (
    AgentHealth,
    OrchestrateResponse,
    Readiness,
    SessionView,
    Stats,
    StepRecord,
)
from orchestrator_flows.core.session_views import session_view
from orchestrator_flows.infra.a2a_client import A2AClient
from orchestrator_flows.infra.redis_store import RedisStore, ReplicaWait
from orchestrator_flows.infra.resources import agent_pool, session_store
from orchestrator_flows.infra.settings import VERSION, Settings, settings_from_environment
from orchestrator_flows.ops.logs import configure_logging
from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.ops.runtime import tune_garbage_collector
from orchestrator_flows.ops.tracing import enable_tracing
from orchestrator_flows.service.breakers import Breakers
from orchestrator_flows.service.fingerprints import fingerprint_key
from orchestrator_flows.service.intent_choice import trained_chooser
from orchestrator_flows.service.turns import TurnRules, TurnService
from orchestrator_flows.web.access_log import RequestLog
from orchestrator_flows.web.api_docs import add_offline_docs, error_responses, turn_answer
from orchestrator_flows.web.auth import Caller, Permission, keyring_from, require
from orchestrator_flows.web.call_socket import add_call_sockets
from orchestrator_flows.web.console import add_console
from orchestrator_flows.web.error_answers import add_error_handlers
from orchestrator_flows.web.paths import CallIdPath
from orchestrator_flows.web.request_ids import add_request_ids
from orchestrator_flows.web.turn_endpoint import (
    Served,
    TurnEndpoint,
    TurnMiddleware,
    openapi_extra,
)

log = logging.getLogger("orchestrator")
events = structlog.get_logger("orchestrator.sessions")

# What each operation may answer besides its success; OpenAPI documents them (api_docs.py).
DENIED = (Unauthenticated, Forbidden)
TURN_ERRORS = (
    *DENIED,
    IntentNotAllowed,
    CallComplete,
    AccountMismatch,
    CallStepLimit,
    CallSizeLimit,
    TurnInProgress,
    IdempotencyKeyInProgress,
    TurnConflict,
    BodyTooLarge,
    InvalidRequest,
    UnknownIntent,
    IntentRequired,
    NoIntentMatched,
    IdempotencyKeyReused,
    StoreUnavailable,
    StoredRecordUnreadable,
    Overloaded,
    # Answered by the HTTP server itself (http_limits.py), before any endpoint.
    HeaderTooLarge,
    TooManyConnections,
)
SESSION_ERRORS = (*DENIED, CallNotFound, InvalidRequest, StoreUnavailable)
SESSION_READ_ERRORS = (*SESSION_ERRORS, StoredRecordUnreadable)


def create_app(
    settings: Settings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    agent_transport: httpx.AsyncBaseTransport | None = None,
    breaker_clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Builds the service. Tests pass their own Redis client, agent transport or the clock the
    circuit breakers time their reset period by."""
    settings = settings or Settings()
    flows = load_flows(settings.flows_file, settings.agent_urls)
    app = FastAPI(
        title="Orchestrator Flows",
        version=VERSION,
        summary="Drives a call through five stages, one A2A agent per intent, audited in Redis.",
        lifespan=_lifespan(settings, flows, redis_client, agent_transport, breaker_clock),
        docs_url=None,  # served from local files instead: api_docs.add_offline_docs
        redoc_url=None,
        # Tracing is ours (OTEL_ENABLED, opentelemetry-instrumentation-fastapi); FastAPI's own
        # telemetry, off here, looks up OpenTelemetry's providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # A path with a slash too many is a 404 like any unknown path: a redirect would be
        # built from the request's Host header.
        redirect_slashes=False,
    )
    app.state.metrics = metrics = Metrics(
        set(flows.stage_of_intent),
        lambda: app.state.breakers.snapshot(),
        in_flight=lambda: turn.in_flight,
    )
    app.state.keyring = keyring_from(settings)
    app.state.settings = settings
    app.state.stopping = False  # set by a server run without signal handlers: cli.ServerThread
    turn = TurnEndpoint(
        app,
        app.state.keyring,
        settings.max_body_bytes,
        max_in_flight=settings.max_turns_in_flight,
        on_shed=metrics.turns_shed.inc,
        ping_sec=settings.stream_ping_sec,
    )
    add_error_handlers(app)
    _add_routes(app, settings, turn)
    add_call_sockets(app, app.state.keyring, turn, settings.max_body_bytes)
    add_offline_docs(app)
    add_console(app, settings)
    # From the outside in: the request id (so that every answer and log line carries it), the
    # request's log line, then POST /orchestrate answered ahead of the router. Middleware added
    # later (by whoever builds the app) wraps all three, the turn included.
    app.add_middleware(TurnMiddleware, endpoint=turn)
    app.add_middleware(RequestLog)
    add_request_ids(app)
    if settings.otel_enabled:
        enable_tracing(app)
    return app


def _unreplicated(metrics: Metrics, call_id: str, acknowledged: int) -> None:
    metrics.unreplicated_commits.inc()
    log.warning(
        "call %s: step recorded on the Redis primary, but only %d replica(s) confirmed it in"
        " time; a failover now could lose it",
        call_id,
        acknowledged,
    )


def _turn_lease_sec(settings: Settings, flows: FlowConfig) -> float:
    """A turn asks at most two agents, one after the other, each within A2A_TIMEOUT_SEC: the
    classifier agent (when one is configured and the turn has no intent), then the intent's.
    Its lease on the call outlasts both, or the commit would find it gone after the agents
    acted (and another turn could take the call meanwhile)."""
    agent_calls = 2 if flows.classifier.agent_role is not None else 1
    return settings.turn_lease_sec + (agent_calls - 1) * settings.a2a_timeout_sec


def _lifespan(
    settings: Settings,
    flows: FlowConfig,
    redis_client: redis.Redis | None,
    transport: httpx.AsyncBaseTransport | None,
    breaker_clock: Callable[[], float],
):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = app.state.metrics
        async with (
            session_store(settings, redis_client) as client,
            agent_pool(
                settings, transport, on_wait=metrics.pool_wait_seconds_by("agents").observe
            ) as pool,
        ):
            app.state.store = RedisStore(
                client,
                prefix=settings.key_prefix,
                ttl_sec=settings.session_ttl_sec,
                lease_sec=_turn_lease_sec(settings, flows),
                max_call_bytes=settings.max_call_bytes,
                observe=lambda op, sec: metrics.redis_seconds_by(op).observe(sec),
                on_fault=lambda op, reason: metrics.redis_faults_by(op, reason).inc(),
                replica_wait=ReplicaWait(
                    settings.redis_wait_replicas, settings.redis_wait_timeout_ms
                ),
                on_unreplicated=functools.partial(_unreplicated, metrics),
                max_operations=settings.redis_max_connections,
                slot_wait_sec=settings.redis_pool_timeout_sec,
                on_wait=metrics.pool_wait_seconds_by("redis").observe,
            )
            agents = A2AClient(
                pool,
                timeout=settings.a2a_timeout_sec,
                max_response_bytes=settings.max_agent_response_bytes,
                max_attempts=settings.agent_max_attempts,
            )
            app.state.breakers = Breakers(
                flows.agents,
                threshold=settings.agent_circuit_failures,
                reset_sec=settings.agent_circuit_reset_sec,
                clock=breaker_clock,
            )
            app.state.flows = flows
            rules = _turn_rules(settings, fingerprint_key(settings))
            intents = await trained_chooser(
                flows,
                metrics,
                cache_dir=settings.orch_state_dir / "models",
                use_encoder=settings.classifier_encoder,
            )
            app.state.turns = TurnService(
                app.state.store, agents, flows, app.state.breakers, metrics, rules, intents=intents
            )
            tune_garbage_collector()
            try:
                yield
            finally:
                # Streamed turns whose client left still reach their commit.
                await app.state.turns.drain(settings.shutdown_grace_sec)
                await app.state.store.close()

    return lifespan


def _turn_rules(settings: Settings, fingerprint_key: bytes) -> TurnRules:
    masking = MaskingPolicy(
        emails=settings.mask_emails,
        phones=settings.mask_phones,
        auth_digits=settings.mask_auth_digits,
        phone_region=settings.mask_phone_region,
    )
    return TurnRules(
        max_steps=settings.max_steps_per_call, masking=masking, fingerprint_key=fingerprint_key
    )


# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def _store(request: Request) -> RedisStore:
    return request.app.state.store


def _add_routes(app: FastAPI, settings: Settings, turn: TurnEndpoint) -> None:
    @app.get("/healthz", summary="The process is alive (it does not check Redis or agents)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def orchestrate() -> Response:
        # TurnMiddleware serves POST /orchestrate before routing; were it not there, this route
        # would, with the same endpoint. FastAPI documents the operation from here.
        return Served(turn)

    app.router.add_api_route(
        "/orchestrate",
        orchestrate,
        methods=["POST"],
        response_model=OrchestrateResponse,
        responses=turn_answer() | error_responses(*TURN_ERRORS),
        summary="Send one caller turn; the call's agent for this stage and intent answers it",
        openapi_extra=openapi_extra(),
    )

    _add_monitoring_routes(app, settings)
    _add_session_routes(app)


def _add_monitoring_routes(app: FastAPI, settings: Settings) -> None:
    guard = [Security(require(Permission.MONITOR))] if settings.protect_monitoring else []
    denied = error_responses(*DENIED) if settings.protect_monitoring else None

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics (text exposition format)",
        dependencies=guard,
        responses=denied,
    )
    async def metrics(request: Request) -> Response:
        body = request.app.state.metrics.exposition()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/stats",
        response_model=Stats,
        summary="Per agent and per stage figures",
        dependencies=guard,
        responses=denied,
    )
    async def stats(request: Request) -> Stats:
        return Stats(**request.app.state.metrics.stats())

    @app.get(
        "/agents",
        response_model=list[AgentHealth],
        summary="Each agent and its circuit",
        dependencies=guard,
        responses=denied,
    )
    async def agents(request: Request) -> list[AgentHealth]:
        return _agent_health(request.app)

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="Ready to serve turns: Redis answers and the flows are loaded",
    )
    async def readyz(request: Request) -> JSONResponse:
        try:
            await request.app.state.store.ping()
            redis_status = "ok"
        except StoreUnavailable as exc:
            redis_status = f"unavailable: {exc.details.get('reason', 'error')}"
        ready = Readiness(
            status="ready" if redis_status == "ok" else "not_ready",
            redis=redis_status,
            flows="loaded",
            agents={a.role: a.circuit["state"] for a in _agent_health(request.app)},
        )
        return JSONResponse(ready.model_dump(), status_code=200 if redis_status == "ok" else 503)


def _add_session_routes(app: FastAPI) -> None:
    reader = [Security(require(Permission.READ))]

    @app.get(
        "/session/{call_identify_id}",
        response_model=SessionView,
        responses=error_responses(*SESSION_READ_ERRORS),
        summary="The call's state and its steps",
        dependencies=reader,
    )
    async def get_session(
        call_identify_id: CallIdPath, store: Annotated[RedisStore, Depends(_store)]
    ) -> SessionView:
        found = await store.read_call(call_identify_id)
        if found is None:
            raise CallNotFound.of(call_identify_id)
        return session_view(*found, store.ttl_sec)

    @app.get(
        "/session/{call_identify_id}/steps",
        response_model=list[StepRecord],
        responses=error_responses(*SESSION_READ_ERRORS),
        summary="The call's audit trail, oldest step first",
        dependencies=reader,
    )
    async def get_steps(
        call_identify_id: CallIdPath, store: Annotated[RedisStore, Depends(_store)]
    ) -> Response:
        steps = await store.read_steps(call_identify_id)
        if steps is None:
            raise CallNotFound.of(call_identify_id)
        return Response(orjson.dumps(steps), media_type="application/json")

    @app.delete(
        "/session/{call_identify_id}",
        status_code=204,
        responses=error_responses(*SESSION_ERRORS),
        summary="Forget the call and its trail",
    )
    async def delete_session(
        call_identify_id: CallIdPath,
        caller: Annotated[Caller, Security(require(Permission.DELETE))],
        store: Annotated[RedisStore, Depends(_store)],
    ) -> Response:
        if not await store.delete_call(call_identify_id):
            raise CallNotFound.of(call_identify_id)
        # The trail is gone; this line is what is left to say who removed it.
        events.info("call_deleted", call_identify_id=call_identify_id, api_key_id=caller.key_id)
        return Response(status_code=204)


def _agent_health(app: FastAPI) -> list[AgentHealth]:
    flows, circuits = app.state.flows, app.state.breakers.snapshot()
    return [
        AgentHealth(
            role=role,
            url=url,
            idempotent=role in flows.idempotent_roles,
            circuit=circuits[role],
        )
        for role, url in flows.agents.items()
    ]


@functools.cache
def _app_from_environment() -> FastAPI:
    try:
        settings = settings_from_environment()
        configure_logging(settings.log_level, settings.log_format)
        return create_app(settings)
    except ConfigError as exc:
        sys.exit(f"orchestrator-flows: configuration error: {exc}")


def __getattr__(name: str) -> FastAPI:
    # `uvicorn main:app` builds the app from the environment on first use; a module that only
    # imports create_app (the CLI, the tests) does not need a configured environment.
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
