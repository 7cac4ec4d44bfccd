"""The `orchestrator-flows` command's own logic (the commands that serve are integration tests)."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator

import pytest
import uvicorn

from orchestrator_flows import cli
from orchestrator_flows.web.auth import KeyRing, Permission, Role, parse_api_keys
from orchestrator_flows.web.http_limits import PROTOCOL, HttpLimits, LimitedHttpProtocol
from tests.support.agents import free_port
from tests.support.service import API_KEYS, IDEMPOTENCY_SECRET


def test_keys_new_prints_a_working_key_and_only_its_hash_for_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["keys", "new", "--role", "auditor"]) == 0

    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    entry = lines["API_KEYS entry"].strip()
    key = entry.removeprefix("auditor:")
    assert KeyRing(parse_api_keys(entry)).authorize(key, Permission.READ).roles == {Role.AUDITOR}
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


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """Every command line that has its own --help: (words, its parser)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


@pytest.mark.parametrize(
    ("words", "command"),
    [pytest.param(*found, id=" ".join(found[0]) or "top") for found in commands(cli.parser())],
)
def test_help_of_every_command_shows_each_options_meaning_and_default(
    words: tuple[str, ...], command: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*words, "--help"])

    shown = " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal's width
    assert done.value.code == 0
    options = [a for a in command._actions if a.option_strings and a.dest != "help"]
    for option in options:
        assert option.help, f"{option.option_strings} has no help"
        assert " ".join(option.help.split()) in shown
        if option.default is not None and option.nargs != 0 and not option.required:
            assert f"(default: {option.default})" in shown, option.option_strings


def test_servers_the_demo_and_agents_commands_start_have_the_http_limits_and_no_access_log() -> (
    None
):
    limits = HttpLimits(4096, 1.0, 2.0, 10, descriptors=0)

    servers = cli.ServerThread({("127.0.0.1", 0): object(), ("127.0.0.1", 1): object()}, limits)

    for server in servers.servers:
        assert issubclass(server.config.http, LimitedHttpProtocol)
        assert server.config.http.limits == limits
        assert server.config.access_log is False


def test_serve_gives_uvicorn_the_configured_shutdown_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHUTDOWN_GRACE_SEC", "7.5")
    monkeypatch.setenv("API_KEYS", API_KEYS)
    # A Redis URL: no embedded Redis is started (nothing connects to it before uvicorn would).
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("IDEMPOTENCY_SECRET", IDEMPOTENCY_SECRET)
    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(
        cli.uvicorn, "run", lambda app, **options: configs.append(uvicorn.Config(app, **options))
    )

    assert cli.run_serve(cli.parser().parse_args(["serve", "--port", str(free_port())])) == 0

    [config] = configs
    assert config.timeout_graceful_shutdown == 7.5
    assert (config.http, config.access_log) == (PROTOCOL, False)  # the limits, no access log
