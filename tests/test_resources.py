"""What the service says about its Redis never shows a password."""

from __future__ import annotations

import pytest

from resources import redacted


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
