"""Who may do what: API keys, each with a role, checked on every protected endpoint.

Keys come from the environment (`API_KEYS=role:key,...`) or from a file of their SHA-256
hashes (`API_KEYS_FILE`, lines `role sha256:<hex>`), so no file ever needs to hold a key.
Only hashes are kept in memory; a presented key is hashed and compared with every known hash
in constant time, so timing tells nothing about which hash came close.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from orchestrator_flows.core.errors import ConfigError, Forbidden, Unauthenticated
from orchestrator_flows.infra.settings import Settings

MIN_KEY_CHARS = 16
REALM = 'Bearer realm="orchestrator-flows"'
log = logging.getLogger("orchestrator")


class Role(StrEnum):
    CLIENT = "client"  # drives calls: POST /orchestrate
    AUDITOR = "auditor"  # reads sessions and their trails
    ADMIN = "admin"  # everything, including DELETE
    MONITOR = "monitor"  # reads /metrics, /stats and /agents when those are protected


class Permission(StrEnum):
    ORCHESTRATE = "orchestrate"
    READ = "read"
    DELETE = "delete"
    MONITOR = "monitor"


GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.ORCHESTRATE: frozenset({Role.CLIENT, Role.ADMIN}),
    Permission.READ: frozenset({Role.AUDITOR, Role.ADMIN}),
    Permission.DELETE: frozenset({Role.ADMIN}),
    Permission.MONITOR: frozenset({Role.MONITOR, Role.AUDITOR, Role.ADMIN}),
}


@dataclass(frozen=True)
class Caller:
    """Who made the request: the key's id (the first 12 hex digits of its hash) and roles."""

    key_id: str | None
    roles: frozenset[Role]


ANONYMOUS = Caller(key_id=None, roles=frozenset(Role))  # authentication disabled


@dataclass(frozen=True)
class KnownKey:
    digest: bytes
    role: Role

    @property
    def key_id(self) -> str:
        return self.digest.hex()[:12]


class KeyRing:
    """The known keys. Empty and `disabled`: every request is let in as ANONYMOUS."""

    def __init__(self, keys: list[KnownKey], *, disabled: bool = False):
        if not keys and not disabled:
            raise ConfigError(
                "no API keys: set API_KEYS (role:key,...) or API_KEYS_FILE, "
                "or AUTH_DISABLED=true for a closed test network; "
                "`orchestrator-flows keys new --role client` makes a key"
            )
        self._keys = keys
        self.disabled = disabled
        # Every (key hash, permission) let in once, with its caller: comparing with every
        # known key and building the caller cost far more than the hash itself, on every turn.
        # Only hashes that matched are kept (no more entries than keys times permissions), and
        # a dict compares them only once their own keyed hashes agree: no timing tells a near
        # miss from a far one. Still no key is held, only hashes.
        self._allowed: dict[tuple[bytes, Permission], Caller] = {}

    def authorize(self, presented: str | None, permission: Permission) -> Caller:
        if self.disabled:
            return ANONYMOUS  # every role: every permission
        digest = _digest(presented)
        if (known := self._allowed.get((digest, permission))) is not None:
            return known
        caller = self._caller_of(digest)
        if not caller.roles & GRANTS[permission]:
            allowed = sorted(role.value for role in GRANTS[permission])
            raise Forbidden(
                f"this key's role may not {permission.value}; it needs one of: "
                + ", ".join(allowed),
                required_roles=allowed,
            )
        self._allowed[(digest, permission)] = caller
        return caller

    def identify(self, presented: str | None) -> Caller:
        """Who presents this key, whatever they may do; Unauthenticated when nobody."""
        if self.disabled:
            return ANONYMOUS
        return self._caller_of(_digest(presented))

    def _caller_of(self, digest: bytes) -> Caller:
        # Compare with every key, matched or not, so the time taken does not depend on which.
        roles = {k.role for k in self._keys if hmac.compare_digest(k.digest, digest)}
        if not roles:
            raise Unauthenticated(
                "the API key is not known",
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            )
        return Caller(key_id=digest.hex()[:12], roles=frozenset(roles))


def _digest(presented: str | None) -> bytes:
    if not presented:
        raise Unauthenticated("an API key is required", headers={"WWW-Authenticate": REALM})
    return hashlib.sha256(presented.encode()).digest()


def parse_api_keys(text: str) -> list[KnownKey]:
    """`role:key,role:key` (API_KEYS) into hashed keys."""
    keys = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        role, sep, key = entry.partition(":")
        if not sep or len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"API_KEYS entries are role:key with keys of {MIN_KEY_CHARS}+ characters"
            )
        keys.append(KnownKey(hashlib.sha256(key.encode()).digest(), _role(role)))
    return keys


def parse_key_file(path: Path) -> list[KnownKey]:
    """Lines `role sha256:<64 hex digits>`; blank lines and `#` comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"API_KEYS_FILE {path}: {exc.strerror}") from exc
    keys = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        algorithm, _, hexdigest = fields[-1].partition(":")
        if len(fields) != 2 or algorithm != "sha256" or len(hexdigest) != 64:
            raise ConfigError(f"API_KEYS_FILE {path}:{number}: expected `role sha256:<hex>`")
        try:
            keys.append(KnownKey(bytes.fromhex(hexdigest), _role(fields[0])))
        except (ValueError, ConfigError) as exc:  # not hex, or an unknown role
            raise ConfigError(f"API_KEYS_FILE {path}:{number}: {exc}") from exc
    return keys


def _role(name: str) -> Role:
    try:
        return Role(name.strip().lower())
    except ValueError:
        raise ConfigError(f"unknown role {name!r}; roles are {[r.value for r in Role]}") from None


def new_key(role: Role) -> tuple[str, str]:
    """A fresh random key (256 bits) and its API_KEYS_FILE line."""
    key = secrets.token_urlsafe(32)
    return key, f"{role.value} sha256:{hashlib.sha256(key.encode()).hexdigest()}"


# The two ways to send a key; declared as security schemes so that OpenAPI documents them.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="Authorization: Bearer")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey")


SECURITY = [{BEARER.scheme_name: []}, {API_KEY_HEADER.scheme_name: []}]  # OpenAPI


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A FastAPI dependency that lets the request in only with a key allowed to `permission`."""

    async def authorized_caller(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(BEARER),  # noqa: B008
        api_key: str | None = Security(API_KEY_HEADER),
    ) -> Caller:
        presented = bearer.credentials if bearer else api_key
        return request.app.state.keyring.authorize(presented, permission)

    return authorized_caller


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents, read as BEARER and API_KEY_HEADER read it: a Bearer token
    first, else X-API-Key. For the turn endpoint, which reads its headers itself."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return api_key or None


def keyring_from(settings: Settings) -> KeyRing:
    keys = parse_api_keys(settings.api_keys.get_secret_value()) if settings.api_keys else []
    if settings.api_keys_file is not None:
        keys += parse_key_file(settings.api_keys_file)
    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who reaches this port "
            "can drive, read and delete every call"
        )
    return KeyRing(keys, disabled=settings.auth_disabled)
