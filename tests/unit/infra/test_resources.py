"""What the service says about its Redis: which one, why it failed, never a password."""

from __future__ import annotations

import logging

import pytest

from orchestrator_flows.infra.resources import redacted, session_store
from orchestrator_flows.infra.settings import Settings
from tests.support.agents import free_port
from tests.support.service import IDEMPOTENCY_SECRET


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("redis://cache:6379/0?password=s3cret&db=2", "redis://cache:6379/0?password=***&db=2"),
        (
            "rediss://cache/0?ssl_ca_certs=/etc/ca.pem&ssl_password=s3cret",
            "rediss://cache/0?ssl_ca_certs=/etc/ca.pem&ssl_password=***",
        ),
    ],
)
def test_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


async def test_redis_down_at_start_is_one_warning_naming_it_and_the_service_starts_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:s3cret-password@127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(redis_url=url, idempotency_secret=IDEMPOTENCY_SECRET, redis_timeout_sec=0.2)

    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        async with session_store(settings, None) as client:
            started = client is not None

    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert started
    assert redacted(url) in warning and "s3cret-password" not in warning
    assert "not reachable at start (ConnectionError" in warning
