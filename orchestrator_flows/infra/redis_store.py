"""Redis storage for calls: key names, Lua scripts and the few operations a turn needs.

Every key of a call carries the call id as a hash tag (`orch:{CALL-1}:state`) so that a Redis
Cluster keeps the whole call, and therefore every Lua script over it, on one slot.
A turn costs two round trips: `begin_turn` (take the lease, read the state) and `commit_step`.
Records are written and read through core/records.py, which versions their format: a record
this release cannot read is refused (StoredRecordUnreadable), logged here, and changes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript as Script
from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator_flows.core.errors import (
    CallSizeLimit,
    IdempotencyKeyInProgress,
    StoredRecordUnreadable,
    StoreUnavailable,
    TurnConflict,
    TurnInProgress,
)
from orchestrator_flows.core.models import CallState, StepRecord, StoredAnswer
from orchestrator_flows.core.records import ANSWER, STATE, STEP, Record, RecordFormat

log = structlog.get_logger("orchestrator.store")

# Replay a finished request with the same Idempotency-Key; otherwise take the call's lease
# (unless another turn holds it) and read the state and the bytes the call holds (its state,
# and what its steps and remembered answers added: KEYS[4]). Atomically.
BEGIN_TURN = """
if ARGV[3] ~= '' then
  local done = redis.call('HGET', KEYS[3], ARGV[3])
  if done then return {2, done} end
end
local holder = redis.call('GET', KEYS[2])
-- Held by another turn: busy. Held by this very request (its answer was lost and the client
-- sent it anew): the lease is already ours.
if holder and holder ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[2]), holder} end
if not holder then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
local held = tonumber(redis.call('GET', KEYS[4]) or '0') + redis.call('STRLEN', KEYS[1])
return {1, redis.call('GET', KEYS[1]), held}
"""

# Commit one step: only while this turn still holds the call's lease (a DELETE drops it, and
# so does expiry) and the call is exactly as the turn read it (same number of steps, present
# unless new), and only if the call then holds at most ARGV[8] bytes (MAX_CALL_BYTES; -1
# otherwise, nothing written): write the state, append the step, add the step's and the
# remembered answer's bytes to the call's count, slide the TTL, release the lease. One script,
# so a crash can never leave a state without its step or a step without its state. Both scripts
# may run twice for one request: redis-py sends a command again when the connection drops
# before the answer arrives, and the first run may have happened.
COMMIT_STEP = """
local expected = tonumber(ARGV[1])
if redis.call('GET', KEYS[3]) ~= ARGV[5] then
  -- This very commit again (its answer was lost and the client sent it anew): it is done.
  if redis.call('LLEN', KEYS[2]) == expected + 1 and redis.call('LINDEX', KEYS[2], -1) == ARGV[3]
  then return 1 end
  return 0
end
if redis.call('LLEN', KEYS[2]) ~= expected then return 0 end
if (redis.call('EXISTS', KEYS[1]) == 1) ~= (expected > 0) then return 0 end
-- The new state replaces the old; the step and the answer add to what the call held.
local added = tonumber(redis.call('GET', KEYS[5]) or '0') + #ARGV[3] + #ARGV[6] + #ARGV[7]
if added + #ARGV[2] > tonumber(ARGV[8]) then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[5], added, 'EX', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], ARGV[6], ARGV[7]) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
redis.call('DEL', KEYS[3])
return 1
"""

RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CallKeys(NamedTuple):
    state: str
    steps: str
    lease: str
    idempotency: str  # hash: Idempotency-Key -> the answer given
    size: str  # bytes the steps and the remembered answers hold (the state's: its STRLEN)

    @property
    def all(self) -> list[str]:
        return [self.state, self.steps, self.lease, self.idempotency, self.size]

    @property
    def begin(self) -> list[str]:
        """BEGIN_TURN's keys."""
        return [self.state, self.lease, self.idempotency, self.size]


def call_keys(prefix: str, call_id: str) -> CallKeys:
    tag = f"{prefix}:{{{call_id}}}"
    return CallKeys(
        state=f"{tag}:state",
        steps=f"{tag}:steps",
        lease=f"{tag}:lease",
        idempotency=f"{tag}:idempotency",
        size=f"{tag}:bytes",
    )


def console_session_key(prefix: str, session_hash: str) -> str:
    """A console sign-in session, under the hash of its id (web/console/sessions.py)."""
    return f"{prefix}:console:{session_hash}"


def state_keys_pattern(prefix: str) -> str:
    """SCAN's MATCH for every call's state key. Neither the prefix nor a call id can hold a
    glob character (settings and models.ID_PATTERN allow none), so only `*` matches widely."""
    return f"{prefix}:{{*}}:state"


class Lease(NamedTuple):
    call_id: str
    token: str  # random, then "|" and the request's Idempotency-Key (if any)
    idempotency_key: str = ""


class TurnStart(NamedTuple):
    """Either a lease on the call with its state (None when new) and the bytes the call holds
    in Redis, or an answer to replay."""

    lease: Lease | None
    state: CallState | None = None
    replay: StoredAnswer | None = None
    held_bytes: int = 0


class LiveCalls(NamedTuple):
    """The states of the calls Redis holds, in no particular order."""

    states: list[CallState]
    truncated: bool  # Redis holds more calls than the scan limit: the rest were not read
    unreadable: int  # states skipped: records this release cannot read (each one logged)


# Keys asked for per SCAN (its COUNT: slots looked at, of every kind of key) and read per MGET
# or pipeline. Each is one short command: Redis serves turns between them.
SCAN_BATCH = 1000

POOL_HEADROOM = 16  # connections beyond the store's slots: the client's own (cluster discovery)


def connect(
    url: str,
    timeout_sec: float,
    *,
    cluster: bool = False,
    sentinel_master: str | None = None,
    max_connections: int = 256,
) -> redis.Redis:
    """A client for one Redis; with `cluster` for a Redis Cluster, where `url` names any one
    node and the client finds the others; with `sentinel_master` for the primary that Redis
    Sentinel names, where `url` lists the sentinels. Every key of a call carries the call id
    as a hash tag, so each script and pipeline stays on one slot in a cluster."""
    # redis-py retries a failed command many times by default, timeouts included, which turns
    # a frozen Redis into a request that hangs for seconds. Retry once, on a dropped connection
    # only (a pooled connection Redis closed while idle), and never on a timeout.
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.01), 1, (RedisConnectionError,))
    options = {
        "socket_timeout": timeout_sec,
        "socket_connect_timeout": timeout_sec,
        # Per node of a cluster. The store never runs more operations than its slots.
        "max_connections": max_connections + POOL_HEADROOM,
    }
    if cluster:
        # The cluster client follows MOVED/ASK redirections and reloads its slot map after a
        # failed command by itself. Its own retries stay off, as a single Redis's do on a
        # timeout: they retry timeouts too and sleep through the cluster's rediscovery, holding
        # the turn for seconds. A node that is down is a 503 at once, until a replica has
        # taken over. (Sending a script twice would be safe: see BEGIN_TURN and COMMIT_STEP.)
        no_retry = Retry(ExponentialBackoff(cap=0.05, base=0.01), 0)
        return RedisCluster.from_url(url, retry=no_retry, **options)  # type: ignore[return-value]
    if sentinel_master:
        return _sentinel_primary(url, sentinel_master, retry=retry, **options)
    return redis.Redis.from_url(url, retry=retry, health_check_interval=30, **options)


def _sentinel_primary(url: str, name: str, **options: Any) -> redis.Redis:
    """`redis://[:password@]sentinel-1:26379,sentinel-2:26379/0`: the hosts are the sentinels;
    the password, database and TLS options are the primary's. Every new connection asks the
    sentinels where the primary is, so after a failover the client follows the new one."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_host_port(host) for host in hosts.split(",") if host]
    netloc = f"{credentials}@sentinel-named-primary" if credentials else "sentinel-named-primary"
    primary = parse_url(urlunsplit(parts._replace(netloc=netloc)))
    primary.pop("host", None)
    primary.pop("port", None)
    if primary.pop("connection_class", None) is SSLConnection:
        primary["ssl"] = True
    timeouts = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=timeouts, **timeouts)
    return sentinel.master_for(name, **(primary | options))


async def disconnect(client: redis.Redis) -> None:
    """Closes the client's connections, and for a Sentinel-named primary the connections to the
    sentinels too (redis-py leaves those to whoever made the Sentinel)."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)  # a cluster client has one per node
    sentinel = getattr(pool, "sentinel_manager", None)
    if isinstance(sentinel, Sentinel):
        await sentinel.aclose()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host else (address, 26379)


# NoPermissionError: an ACL user without rights to our keys, an operator's fix like the others.
# The cluster's: no primary for the slot yet (failover under way), the cluster is down, or
# no node answers (RedisClusterException; our keys share a slot by construction, so its
# other meaning, a request across slots, cannot arise).
_CONNECTION_FAULTS = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    NoPermissionError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)


def _unavailable_for(exc: BaseException) -> StoreUnavailable | None:
    """What a Redis fault means for the caller, or None for an error that is not one."""
    if isinstance(exc, _CONNECTION_FAULTS):
        return _unavailable(type(exc).__name__)
    if _is_out_of_memory(exc):
        # Redis at its maxmemory with noeviction refuses a script at its first write, before it
        # changed anything; it takes writes again as calls expire or memory is added.
        return StoreUnavailable(
            "the session store is full; nothing was recorded; retry later",
            headers={"Retry-After": "5"},
            reason="OutOfMemoryError",
        )
    if isinstance(exc, RuntimeError) and "closed" in str(exc):
        # redis-py's cluster client closes every node's connections when it meets a failover
        # (ClusterDownError or an uncovered slot: aclose() and start again), under commands
        # other turns are about to send on them; uvloop then refuses the write ("the handler
        # is closed"). Nothing was sent: a lost connection like any other.
        return _unavailable("ConnectionClosed")
    return None


def _is_out_of_memory(exc: BaseException) -> bool:
    # Redis 7 answers a script's refused write with the OOM error itself; Redis 6 wraps it in
    # "Error running script ... -OOM command not allowed", which redis-py reads as a ResponseError.
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "-OOM command not allowed" in str(exc)
    )


POOL_TIMEOUT = "PoolTimeout"  # every slot stayed taken for the whole wait


def _unavailable(reason: str) -> StoreUnavailable:
    return StoreUnavailable(
        "the session store is unavailable; retry shortly",
        headers={"Retry-After": "1"},
        reason=reason,
    )


def _busy(call_id: str, idempotency_key: str, *, pttl: int, holder: bytes) -> Exception:
    retry_after = {"Retry-After": str(max(1, -(-pttl // 1000)))}
    if idempotency_key and holder.decode().partition("|")[2] == idempotency_key:
        return IdempotencyKeyInProgress(
            "a request with this Idempotency-Key is still running; retry shortly",
            headers=retry_after,
            call_identify_id=call_id,
        )
    return TurnInProgress(
        f"another turn of call {call_id} is in progress; retry shortly",
        headers=retry_after,
        call_identify_id=call_id,
    )


Observer = Callable[[str, float], None]  # (operation, seconds)
FaultObserver = Callable[[str, str], None]  # (operation, reason it answered 503)
Unreplicated = Callable[[str, int], None]  # (call id, replicas that acknowledged the step)


@dataclass(frozen=True)
class ReplicaWait:
    """How many replicas must hold a step before its turn answers, and for how long to wait."""

    replicas: int = 0
    timeout_ms: int = 0


class _RoundTrip:
    """One Redis operation: it takes one of the store's slots (waiting, for at most the store's
    pool timeout, when all are taken), is timed for the metrics, and has redis-py's faults
    turned into StoreUnavailable, each one counted: the one place where Redis's exceptions
    become ours. A class, not a generator: it wraps every Redis round trip of every turn."""

    __slots__ = ("_operation", "_started", "_store")

    def __init__(self, store: RedisStore, operation: str) -> None:
        self._store, self._operation = store, operation

    async def __aenter__(self) -> None:
        store = self._store
        slots = store._slots
        if slots.locked():
            await self._wait_for(slots, store)
        else:
            await slots.acquire()  # free: taken at once, without yielding to the loop
        self._started = time.perf_counter()

    async def _wait_for(self, slots: asyncio.Semaphore, store: RedisStore) -> None:
        waiting = time.perf_counter()
        try:
            async with asyncio.timeout(store._slot_wait_sec):
                await slots.acquire()
        except TimeoutError:
            store._on_fault(self._operation, POOL_TIMEOUT)
            raise _unavailable(POOL_TIMEOUT) from None
        finally:
            store._on_wait(time.perf_counter() - waiting)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        store = self._store
        store._slots.release()
        store._observe(self._operation, time.perf_counter() - self._started)
        unavailable = _unavailable_for(exc) if exc is not None else None
        if unavailable is not None:
            store._on_fault(self._operation, unavailable.details["reason"])
            raise unavailable from exc


class RedisStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl_sec: int,
        lease_sec: float,
        max_call_bytes: int,
        observe: Observer | None = None,
        on_fault: FaultObserver | None = None,
        replica_wait: ReplicaWait = ReplicaWait(),
        on_unreplicated: Unreplicated | None = None,
        max_operations: int = 256,
        slot_wait_sec: float = 1.0,
        on_wait: Callable[[float], None] | None = None,
    ):
        # At most max_operations Redis operations at once, each on its own connection: the
        # client's pools hold a few more (connect()), so redis-py never runs out and refuses a
        # command; a burst of turns queues here instead, each for at most slot_wait_sec.
        self._slots = asyncio.Semaphore(max_operations)
        self._slot_wait_sec = slot_wait_sec
        self._on_wait = on_wait or (lambda seconds: None)
        self._observe = observe or (lambda operation, seconds: None)
        self._on_fault = on_fault or (lambda operation, reason: None)
        self._replica_wait = replica_wait
        self._on_unreplicated = on_unreplicated or (lambda call_id, acknowledged: None)
        self._background: set[asyncio.Task] = set()
        self._redis = client
        self._prefix = prefix
        self.ttl_sec = ttl_sec
        self._lease_ms = int(lease_sec * 1000)
        self.max_call_bytes = max_call_bytes
        self._begin = client.register_script(BEGIN_TURN)
        self._commit = client.register_script(COMMIT_STEP)
        self._release = client.register_script(RELEASE_LEASE)

    def _round_trip(self, operation: str) -> _RoundTrip:
        return _RoundTrip(self, operation)

    async def _eval(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if this Redis does not have it (a restarted or
        newly promoted one). redis-py's Script does the same, with an import and a Protocol
        check on every call."""
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(script.script)
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    def keys(self, call_id: str) -> CallKeys:
        return call_keys(self._prefix, call_id)

    async def ping(self) -> bool:
        async with self._round_trip("ping"):
            return bool(await self._redis.ping())

    async def save_console_session(self, session_hash: str, record: bytes, ttl_sec: int) -> None:
        async with self._round_trip("console_session"):
            key = console_session_key(self._prefix, session_hash)
            await self._redis.set(key, record, ex=ttl_sec)

    async def read_console_session(self, session_hash: str) -> bytes | None:
        async with self._round_trip("console_session"):
            return await self._redis.get(console_session_key(self._prefix, session_hash))

    async def end_console_session(self, session_hash: str) -> None:
        async with self._round_trip("console_session"):
            await self._redis.delete(console_session_key(self._prefix, session_hash))

    async def begin_turn(self, call_id: str, idempotency_key: str = "") -> TurnStart:
        keys = self.keys(call_id)
        token = f"{secrets.token_hex(16)}|{idempotency_key}"
        try:
            async with self._round_trip("begin_turn"):
                got = await self._eval(
                    self._begin, keys.begin, [token, self._lease_ms, idempotency_key]
                )
        except StoreUnavailable as exc:
            # A frozen Redis still runs a timed-out script when it wakes, taking a lease for a
            # turn that was already refused: give it back as soon as Redis answers again.
            if exc.details.get("reason") == "TimeoutError":
                self.release_later(Lease(call_id, token, idempotency_key))
            raise
        if got[0] == 2:
            return TurnStart(lease=None, replay=_read(ANSWER, got[1], call_id))
        if got[0] == 0:
            raise _busy(call_id, idempotency_key, pttl=int(got[1]), holder=got[2])
        lease = Lease(call_id, token, idempotency_key)
        try:
            state = _read(STATE, got[1], call_id) if got[1] else None
        except StoredRecordUnreadable:
            await self.give_back(lease)  # the script took it: the refused turn leaves nothing
            raise
        return TurnStart(lease=lease, state=state, held_bytes=int(got[2]))

    async def commit_step(
        self,
        lease: Lease,
        expected_steps: int,
        state: CallState,
        step: StepRecord,
        answer: StoredAnswer | None = None,
    ) -> None:
        keys = self.keys(lease.call_id)
        remember = [lease.idempotency_key, ANSWER.write(answer)] if answer else ["", ""]
        args = [
            expected_steps, STATE.write(state), STEP.write(step), self.ttl_sec, lease.token,
            *remember, self.max_call_bytes,
        ]  # fmt: skip
        wanted = self._replica_wait.replicas
        async with self._round_trip("commit_step"):
            if wanted:
                done, acknowledged = await self._commit_and_wait(keys, args)
            else:
                done, acknowledged = await self._eval(self._commit, keys.all, args), 0
        if done == -1:
            raise CallSizeLimit(
                f"this step would take call {lease.call_id} past its limit of"
                f" {self.max_call_bytes} bytes; nothing was recorded",
                call_identify_id=lease.call_id,
                max_call_bytes=self.max_call_bytes,
            )
        if not done:
            raise TurnConflict(
                f"call {lease.call_id} changed while this turn was running; nothing was recorded",
                call_identify_id=lease.call_id,
            )
        if acknowledged < wanted:
            self._on_unreplicated(lease.call_id, acknowledged)

    async def _commit_and_wait(self, keys: CallKeys, args: list[Any]) -> tuple[int, int]:
        """The commit, then WAIT for the replicas, in one round trip. Redis replicates
        asynchronously: a step its primary took but no replica has yet is lost if the primary
        dies now. WAIT counts the replicas holding this connection's writes, so it must follow
        the script down the same connection: one pipeline, sent to the call's node."""
        try:
            return await self._send_commit_and_wait(keys, args)
        except NoScriptError:
            # A primary that took over in a failover starts with an empty script cache; the
            # script did not run, so sending it again is safe.
            await self._redis.script_load(COMMIT_STEP)
            return await self._send_commit_and_wait(keys, args)

    async def _send_commit_and_wait(self, keys: CallKeys, args: list[Any]) -> tuple[int, int]:
        wait = ["WAIT", self._replica_wait.replicas, self._replica_wait.timeout_ms]
        async with self._redis.pipeline(transaction=False) as pipe:
            # As a raw command: redis-py's cluster pipeline refuses its evalsha() helper, wary
            # of scripts over several slots; all of a call's keys share one.
            pipe.execute_command("EVALSHA", self._commit.sha, len(keys.all), *keys.all, *args)
            pipe.execute_command(*wait, **self._node_of(keys.state))
            done, acknowledged = await pipe.execute()
        return int(done), int(acknowledged)

    def _node_of(self, key: str) -> dict[str, Any]:
        """Where a key-less command must go to reach the node holding `key` (cluster only)."""
        if isinstance(self._redis, RedisCluster):
            return {"target_nodes": self._redis.get_node_from_key(key)}
        return {}

    async def release(self, lease: Lease) -> None:
        async with self._round_trip("release"):
            await self._eval(self._release, [self.keys(lease.call_id).lease], [lease.token])

    async def give_back(self, lease: Lease) -> None:
        """Releases the lease of a turn that failed: now, or if Redis fails too, once it answers
        again (the lease would expire by itself)."""
        try:
            await self.release(lease)
        except StoreUnavailable:
            log.warning("lease release failed; retrying", call_identify_id=lease.call_id)
            self.release_later(lease)

    def release_later(self, lease: Lease) -> None:
        """Releases the lease in the background once Redis answers (for at most its lifetime)."""
        task = asyncio.create_task(self._release_when_back(lease))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_when_back(self, lease: Lease) -> None:
        deadline = time.monotonic() + self._lease_ms / 1000
        while time.monotonic() < deadline:
            try:
                await self.release(lease)
                return
            except StoreUnavailable:
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()

    async def read_call(self, call_id: str) -> tuple[CallState, list[StepRecord]] | None:
        """The call's state and its trail, in order, or None when the call is unknown."""
        keys = self.keys(call_id)
        async with (
            self._round_trip("read_call"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            raw_state, steps = await pipe.get(keys.state).lrange(keys.steps, 0, -1).execute()
        if raw_state is None:
            return None
        return _read(STATE, raw_state, call_id), [_read(STEP, raw, call_id) for raw in steps]

    async def read_steps(self, call_id: str) -> list[StepRecord] | None:
        """The call's trail, in order, or None when the call is unknown."""
        keys = self.keys(call_id)
        async with (
            self._round_trip("read_steps"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            exists, steps = await pipe.exists(keys.state).lrange(keys.steps, 0, -1).execute()
        return [_read(STEP, raw, call_id) for raw in steps] if exists else None

    async def live_calls(self, *, scan_limit: int) -> LiveCalls:
        """Every call's state (at most `scan_limit` of them), for the console's search. A call
        that ends or expires while it runs may be missing; one stored in a format this release
        cannot read is skipped and counted. On a Redis Cluster it scans every primary.
        Each batch is decoded as it arrives, so that turns sharing the event loop wait for one
        batch's decoding at most, never for a whole search's."""
        states: list[CallState] = []
        unreadable = 0
        skip = len(self._prefix) + 2  # "{prefix}:{"
        async with self._round_trip("live_calls"):
            keys, truncated = await self._state_keys(scan_limit)
            for start in range(0, len(keys), SCAN_BATCH):
                batch = keys[start : start + SCAN_BATCH]
                for key, raw in zip(batch, await self._values(batch), strict=True):
                    if raw is None:
                        continue  # gone since the scan: ended by a DELETE or expired
                    try:
                        states.append(_read(STATE, raw, key[skip : -len("}:state")].decode()))
                    except StoredRecordUnreadable:
                        unreadable += 1
        return LiveCalls(states, truncated, unreadable)

    async def _state_keys(self, scan_limit: int) -> tuple[list[bytes], bool]:
        """Up to `scan_limit` state keys, and whether there were more. SCAN may name a key
        twice (while Redis rehashes): the dict keeps each once."""
        found: dict[bytes, None] = {}
        scan = self._redis.scan_iter(match=state_keys_pattern(self._prefix), count=SCAN_BATCH)
        async with aclosing(scan) as keys:
            async for key in keys:
                found[key] = None
                if len(found) > scan_limit:
                    return list(found)[:scan_limit], True
        return list(found), False

    async def _values(self, keys: list[bytes]) -> list[bytes | None]:
        """GET of each key: one MGET on a single Redis; on a cluster the keys lie on different
        slots, which MGET refuses: a pipeline of GETs instead, which the cluster client splits
        per node."""
        if not isinstance(self._redis, RedisCluster):
            return await self._redis.mget(keys)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return await pipe.execute()

    async def delete_call(self, call_id: str) -> bool:
        keys = self.keys(call_id)
        async with (
            self._round_trip("delete_call"),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            removed, _ = await (
                pipe.delete(keys.state)
                .delete(keys.steps, keys.lease, keys.idempotency, keys.size)
                .execute()
            )
        return bool(removed)


def _read(record: RecordFormat[Record], raw: bytes, call_id: str) -> Record:
    """A stored record in the current version; one this release cannot read is logged (for the
    operator: which call, which record, what version) and refused."""
    try:
        return record.read(raw, call_id)
    except StoredRecordUnreadable as refused:
        log.warning("stored_record_unreadable", **refused.details)
        raise
