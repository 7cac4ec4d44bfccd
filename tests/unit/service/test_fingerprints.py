"""The Idempotency-Key fingerprint: a keyed hash of the whole request, whose key Redis and the
logs never see, kept by the embedded default in ORCH_STATE_DIR and shared by every process."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.service.fingerprints import SECRET_FILE, fingerprint_secret, stored_secret
from tests.support.service import Service, ServiceFactory

REPO = Path(__file__).parents[3]
IDEMPOTENCY = "orch:{CALL-001}:idempotency"


async def refund(service: Service, key: str, words: str):
    # At GREETING the greeting agent takes any words: what matters is the fingerprint.
    return await service.turn("greeting", words, headers={"Idempotency-Key": key})


async def stored_fingerprint(service: Service, key: str) -> str:
    return orjson.loads(await service.redis.hget(IDEMPOTENCY, key))["fingerprint"]


async def test_same_key_with_other_digits_is_refused_as_reused(service: Service) -> None:
    await refund(service, "k-1", "Refund order 1111 for 20 dollars")

    other = await refund(service, "k-1", "Refund order 9999 for 75 dollars")

    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(service.agents["greeting"].seen.texts) == 1


async def test_same_key_with_the_same_digits_replays(service: Service) -> None:
    first = await refund(service, "k-1", "Refund order 1111 for 20 dollars")

    again = await refund(service, "k-1", "Refund order 1111 for 20 dollars")

    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content


async def test_stored_fingerprint_is_keyed_so_a_short_code_cannot_be_recomputed(
    service: Service, tmp_path: Path
) -> None:
    words = "The code is 482913"
    await refund(service, "k-1", words)
    turn = OrchestrateRequest(
        call_identify_id="CALL-001",
        account_id="ACC-1",
        eci="ECI-1",
        input_message=words,
        intent="greeting",
    )

    stored = await stored_fingerprint(service, "k-1")

    # Whoever reads Redis and tries every code with an unkeyed hash finds nothing ...
    for unkeyed in (turn.model_dump_json().encode(), orjson.dumps(turn.model_dump())):
        assert stored != hashlib.sha256(unkeyed).hexdigest()
    # ... while it is the HMAC of that very request under the service's secret.
    secret = (tmp_path / SECRET_FILE).read_text().strip().encode()
    assert stored == hmac.new(secret, orjson.dumps(turn.model_dump()), "sha256").hexdigest()


async def test_secret_file_is_owner_only_and_reused_after_a_restart(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    first = await make_service()
    answer = await refund(first, "k-1", "Refund order 1111")
    # A new process over the same state directory and the same Redis: the same secret, so the
    # client's retry replays instead of being refused as another request.
    restarted = await make_service(server=first.server)

    again = await refund(restarted, "k-1", "Refund order 1111")

    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.content == answer.content
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600


async def test_secret_appears_neither_in_redis_nor_in_the_log(
    make_service: ServiceFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = await make_service()
    await refund(service, "k-1", "Refund order 1111")
    await refund(service, "k-1", "Refund order 2222")  # refused: logged as a rejection
    secret = (tmp_path / SECRET_FILE).read_text().strip()

    everything = b"".join(
        [key + (await service.redis.dump(key) or b"") async for key in service.redis.scan_iter()]
    )
    assert secret.encode() not in everything
    assert bytes.fromhex(secret) not in everything
    assert secret not in capsys.readouterr().err


async def test_idempotency_secret_from_the_environment_is_used_and_no_file_made(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await make_service(idempotency_secret="x" * 40)
    await refund(service, "k-1", "Refund order 1111")

    assert not (tmp_path / SECRET_FILE).exists()


def test_workers_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "state" / SECRET_FILE
    workers = 16
    start = threading.Barrier(workers)

    def worker_start() -> str:
        start.wait(timeout=10)
        return stored_secret(path)

    with ThreadPoolExecutor(workers) as pool:
        secrets = set(pool.map(lambda _: worker_start(), range(workers)))

    assert len(secrets) == 1 and len(secrets.pop()) == 64
    assert sorted(p.name for p in path.parent.iterdir()) == [SECRET_FILE]  # no leftovers


def test_a_secret_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    stored_secret(path)
    path.chmod(0o644)

    with pytest.raises(ConfigError, match="chmod 600"):
        fingerprint_secret(Settings(orch_state_dir=tmp_path))


def test_uvicorn_with_redis_url_and_no_secret_exits_with_one_line_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in {"IDEMPOTENCY_SECRET"}}
    env |= {"REDIS_URL": "redis://:a-redis-password@127.0.0.1:1/0", "API_KEYS": "x" * 20}
    done = subprocess.run(
        [sys.executable, "-c", "import main; main.app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "IDEMPOTENCY_SECRET" in done.stderr and "Traceback" not in done.stderr
    assert "a-redis-password" not in done.stderr
    assert done.stderr.count("\n") == 1
