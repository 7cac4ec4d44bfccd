"""The service as operators start it: `uvicorn main:app`, configured by the environment."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE
from tests.integration.conftest import (
    ACCOUNT_ID,
    CALL_ID,
    SERVICE_DIR,
    Agents,
    RedisTarget,
    RedisView,
    clean_environment,
    uvicorn_command,
    wait_until_serving,
)
from tests.support.agents import free_port
from tests.support.leaks import shows_test_card
from tests.support.service import bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def service_from_environment(redis_target: RedisTarget, agents: Agents) -> Iterator[str]:
    """The URL of the service started as a subprocess, configured by its environment only."""
    env = clean_environment() | redis_target.env
    env |= {f"AGENT_URL_{role.upper()}": url for role, url in agents.urls.items()}
    port = free_port()
    process = subprocess.Popen(
        uvicorn_command(port), cwd=SERVICE_DIR, env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_service_started_from_environment_records_a_turn(
    service_from_environment: str, store: RedisView, agents: Agents
) -> None:
    url = service_from_environment
    body = {
        "call_identify_id": CALL_ID,
        "account_id": ACCOUNT_ID,
        "eci": "ECI-1",
        "input_message": "hello",
        "intent": "greeting",
    }

    answer = httpx.post(url + "/orchestrate", json=body, headers=bearer(), timeout=10)

    assert answer.status_code == 200, answer.text
    assert answer.json()["next_flow_id"] == 2
    [step] = store.steps()
    assert (step["intent"], step["a2a_agent_url"]) == ("greeting", agents.urls["greeting"])
    assert store.state()["current_flow_id"] == 2
    assert agents.executors["greeting"].seen.texts == ["hello"]


@pytest.mark.single_redis
def test_plain_uvicorn_logs_requests_without_their_query_strings(
    redis_target: RedisTarget, store: RedisView
) -> None:
    # Without --no-access-log: uvicorn's access line, which wrote the query string as it came,
    # stays off all the same; the service's own line names the path alone.
    port = free_port()
    process = subprocess.Popen(
        uvicorn_command(port),
        cwd=SERVICE_DIR,
        env=clean_environment() | redis_target.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        answer = httpx.get(url + "/healthz?pan=4111111111111111", timeout=10)
    finally:
        process.terminate()
        _, logged = process.communicate(timeout=10)

    assert answer.status_code == 200
    assert '"path":"/healthz","status":200' in logged
    assert not shows_test_card(logged)


def start_and_wait_for_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`uvicorn main:app` with this environment, expected to stop by itself at start-up."""
    return subprocess.run(
        uvicorn_command(free_port()),
        cwd=SERVICE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_service_with_a_bad_flows_file_stops_naming_the_problem(tmp_path: Path) -> None:
    flows = tmp_path / "flows.toml"
    default = DEFAULT_FLOWS_FILE.read_text(encoding="utf-8")
    flows.write_text(default.replace('refund_request = "refund"', 'refund_request = "nobody"'))
    env = clean_environment() | {"FLOWS_FILE": str(flows)}

    ended = start_and_wait_for_exit(env)

    assert ended.returncode != 0
    assert "configuration error" in ended.stderr
    assert "intent 'refund_request' names unknown role 'nobody'" in ended.stderr
    assert str(flows) in ended.stderr


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "no API keys"),
        ({"API_KEYS": "client:short"}, "API_KEYS entries are role:key"),
    ],
    ids=["no-keys", "short-key"],
)
def test_service_without_usable_keys_refuses_to_start(env: dict[str, str], said: str) -> None:
    environment = {k: v for k, v in clean_environment().items() if k != "API_KEYS"} | env

    ended = start_and_wait_for_exit(environment)

    assert ended.returncode != 0
    assert "configuration error" in ended.stderr
    assert said in ended.stderr
