"""Settings: read from the environment once, AGENT_URL_<ROLE> collected, bad values refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.infra.settings import (
    DEFAULT_FLOWS_FILE,
    Settings,
    settings_from_environment,
)

OUR_VARIABLES = (
    "REDIS_URL",
    "MAX_BODY_BYTES",
    "SHUTDOWN_GRACE_SEC",
    "SESSION_TTL_SEC",
    "A2A_TIMEOUT_SEC",
    "FLOWS_FILE",
    "KEY_PREFIX",
    "IDEMPOTENCY_SECRET",
)
SECRET = "s" * 32


def use_redis(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """REDIS_URL as an operator sets it: with the secret every replica shares."""
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("IDEMPOTENCY_SECRET", SECRET)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests must not see whatever the machine running them has set."""
    for name in list(os.environ):
        if name.upper().startswith("AGENT_URL") or name.upper() in OUR_VARIABLES:
            monkeypatch.delenv(name)


def test_defaults_without_environment() -> None:
    settings = Settings()

    assert settings.redis_url is None  # the embedded Redis
    assert settings.idempotency_secret is None  # the embedded Redis's own, made at start-up
    assert settings.orch_state_dir == Path(".orchestrator")
    assert settings.session_ttl_sec == 3600
    assert settings.flows_file == DEFAULT_FLOWS_FILE
    assert settings.agent_urls == {}
    assert settings.max_body_bytes == 64 * 1024
    assert settings.shutdown_grace_sec == 20


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    use_redis(monkeypatch, "redis://redis.internal:6380/2")
    monkeypatch.setenv("SESSION_TTL_SEC", "120")
    monkeypatch.setenv("A2A_TIMEOUT_SEC", "2.5")
    monkeypatch.setenv("FLOWS_FILE", "/etc/orchestrator/flows.toml")

    settings = Settings()

    assert settings.redis_url == "redis://redis.internal:6380/2"
    assert settings.session_ttl_sec == 120
    assert settings.a2a_timeout_sec == 2.5
    assert settings.flows_file == Path("/etc/orchestrator/flows.toml")


def test_turn_lease_outlives_the_agent_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A2A_TIMEOUT_SEC", "2.5")

    assert Settings().turn_lease_sec == 7.5


def test_agent_url_variables_become_lower_case_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_URL_REFUND", "http://refund.internal:9000/")
    monkeypatch.setenv("AGENT_URL_BILLING_V2", "https://billing.internal/a2a")

    assert Settings().agent_urls == {
        "refund": "http://refund.internal:9000/",
        "billing_v2": "https://billing.internal/a2a",
    }


def test_bare_agent_url_prefix_names_no_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_URL_", "http://nobody.internal/")

    assert Settings().agent_urls == {}


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    use_redis(monkeypatch, "redis://from-env:6379/0")
    monkeypatch.setenv("SESSION_TTL_SEC", "120")
    monkeypatch.setenv("AGENT_URL_REFUND", "http://from-env/")

    settings = Settings(
        redis_url="redis://from-test:6379/0",
        idempotency_secret=SECRET,
        session_ttl_sec=60,
        agent_urls={"refund": "http://from-test/"},
    )

    assert settings.redis_url == "redis://from-test:6379/0"
    assert settings.session_ttl_sec == 60
    assert settings.agent_urls["refund"] == "http://from-test/"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_TTL_SEC", "0"),
        ("SESSION_TTL_SEC", "an hour"),
        ("A2A_TIMEOUT_SEC", "-1"),
        ("KEY_PREFIX", "orch:{bad}"),
        ("MASK_PHONE_REGION", "Atlantis"),
        ("MAX_BODY_BYTES", "0"),
        ("SHUTDOWN_GRACE_SEC", "-1"),
    ],
)
def test_invalid_environment_value_fails_validation(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert name.lower() in str(caught.value)


def test_phone_region_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASK_PHONE_REGION", "gb")

    assert Settings().mask_phone_region == "GB"


def test_settings_cannot_change_after_start_up() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.session_ttl_sec = 1  # type: ignore[misc]


def test_cluster_needs_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "true")

    with pytest.raises(ValidationError, match="REDIS_CLUSTER=true needs REDIS_URL"):
        Settings()

    use_redis(monkeypatch, "redis://node-1:6379/0")
    assert Settings().redis_cluster is True


def test_sentinel_needs_a_url_and_excludes_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "main")
    with pytest.raises(ValidationError, match="REDIS_SENTINEL_MASTER needs REDIS_URL"):
        Settings()

    use_redis(monkeypatch, "redis://sentinel-1:26379,sentinel-2:26379/0")
    assert Settings().redis_sentinel_master == "main"
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings()


def test_waiting_for_replicas_needs_a_url_and_a_wait_inside_the_redis_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_WAIT_REPLICAS", "1")
    with pytest.raises(ValidationError, match="REDIS_WAIT_REPLICAS needs REDIS_URL"):
        Settings()

    use_redis(monkeypatch, "redis://primary:6379/0")
    assert (Settings().redis_wait_replicas, Settings().redis_wait_timeout_ms) == (1, 100)
    monkeypatch.setenv("REDIS_WAIT_TIMEOUT_MS", "600")  # more than half the 1 s timeout
    with pytest.raises(ValidationError, match="at most half of REDIS_TIMEOUT_SEC"):
        Settings()
    monkeypatch.setenv("REDIS_TIMEOUT_SEC", "1.2")
    assert Settings().redis_wait_timeout_ms == 600


def test_a_real_redis_without_the_shared_secret_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-password@redis.internal:6379/0")
    monkeypatch.setenv("API_KEYS", "client:an-api-key-nobody-may-see")

    with pytest.raises(ConfigError) as caught:
        settings_from_environment()

    said = str(caught.value)
    assert "IDEMPOTENCY_SECRET" in said
    assert "hunter2" not in said and "an-api-key-nobody-may-see" not in said


def test_a_short_secret_is_refused_without_being_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEMPOTENCY_SECRET", "too-short-to-be-safe")

    with pytest.raises(ConfigError) as caught:
        settings_from_environment()

    assert "IDEMPOTENCY_SECRET needs 32+ characters" in str(caught.value)
    assert "too-short-to-be-safe" not in str(caught.value)


def test_the_secret_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    use_redis(monkeypatch, "redis://redis.internal:6379/0")

    assert SECRET not in repr(Settings()) and SECRET not in str(Settings().model_dump())
