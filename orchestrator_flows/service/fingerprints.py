"""The Idempotency-Key fingerprint: a keyed hash of the whole request, and where its key lives.

A reused key is refused when its request differs from the first one, so the fingerprint must
tell apart requests that differ by a single digit ("order 1111" from "order 9999"). Redis keeps
it beside the answer, and a plain hash of a request holding a six-digit code could be reversed
by trying the million codes; an HMAC cannot without its key, which never leaves the service.

Every replica must use the same key, or a retry that reaches another replica is refused.
IDEMPOTENCY_SECRET gives it; with the embedded Redis (one machine) it is made once and kept in
ORCH_STATE_DIR, beside the Redis data it protects.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

import orjson

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.models import OrchestrateRequest
from orchestrator_flows.infra.settings import MIN_SECRET_CHARS, Settings

SECRET_FILE = "idempotency.secret"


def fingerprint(key: bytes, turn: OrchestrateRequest) -> str:
    """HMAC-SHA-256 over the validated request's fields as JSON, in their declared order (as
    pydantic keeps them in the model's `__dict__`: model_dump() would only copy them first)."""
    return hmac.digest(key, orjson.dumps(turn.__dict__), "sha256").hex()


def fingerprint_key(settings: Settings) -> bytes:
    return fingerprint_secret(settings).encode()


def fingerprint_secret(settings: Settings) -> str:
    """IDEMPOTENCY_SECRET; without it, the embedded Redis's own, kept in ORCH_STATE_DIR."""
    if settings.idempotency_secret is not None:
        return settings.idempotency_secret.get_secret_value()
    if settings.redis_url is not None:
        # Settings refuses this combination; a copy made without validation may still hold it.
        raise ConfigError(
            "REDIS_URL is set but IDEMPOTENCY_SECRET is not: every replica needs the same one"
        )
    return stored_secret(settings.orch_state_dir.resolve() / SECRET_FILE)


def stored_secret(path: Path) -> str:
    """The secret kept at `path` (256 random bits in hex, as IDEMPOTENCY_SECRET would hold
    them), made owner-only by whichever process asks first.

    It appears whole or not at all: written to a private temporary file, then linked to `path`,
    which fails if another process got there first; then everyone reads what is at `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _publish(path, secrets.token_hex(32))
    return _read(path)


def _publish(path: Path, secret: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secret + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process's secret stands
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{path} (the Idempotency-Key fingerprint's secret) may be read by other users "
            f"(mode {mode & 0o777:o}): chmod 600 it"
        )
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{path} should hold {MIN_SECRET_CHARS}+ characters of secret; delete it to make a "
            "new one (Idempotency-Keys used before are then refused as reused)"
        )
    return secret
