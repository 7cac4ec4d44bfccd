"""The `orchestrator-flows` command's own logic (the commands that serve are integration tests)."""

from __future__ import annotations

import hashlib

import pytest

import cli
from auth import KeyRing, Role, parse_api_keys
from http_limits import HttpLimits, LimitedHttpProtocol


def test_keys_new_prints_a_working_key_and_only_its_hash_for_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["keys", "new", "--role", "auditor"]) == 0

    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    entry = lines["API_KEYS entry"].strip()
    key = entry.removeprefix("auditor:")
    assert KeyRing(parse_api_keys(entry)).identify(key).roles == {Role.AUDITOR}
    assert lines["API_KEYS_FILE line"].strip() == (
        f"auditor sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    )
    assert len(key) >= 40  # 256 random bits


def test_serve_without_keys_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("API_KEYS", "API_KEYS_FILE", "AUTH_DISABLED"):
        monkeypatch.delenv(name, raising=False)

    assert cli.main(["serve", "--port", "1"]) == 1

    assert "no API keys" in capsys.readouterr().err


def test_servers_the_demo_and_agents_commands_start_have_the_http_limits_and_no_access_log() -> (
    None
):
    limits = HttpLimits(4096, 1.0, 2.0, 10, descriptors=0)

    servers = cli.ServerThread({("127.0.0.1", 0): object(), ("127.0.0.1", 1): object()}, limits)

    for server in servers.servers:
        assert issubclass(server.config.http, LimitedHttpProtocol)
        assert server.config.http.limits == limits
        assert server.config.access_log is False
