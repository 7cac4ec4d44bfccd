"""API keys and roles: parsing, the key ring, and what each role may do over the API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator_flows.core.errors import ConfigError, Forbidden, Unauthenticated
from orchestrator_flows.infra.settings import Settings
from orchestrator_flows.web.auth import (
    KeyRing,
    Permission,
    Role,
    keyring_from,
    new_key,
    parse_api_keys,
    parse_key_file,
)
from tests.support.service import KEYS, Service, ServiceFactory, bearer

CLIENT_KEY = "a-client-key-of-enough-length"
TURN = {
    "call_identify_id": "CALL-AUTH",
    "account_id": "ACC-1",
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


def sha256_line(role: str, key: str) -> str:
    return f"{role} sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def test_api_keys_give_each_key_its_role() -> None:
    ring = KeyRing(parse_api_keys(f"client:{CLIENT_KEY}, auditor:{'b' * 20}"))

    assert ring.authorize(CLIENT_KEY, Permission.ORCHESTRATE).roles == {Role.CLIENT}
    assert ring.authorize("b" * 20, Permission.READ).roles == {Role.AUDITOR}


def test_a_key_listed_under_two_roles_has_both() -> None:
    ring = KeyRing(parse_api_keys(f"client:{CLIENT_KEY},auditor:{CLIENT_KEY}"))

    assert ring.authorize(CLIENT_KEY, Permission.READ).roles == {Role.CLIENT, Role.AUDITOR}


def test_caller_is_named_by_the_start_of_its_key_hash_never_the_key() -> None:
    ring = KeyRing(parse_api_keys(f"client:{CLIENT_KEY}"))
    caller = ring.authorize(CLIENT_KEY, Permission.ORCHESTRATE)

    assert caller.key_id == hashlib.sha256(CLIENT_KEY.encode()).hexdigest()[:12]
    assert CLIENT_KEY not in repr(caller)


@pytest.mark.parametrize(
    "text",
    ["client", "client:short", "owner:" + "k" * 20, ":" + "k" * 20],
    ids=["no-key", "short-key", "unknown-role", "no-role"],
)
def test_malformed_api_keys_stop_start_up(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_api_keys(text)


def test_key_file_holds_hashes_and_comments(tmp_path: Path) -> None:
    auditor_key, auditor_line = new_key(Role.AUDITOR)
    path = tmp_path / "keys"
    path.write_text(
        f"# platform team\n{sha256_line('client', CLIENT_KEY)}  # ivr\n\n{auditor_line}\n"
    )

    ring = KeyRing(parse_key_file(path))

    assert ring.authorize(CLIENT_KEY, Permission.ORCHESTRATE).roles == {Role.CLIENT}
    assert ring.authorize(auditor_key, Permission.READ).roles == {Role.AUDITOR}
    assert CLIENT_KEY not in path.read_text()


@pytest.mark.parametrize(
    "line",
    [
        "client " + CLIENT_KEY,
        "client md5:abc",
        "client sha256:zz" + "0" * 62,
        "boss sha256:" + "0" * 64,
    ],
    ids=["plain-key", "other-hash", "not-hex", "unknown-role"],
)
def test_malformed_key_file_lines_stop_start_up(tmp_path: Path, line: str) -> None:
    path = tmp_path / "keys"
    path.write_text(line + "\n")

    with pytest.raises(ConfigError, match=r"keys:1"):
        parse_key_file(path)


def test_missing_key_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        keyring_from(Settings(api_keys_file=tmp_path / "absent"))


def test_no_keys_at_all_stops_start_up_unless_auth_is_disabled() -> None:
    with pytest.raises(ConfigError, match="no API keys"):
        keyring_from(Settings())

    anyone = keyring_from(Settings(auth_disabled=True)).authorize(None, Permission.DELETE)
    assert anyone.roles == set(Role)


def test_disabling_auth_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    keyring_from(Settings(auth_disabled=True))

    assert any("AUTHENTICATION IS DISABLED" in r.message for r in caplog.records)


def test_unknown_and_missing_keys_are_unauthenticated_with_a_challenge() -> None:
    ring = KeyRing(parse_api_keys(f"client:{CLIENT_KEY}"))

    with pytest.raises(Unauthenticated) as missing:
        ring.authorize(None, Permission.ORCHESTRATE)
    with pytest.raises(Unauthenticated) as unknown:
        ring.authorize(CLIENT_KEY + "x", Permission.ORCHESTRATE)

    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in unknown.value.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        (Role.CLIENT, Permission.ORCHESTRATE, True),
        (Role.CLIENT, Permission.READ, False),
        (Role.CLIENT, Permission.DELETE, False),
        (Role.AUDITOR, Permission.READ, True),
        (Role.AUDITOR, Permission.ORCHESTRATE, False),
        (Role.AUDITOR, Permission.DELETE, False),
        (Role.ADMIN, Permission.DELETE, True),
        (Role.ADMIN, Permission.READ, True),
        (Role.MONITOR, Permission.MONITOR, True),
        (Role.MONITOR, Permission.READ, False),
    ],
)
def test_each_role_may_do_only_what_it_is_granted(
    role: Role, permission: Permission, allowed: bool
) -> None:
    ring = KeyRing(parse_api_keys(f"{role}:{CLIENT_KEY}"))

    if allowed:
        assert ring.authorize(CLIENT_KEY, permission).roles == {role}
    else:
        with pytest.raises(Forbidden):
            ring.authorize(CLIENT_KEY, permission)


def test_a_key_let_in_once_is_let_in_again_and_only_for_what_it_may_do() -> None:
    auditor_key = "an-auditor-key-of-enough-length"
    ring = KeyRing(parse_api_keys(f"client:{CLIENT_KEY},auditor:{auditor_key}"))

    first = ring.authorize(CLIENT_KEY, Permission.ORCHESTRATE)
    assert ring.authorize(CLIENT_KEY, Permission.ORCHESTRATE) == first
    assert first.roles == {Role.CLIENT}
    for _ in range(2):  # a refusal is never remembered as a pass
        with pytest.raises(Forbidden):
            ring.authorize(CLIENT_KEY, Permission.READ)
        with pytest.raises(Forbidden):
            ring.authorize(auditor_key, Permission.ORCHESTRATE)
        with pytest.raises(Unauthenticated):
            ring.authorize(CLIENT_KEY + "x", Permission.ORCHESTRATE)
    assert ring.authorize(auditor_key, Permission.READ).roles == {Role.AUDITOR}


# Over the API


async def test_turn_without_a_key_is_401_with_a_challenge_and_changes_nothing(
    service: Service,
) -> None:
    answer = await service.http.post("/orchestrate", json=TURN, headers={"Authorization": ""})

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"]["code"] == "unauthenticated"
    assert await service.redis.keys("*") == []
    assert service.agent_requests == []


async def test_401_comes_before_the_body_is_read(service: Service) -> None:
    answer = await service.http.post(
        "/orchestrate", content=b"{not json", headers={"Authorization": "Bearer nope-nope-nope"}
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"


async def test_key_is_accepted_as_bearer_or_x_api_key(service: Service) -> None:
    as_bearer = await service.http.post("/orchestrate", json=TURN, headers=bearer("client"))
    as_header = await service.http.get(
        "/session/CALL-AUTH", headers={"Authorization": "", "X-API-Key": KEYS["auditor"]}
    )

    assert as_bearer.status_code == 200, as_bearer.text
    assert as_header.status_code == 200, as_header.text


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("auditor", "POST", "/orchestrate"),
        ("client", "GET", "/session/CALL-AUTH"),
        ("client", "GET", "/session/CALL-AUTH/steps"),
        ("auditor", "DELETE", "/session/CALL-AUTH"),
        ("monitor", "GET", "/session/CALL-AUTH"),
    ],
)
async def test_wrong_role_is_403_and_changes_nothing(
    service: Service, role: str, method: str, path: str
) -> None:
    await service.http.post("/orchestrate", json=TURN, headers=bearer("client"))
    before = {key: await service.redis.dump(key) for key in await service.redis.keys("*")}

    answer = await service.http.request(
        method, path, json=TURN if method == "POST" else None, headers=bearer(role)
    )

    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    after = {key: await service.redis.dump(key) for key in await service.redis.keys("*")}
    assert after == before
    posts = [r for r in service.agent_requests if r.method == "POST"]
    assert len(posts) == 1  # only the client's turn reached an agent


async def test_403_names_the_roles_that_may_plainly(service: Service) -> None:
    answer = await service.http.delete("/session/CALL-AUTH", headers=bearer("auditor"))

    error = answer.json()["error"]
    assert error["message"] == "this key's role may not delete; it needs one of: admin"
    assert error["required_roles"] == ["admin"]
    refused = await service.http.post("/orchestrate", json=TURN, headers=bearer("auditor"))
    assert refused.json()["error"]["message"].endswith("it needs one of: admin, client")
    assert refused.json()["error"]["required_roles"] == ["admin", "client"]


async def test_step_records_which_key_sent_the_turn(service: Service) -> None:
    await service.http.post("/orchestrate", json=TURN, headers=bearer("client"))

    steps = (await service.http.get("/session/CALL-AUTH/steps")).json()

    assert steps[0]["api_key_id"] == hashlib.sha256(KEYS["client"].encode()).hexdigest()[:12]


async def test_health_and_metrics_stay_open_by_default(service: Service) -> None:
    no_key = {"Authorization": ""}
    for path in ("/healthz", "/readyz", "/metrics", "/stats", "/agents"):
        assert (await service.http.get(path, headers=no_key)).status_code == 200, path


async def test_protected_monitoring_needs_a_monitor_key(make_service: ServiceFactory) -> None:
    service = await make_service(protect_monitoring=True)
    no_key = {"Authorization": ""}

    for path in ("/metrics", "/stats", "/agents"):
        assert (await service.http.get(path, headers=no_key)).status_code == 401, path
        assert (await service.http.get(path, headers=bearer("client"))).status_code == 403, path
        assert (await service.http.get(path, headers=bearer("monitor"))).status_code == 200, path
    assert (await service.http.get("/healthz", headers=no_key)).status_code == 200


async def test_openapi_documents_both_ways_to_send_a_key(service: Service) -> None:
    spec = (await service.http.get("/openapi.json")).json()

    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer",
    }
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    orchestrate = spec["paths"]["/orchestrate"]["post"]
    assert {"bearer": []} in orchestrate["security"]
    assert {"401", "403"} <= set(orchestrate["responses"])
    body = orchestrate["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["call_identify_id", "account_id", "eci", "input_message"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
