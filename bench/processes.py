"""Starting, watching and stopping the benchmark's server processes, and reading their CPU time.

Every server runs in its own process, started the way a user would start it, so that the
load generator, Redis, the stub agent and the server under test never share an event loop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something the benchmark cannot go on without (a server that will not start)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    # No persistence: a save in the middle of a round would show up as a latency spike.
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL)
    _wait_for_port(port, process, "redis-server")
    return process


def start_uvicorn(
    app: str,
    port: int,
    *,
    env: dict[str, str],
    log_file: Path,
    workers: int = 1,
    app_dir: Path | None = None,
    cwd: Path = REPO,
) -> subprocess.Popen:
    """`python -m uvicorn <app>` from the service's directory, as a user runs the service."""
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log"]
    if app_dir is not None:
        command += ["--app-dir", str(app_dir)]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait_for_http(f"http://127.0.0.1:{port}/healthz", process, app, log_file)
    return process


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise BenchError(f"{what} did not start on port {port}")


def _wait_for_http(url: str, process: subprocess.Popen, what: str, log_file: Path) -> None:
    # Any HTTP answer (even 404) means the server is up and its lifespan has run.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
    raise BenchError(f"{what} did not start (log {log_file}):\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """SIGINT first (uvicorn shuts its workers down cleanly), then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(10)
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


def run_loadgen(mode: str, url: str, *, timeout: float, **options: object) -> dict[str, Any]:
    """Runs bench/loadgen.py in its own process and returns the JSON it prints."""
    command = [sys.executable, str(BENCH / "loadgen.py"), mode, "--url", url]
    for name, value in options.items():
        command.append(f"--{name.replace('_', '-')}={value}")  # "=": a key may start with "-"
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"load generator failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)
