"""The Docker packaging: docker-compose.yml and the Dockerfile agree with the code they run.

No Docker engine is needed: the files are parsed, and the commands the containers would run
(the image's CMD and HEALTHCHECK, the agents service's command and healthcheck) are run here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_flows import cli
from orchestrator_flows.core.errors import BodyTooLarge, HeaderTooLarge, TooManyConnections
from orchestrator_flows.core.flows import load_flows
from orchestrator_flows.demo import agents as demo_agents
from orchestrator_flows.infra.settings import AGENT_URL_PREFIX, DEFAULT_FLOWS_FILE, Settings
from orchestrator_flows.web.app import create_app
from orchestrator_flows.web.error_answers import error_bytes
from orchestrator_flows.web.http_limits import HttpLimits
from tests.support import nginx
from tests.support.leaks import shows_test_card
from tests.support.service import API_KEYS, IDEMPOTENCY_SECRET, bearer

ROOT = Path(__file__).parents[2]
MAX_BODY_BYTES = Settings.model_fields["max_body_bytes"].default


# --- reading the files -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == name]


def image_cmd() -> list[str]:
    [cmd] = instructions("CMD")
    return json.loads(cmd)


def image_healthcheck() -> list[str]:
    [check] = instructions("HEALTHCHECK")
    _, exec_form = check.split(" CMD ", 1)
    return json.loads(exec_form)


def image_env() -> dict[str, str]:
    pairs = " ".join(instructions("ENV"))
    return dict(pair.split("=", 1) for pair in shlex.split(pairs))


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(name: str) -> list[str]:
    cmd = service(name)["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def flows_agents() -> dict[str, str]:
    return dict(load_flows(DEFAULT_FLOWS_FILE).agents)


def agent_healthcheck_url() -> str:
    test = service("agents")["healthcheck"]["test"]
    [url] = re.findall(r"https?://[^'\"\s]+", " ".join(test))
    return url


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_runs_redis_the_agents_and_the_orchestrator() -> None:
    services = compose()["services"]

    assert set(services) == {"redis", "agents", "orchestrator", "proxy", "prometheus", "grafana"}
    assert services["redis"]["image"] == "redis:7-alpine"
    assert "--appendonly" in services["redis"]["command"]
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    assert services["agents"]["build"] == services["orchestrator"]["build"] == "."


def test_orchestrator_environment_names_only_settings_and_flows_roles() -> None:
    settings_names = {name.upper() for name in Settings.model_fields}
    role_names = {AGENT_URL_PREFIX + role.upper() for role in flows_agents()}

    unknown = set(environment("orchestrator")) - settings_names - role_names

    assert not unknown, f"not read by settings.py: {sorted(unknown)}"


def test_every_flows_role_reaches_its_demo_agent_in_the_agents_service() -> None:
    env = environment("orchestrator")

    for role, url in flows_agents().items():
        composed = env.get(AGENT_URL_PREFIX + role.upper())
        assert composed, f"no {AGENT_URL_PREFIX}{role.upper()} in docker-compose.yml"
        assert urlsplit(composed).hostname == "agents"
        assert urlsplit(composed).port == urlsplit(url).port, role


def test_orchestrator_stores_sessions_in_the_redis_service() -> None:
    url = urlsplit(environment("orchestrator")["REDIS_URL"])

    assert (url.scheme, url.hostname) == ("redis", "redis")


def test_redis_memory_is_bounded_and_never_evicts_a_call() -> None:
    argv = command("redis")
    option = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}

    assert re.fullmatch(r"\d+(mb|gb)", option["--maxmemory"])
    assert option["--maxmemory-policy"] == "noeviction"


def test_only_the_proxy_is_published_and_it_forwards_to_the_port_the_image_serves() -> None:
    [published] = service("proxy")["ports"]
    host_port, container_port = (int(port) for port in str(published).rsplit(":", 1))
    cmd = image_cmd()
    [upstream] = nginx.directive("server")
    [listen] = nginx.directive("listen")

    assert "ports" not in service("orchestrator")
    assert host_port == container_port == int(listen)
    assert upstream == f"orchestrator:{cmd[cmd.index('--port') + 1]}"
    assert instructions("EXPOSE") == [cmd[cmd.index("--port") + 1]]


def test_proxy_is_nginx_with_the_deploy_config_healthchecked_through_to_the_service() -> None:
    proxy = service("proxy")
    check = proxy["healthcheck"]["test"]
    [listen] = nginx.directive("listen")

    assert proxy["image"].startswith("nginx:") and proxy["image"].endswith("-alpine")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert check[:2] == ["CMD", "wget"]  # busybox's, in the alpine image
    assert check[-1] == f"http://127.0.0.1:{listen}/healthz"
    assert proxy["depends_on"] == {"orchestrator": {"condition": "service_healthy"}}


def test_proxy_limits_are_the_services_defaults() -> None:
    defaults = Settings.model_fields
    [buffers] = nginx.directive("large_client_header_buffers")
    [limit_conn] = nginx.directive("limit_conn")

    assert buffers == f"1 {defaults['http_max_header_bytes'].default // 1024}k"
    assert nginx.directive("client_header_timeout") == [
        f"{defaults['http_header_timeout_sec'].default:.0f}s"
    ]
    assert nginx.directive("client_body_timeout") == [
        f"{defaults['http_body_timeout_sec'].default:.0f}s"
    ]
    assert nginx.directive("client_max_body_size") == [f"{MAX_BODY_BYTES // 1024}k"]
    assert limit_conn == f"service {defaults['http_max_connections'].default}"
    assert nginx.directive("keepalive_timeout") == ["5s"]  # uvicorn's, which the service keeps


def test_proxy_refusals_answer_as_the_service_would() -> None:
    settings = Settings(api_keys="client:" + "k" * 20)
    limits = HttpLimits.from_settings(settings)
    services_own = [
        HeaderTooLarge(
            f"the request header is over {limits.max_header_bytes} bytes",
            limit=limits.max_header_bytes,
        ),
        BodyTooLarge(f"request body is over {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES),
        TooManyConnections(
            f"the server has its limit of {limits.max_connections} open connections; retry shortly",
            limit=limits.max_connections,
        ),
    ]
    refusals = nginx.refusals()

    for error in services_own:
        status, body = refusals[f"/.refused/{error.code}"]
        rendered = error_bytes(error).partition(b"\r\n\r\n")[2]
        assert status == error.status_code
        assert json.loads(body) == json.loads(rendered)


@pytest.mark.skipif(nginx.nginx_binary() is None, reason="nginx is not installed")
def test_proxy_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = nginx.runnable_conf("127.0.0.1:9", "127.0.0.1:9", tmp_path)

    checked = nginx.check(conf)

    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_agents_command_serves_the_demo_agents_on_all_interfaces() -> None:
    program, *argv = command("agents")

    args = cli.parser().parse_args(argv)

    assert program == "orchestrator-flows"
    assert args.command == "agents"
    assert args.host == "0.0.0.0"
    assert args.advertise_host == "agents"  # the name the orchestrator reaches them by


def test_orchestrator_starts_once_redis_and_agents_are_healthy() -> None:
    depends_on = service("orchestrator")["depends_on"]

    assert {name: dep["condition"] for name, dep in depends_on.items()} == {
        "redis": "service_healthy",
        "agents": "service_healthy",
    }


def test_every_service_has_a_healthcheck() -> None:
    for name, spec in compose()["services"].items():
        check = spec.get("healthcheck", {})
        assert not check.get("disable"), name
        # A service built from the Dockerfile without its own check keeps the image's.
        assert check.get("test") or ("build" in spec and image_healthcheck()), name
    assert service("redis")["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # The image's check probes :8000/healthz, which the agents container does not serve.
    assert "/.well-known/agent-card.json" in " ".join(service("agents")["healthcheck"]["test"])


def test_agents_healthcheck_probes_a_demo_agent_card() -> None:
    url = urlsplit(agent_healthcheck_url())
    demo_ports = {urlsplit(flows_agents()[role]).port for role in demo_agents.ROLES}

    assert url.hostname == "127.0.0.1"
    assert url.port in demo_ports
    assert url.path == "/.well-known/agent-card.json"


# --- Dockerfile and .dockerignore --------------------------------------------------------------


def test_image_is_python_311_slim_serving_with_the_http_limits_as_a_non_root_user() -> None:
    [user] = instructions("USER")
    program, *argv = image_cmd()
    args = cli.parser().parse_args(argv)

    # A build stage makes the wheel; the image itself is the second.
    assert instructions("FROM") == ["python:3.11-slim AS wheel", "python:3.11-slim"]
    assert user.split(":")[0] not in ("root", "0")
    # `serve`: uvicorn with http_limits' protocol and no access log (cli.run_serve).
    assert (program, args.command, args.host, args.workers) == (
        "orchestrator-flows",
        "serve",
        "0.0.0.0",
        1,
    )
    assert image_env()["PYTHONUNBUFFERED"] == "1"
    assert Path(image_env()["ORCH_STATE_DIR"]).is_absolute()
    assert "/healthz" in image_healthcheck()[-1]


def test_dependencies_are_installed_from_the_lock_before_the_wheel_is_copied() -> None:
    steps = dockerfile()
    final = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    copies = [i for i, (instruction, _) in enumerate(steps) if instruction == "COPY" and i > final]
    install = next(
        i for i, (ins, args) in enumerate(steps) if ins == "RUN" and "pip" in args and i > final
    )
    lock = steps[copies[0]][1].split()[0]

    assert lock == "requirements/service.txt"
    assert "--require-hashes -r /tmp/requirements.txt" in steps[install][1]
    assert copies[0] < install < copies[1]
    # The second copy is the wheel from the build stage: no source tree in the image.
    assert steps[copies[1]][1].startswith("--from=wheel ")
    assert instructions("WORKDIR") == ["/src", "/app"]


def locked(name: str) -> dict[str, tuple[str, int]]:
    """A lock file's pins: package name -> (version, number of hashes)."""
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    pins = {}
    for block in re.split(r"\n(?=[a-z0-9])", text):
        head = re.match(r"([a-z0-9][a-z0-9._-]*)==([^ ;\\]+)", block)
        if head:
            pins[canonical(head[1])] = (head[2], block.count("--hash=sha256:"))
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    ("lock", "extras"), [("service.txt", []), ("test.txt", ["test", "otel", "bench"])]
)
def test_each_lock_pins_every_dependency_within_pyprojects_ranges_with_hashes(
    lock: str, extras: list[str]
) -> None:
    project = pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = locked(lock)

    for requirement in map(Requirement, wanted):
        if requirement.name == project["name"]:
            continue  # the project's own extras, listed among the others
        version, hashes = pins[canonical(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        assert hashes >= 1, requirement.name
    assert all(hashes >= 1 for _, hashes in pins.values())


def test_ci_installs_the_test_lock_as_the_readme_says() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert "pip install -q -r requirements/test.txt" in ci
    assert "pip install -r requirements/test.txt" in readme


def test_console_script_is_installed_from_the_wheel_without_its_dependencies() -> None:
    steps = dockerfile()
    final = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    later_runs = [args for instruction, args in steps[final:] if instruction == "RUN"]

    assert any(re.search(r"pip install .*--no-deps /tmp/wheels/\*\.whl", run) for run in later_runs)
    assert pyproject()["project"]["scripts"]["orchestrator-flows"] == "orchestrator_flows.cli:main"


def dockerignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_dockerignore_keeps_what_the_image_installs_and_drops_local_state() -> None:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    patterns = [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    package = ROOT / "orchestrator_flows"
    needed = [str(path.relative_to(ROOT)) for path in package.rglob("*.py")]
    needed += [str(DEFAULT_FLOWS_FILE.relative_to(ROOT))]
    needed += ["pyproject.toml", pyproject()["project"]["readme"], "requirements/service.txt"]

    assert not any(pattern.startswith("!") for pattern in patterns)
    assert [path for path in needed if dockerignored(path, patterns)] == []
    for junk in (".git", ".venv", ".orchestrator", "tests/__pycache__", "x.egg-info", "tests"):
        assert dockerignored(junk, patterns), junk


# --- the image's and the agents service's commands, run here ----------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def container_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without the service's settings, plus the image's ENV and
    the keys compose would pass (the image holds none)."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in ours and not name.upper().startswith(AGENT_URL_PREFIX)
    }
    return env | image_env() | {"API_KEYS": API_KEYS} | overrides


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def run_healthcheck(check: list[str], port_from: int, port_to: int) -> int:
    program, *args = check
    assert program == "python"
    code = args[-1].replace(f"127.0.0.1:{port_from}/", f"127.0.0.1:{port_to}/")
    assert code != args[-1], "the healthcheck does not probe 127.0.0.1 on the expected port"
    return subprocess.run([sys.executable, *args[:-1], code], timeout=15).returncode


def wait_until_answering(url: str, process: subprocess.Popen, wait_sec: float = 20) -> None:
    deadline = time.monotonic() + wait_sec
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before answering:\n{process.communicate()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {wait_sec} s")


def wait_until_printed(text: bytes, process: subprocess.Popen, wait_sec: float = 20) -> None:
    """Reads the process's unbuffered stdout until `text` appears."""
    printed = b""
    deadline = time.monotonic() + wait_sec
    while text not in printed:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            pytest.fail(f"{text!r} not printed (exit {process.poll()}): {printed!r}")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            printed += os.read(process.stdout.fileno(), 4096)


def stop(process: subprocess.Popen, sig: int, within_sec: float) -> tuple[int, str]:
    """Sends `sig`; the exit status and standard error once the process has ended."""
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=within_sec)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"still running {within_sec} s after signal {sig}")
    return process.returncode, err.decode(errors="replace")


def test_image_command_serves_healthz_on_the_embedded_store_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    [port] = free_ports(1)
    image_port = int(image_cmd()[image_cmd().index("--port") + 1])
    program, *argv = image_cmd()
    argv = with_option(with_option(argv, "--host", "127.0.0.1"), "--port", str(port))
    env = container_environment(ORCH_STATE_DIR=str(tmp_path / "state"))
    assert "REDIS_URL" not in env
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name(program)), *argv],  # the installed console script
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz", process)
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz?pan=4111111111111111", timeout=5)
        oversized = httpx.get(
            f"http://127.0.0.1:{port}/healthz", headers={"X-Padding": "a" * 20_000}, timeout=5
        )
        healthy = run_healthcheck(image_healthcheck(), image_port, port)
    finally:
        exit_code, log = stop(process, signal.SIGTERM, within_sec=10)

    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert (oversized.status_code, oversized.json()["error"]["code"]) == (431, "header_too_large")
    assert healthy == 0
    # Requests are logged by the service, without their query strings; uvicorn's log is off.
    assert '"path":"/healthz","status":200' in log
    assert not shows_test_card(log)
    assert "uvicorn.access" not in log
    assert f"session store: Redis at unix://{tmp_path / 'state'}" in log  # the embedded one
    assert "Application shutdown complete" in log
    # After its graceful shutdown uvicorn re-raises the SIGTERM it handled; as a container's
    # PID 1 the kernel drops that signal and the exit status is 0.
    assert exit_code in (0, -signal.SIGTERM)
    assert (tmp_path / "state" / "appendonly.aof").exists()  # the embedded Redis's data
    assert run_healthcheck(image_healthcheck(), image_port, port) != 0  # down is unhealthy


def test_agents_service_passes_its_healthcheck_and_stops_on_its_stop_signal(
    tmp_path: Path,
) -> None:
    # The same flows.toml on free ports, so that the test never meets a running demo.
    default_ports = {urlsplit(url).port for url in flows_agents().values()}
    new_port = dict(zip(sorted(default_ports), free_ports(len(default_ports)), strict=True))
    flows_file = tmp_path / "flows.toml"
    flows_file.write_text(
        re.sub(
            r'(http://[^:/"]+):(\d+)/',
            lambda url: f"{url[1]}:{new_port[int(url[2])]}/",
            DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"),
        )
    )
    program, *argv = command("agents")
    argv = with_option(with_option(argv, "--host", "127.0.0.1"), "--advertise-host", "127.0.0.1")
    probed = urlsplit(agent_healthcheck_url()).port
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name(program)), *argv],  # the installed console script
        cwd=ROOT,
        env=container_environment(FLOWS_FILE=str(flows_file)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A container's PID 1 starts with SIGINT at its default, whatever started this test.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Only once it says so does the command wait for the stop signal (Ctrl-C).
        wait_until_printed(b"Demo agents serving.", process)
        check = service("agents")["healthcheck"]["test"]
        healthy = run_healthcheck(check[1:], probed, new_port[probed])
    finally:
        exit_code, log = stop(
            process, signal.Signals[service("agents").get("stop_signal", "SIGTERM")], 10
        )

    assert check[0] == "CMD"
    assert healthy == 0
    assert exit_code == 0, log


def test_the_package_holds_every_module_and_the_root_only_the_cards_entry_points() -> None:
    found = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        str(p.parent.relative_to(ROOT)) for p in (ROOT / "orchestrator_flows").rglob("__init__.py")
    }
    at_root = {p.stem for p in ROOT.glob("*.py")}

    assert found == ["orchestrator_flows*"]
    assert all(package.startswith("orchestrator_flows") for package in packages)
    # The design card's top-level modules stay, each a thin re-export of the package.
    assert at_root == {"main", "models", "router", "redis_store", "a2a_client"}
    for name in at_root:
        assert len((ROOT / f"{name}.py").read_text(encoding="utf-8").splitlines()) < 30, name


def test_the_wheel_installed_not_editable_serves_turns_from_any_directory(tmp_path: Path) -> None:
    # What the image does, without Docker: build the wheel, install it (no source tree beside
    # it), run its console script from a directory that holds nothing of ours.
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    [wheel] = wheels.glob("orchestrator_flows-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    [port] = free_ports(1)
    env = container_environment(ORCH_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(site))
    process = subprocess.Popen(
        [sys.executable, str(site / "bin" / "orchestrator-flows"), "serve", "--port", str(port)],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz", process, wait_sec=30)
        turn = httpx.post(
            f"http://127.0.0.1:{port}/orchestrate",
            json={
                "call_identify_id": "CALL-1",
                "account_id": "ACC-1",
                "eci": "ECI-1",
                "input_message": "hello",
                "intent": "greeting",
            },
            headers=bearer("client"),
            timeout=30,
        )
    finally:
        _, log = stop(process, signal.SIGTERM, within_sec=10)

    # The packaged flows.toml was found: greeting is stage 1's intent (its demo agent is not
    # running here, so the turn records the agent's fault).
    assert turn.status_code == 200, turn.text
    assert (turn.json()["flow_label"], turn.json()["step_seq"]) == ("GREETING", 1)
    assert "Traceback" not in log
    assert list(elsewhere.iterdir()) == []  # nothing written where it was started


# --- monitoring: deploy/prometheus.yml, deploy/grafana-dashboard.json, deploy/grafana/ --------

DEPLOY = ROOT / "deploy"
# The series Prometheus stores for each family of the exposition (the parser names a counter's
# family without its `_total`).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))


def orchestrator_scrape() -> dict[str, Any]:
    [job] = [j for j in prometheus_config()["scrape_configs"] if j["job_name"] == "orchestrator"]
    return job


def container_port(name: str) -> int:
    spec = service(name)
    [port] = spec.get("ports") or spec["expose"]  # published, or reached inside the network
    return int(str(port).rsplit(":", 1)[-1])


def bind_mounts(name: str) -> dict[str, str]:
    """Container path: the repository path mounted there (named volumes left out)."""
    found = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = source
    return found


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))


def dashboard_queries() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def referenced_metrics() -> set[str]:
    return {name for q in dashboard_queries() for name in re.findall(r"\borch_[a-z_]+", q["expr"])}


async def exposed_series(path: str) -> dict[str, set[str]]:
    """The service's exposition at `path`: each family and the series names it stands for."""
    settings = Settings(api_keys=API_KEYS, idempotency_secret=IDEMPOTENCY_SECRET)
    app = create_app(settings, redis_client=fakeredis.FakeAsyncRedis())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client,
    ):
        answer = await client.get(path)
    assert answer.status_code == 200, answer.text
    # A labelled metric with no children yet shows only its HELP and TYPE lines: still a family.
    return {
        family.name: {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ())}
        for family in text_string_to_metric_families(answer.text)
    }


def test_prometheus_scrapes_the_orchestrator_service_on_the_port_it_serves() -> None:
    job = orchestrator_scrape()
    [static] = job["static_configs"]
    [target] = static["targets"]
    host, port = target.rsplit(":", 1)

    assert host == "orchestrator"
    assert host in compose()["services"]
    assert int(port) == container_port("orchestrator")  # inside the network: not the host port
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["scrape_interval"] == "5s"


def test_prometheus_service_reads_the_scrape_config_once_the_orchestrator_is_up() -> None:
    spec = service("prometheus")

    assert spec["image"].startswith("prom/prometheus")
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in spec["volumes"]
    assert spec["ports"] == ["9090:9090"]
    assert "orchestrator" in spec["depends_on"]


def test_every_bind_mounted_file_is_in_the_repository() -> None:
    for name in compose()["services"]:
        for target, source in bind_mounts(name).items():
            assert (ROOT / source).exists(), f"{name}: {source} -> {target}"


async def test_dashboard_queries_only_series_the_service_exposes() -> None:
    exposed = await exposed_series(orchestrator_scrape().get("metrics_path", "/metrics"))
    referenced = referenced_metrics()
    # prometheus_client's `<name>_created` timestamps are no metric of ours to chart.
    uncharted = [f for f, names in exposed.items() if not names & referenced]

    assert dashboard_queries()
    assert sorted(referenced - set().union(*exposed.values())) == []
    assert [f for f in uncharted if not f.endswith("_created")] == []  # every metric has a panel


def test_grafana_reads_the_prometheus_service_and_the_dashboard() -> None:
    mounted = bind_mounts("grafana")
    datasources_dir = ROOT / mounted["/etc/grafana/provisioning/datasources"]
    providers_dir = ROOT / mounted["/etc/grafana/provisioning/dashboards"]
    [datasource] = [
        source
        for file in sorted(datasources_dir.glob("*.y*ml"))
        for source in yaml.safe_load(file.read_text(encoding="utf-8"))["datasources"]
    ]
    [provider] = [
        provider
        for file in sorted(providers_dir.glob("*.y*ml"))
        for provider in yaml.safe_load(file.read_text(encoding="utf-8"))["providers"]
    ]
    url = urlsplit(datasource["url"])
    folder = provider["options"]["path"].rstrip("/")
    dashboards = [s for t, s in mounted.items() if t.rsplit("/", 1)[0] == folder]
    panels = dashboard()["panels"]
    used_uids = {p["datasource"]["uid"] for p in [*panels, *dashboard_queries()]}

    assert datasource["type"] == "prometheus"
    assert (url.hostname, url.port) == ("prometheus", container_port("prometheus"))
    assert used_uids == {datasource["uid"]}
    assert dashboards == ["./deploy/grafana-dashboard.json"]


def test_every_console_template_and_asset_ships_in_the_package() -> None:
    """An installed service (the Docker image: not an editable install) has its console."""
    package = ROOT / "orchestrator_flows"
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["orchestrator_flows"]
    console = package / "web" / "console"
    files = [p for folder in ("templates", "static") for p in (console / folder).iterdir()]
    assert files
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
