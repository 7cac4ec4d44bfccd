"""RedisStore over fakeredis (its Lua runs through lupa): leases, atomic commits, keys, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from operator import itemgetter
from typing import Any

import fakeredis
import orjson
import pytest
from redis import exceptions as redis_exceptions
from redis.asyncio.connection import Connection as AsyncConnection

from orchestrator_flows.core.errors import (
    CallSizeLimit,
    StoredRecordUnreadable,
    StoreUnavailable,
    TurnConflict,
    TurnInProgress,
)
from orchestrator_flows.core.models import CallState, StepRecord
from orchestrator_flows.core.records import ANSWER, STATE, STEP
from orchestrator_flows.infra import redis_store
from orchestrator_flows.infra.redis_store import Lease, RedisStore, StoredAnswer, call_keys
from tests.support.agents import free_port
from tests.support.records import call_state, call_state_v1, step_record, step_record_v1

CALL = "CALL-1"
TTL = 3600
MAX_BYTES = 64 * 1024


async def begin(store: RedisStore, call_id: str) -> tuple:
    start = await store.begin_turn(call_id)
    return start.lease, start.state


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: fakeredis.FakeAsyncRedis) -> RedisStore:
    return RedisStore(redis, prefix="orch", ttl_sec=TTL, lease_sec=2.5, max_call_bytes=MAX_BYTES)


def state_after(steps: int, call_id: str = CALL) -> CallState:
    return call_state(
        call_identify_id=call_id,
        current_flow_id=min(steps + 1, 5),
        completed_flows=list(range(1, min(steps, 5) + 1)),
        step_count=steps,
    )


def step(seq: int) -> StepRecord:
    return step_record(seq, intent_flow_id=seq)


async def run_turn(store: RedisStore, call_id: str = CALL) -> CallState:
    """One whole turn: lease, read, commit the next step."""
    lease, stored = await begin(store, call_id)
    done = stored["step_count"] if stored else 0
    new = state_after(done + 1, call_id)
    await store.commit_step(lease, done, new, step(done + 1))
    return new


async def test_first_turn_of_a_new_call_gets_a_lease_and_no_state(store: RedisStore) -> None:
    lease, state = await begin(store, CALL)

    assert state is None
    assert lease.call_id == CALL
    assert lease.token


async def test_second_turn_while_the_first_runs_is_told_to_retry(store: RedisStore) -> None:
    await store.begin_turn(CALL)

    with pytest.raises(TurnInProgress) as caught:
        await store.begin_turn(CALL)

    assert caught.value.headers == {"Retry-After": "3"}  # the 2.5 s lease, rounded up
    assert caught.value.details == {"call_identify_id": CALL}


async def test_lease_of_one_call_does_not_block_another(store: RedisStore) -> None:
    await store.begin_turn(CALL)

    _, state = await begin(store, "CALL-2")

    assert state is None


async def test_commit_writes_the_state_and_appends_the_step(store: RedisStore) -> None:
    lease, _ = await begin(store, CALL)

    await store.commit_step(lease, 0, state_after(1), step(1))

    found = await store.read_call(CALL)
    assert found is not None
    state, steps = found
    assert state == state_after(1)
    assert steps == [step(1)]
    assert await store.read_steps(CALL) == steps


async def test_next_turn_reads_what_the_last_one_committed(store: RedisStore) -> None:
    await run_turn(store)
    await run_turn(store)

    _, state = await begin(store, CALL)

    assert state == state_after(2)
    steps = await store.read_steps(CALL)
    assert [s["seq"] for s in steps] == [1, 2]


async def test_the_bytes_a_call_holds_are_its_state_steps_and_remembered_answers(
    store: RedisStore,
) -> None:
    answer = StoredAnswer(fingerprint="fingerprint", status_code=200, body='{"step_seq": 1}')
    start = await store.begin_turn(CALL, "key-1")
    await store.commit_step(start.lease, 0, state_after(1), step(1), answer)
    await run_turn(store)

    start = await store.begin_turn(CALL)

    stored = [STATE.write(state_after(2)), STEP.write(step(1)), STEP.write(step(2))]
    remembered = len("key-1") + len(ANSWER.write(answer))
    assert start.held_bytes == sum(map(len, stored)) + remembered


async def test_commit_past_the_call_size_is_refused_and_changes_nothing(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    # Room for exactly four steps and the state after them.
    limit = sum(len(STEP.write(step(seq))) for seq in range(1, 5))
    limit += len(STATE.write(state_after(4)))
    small = RedisStore(redis, prefix="orch", ttl_sec=TTL, lease_sec=2.5, max_call_bytes=limit)
    for _ in range(4):
        await run_turn(small)
    before = {key: await redis.dump(key) for key in await redis.keys("*")}
    lease, _ = await begin(small, CALL)

    with pytest.raises(CallSizeLimit) as caught:
        await small.commit_step(lease, 4, state_after(5), step(5))

    await small.release(lease)
    assert caught.value.status_code == 409
    assert caught.value.details == {"call_identify_id": CALL, "max_call_bytes": limit}
    assert {key: await redis.dump(key) for key in await redis.keys("*")} == before


async def test_commit_releases_the_lease(store: RedisStore) -> None:
    await run_turn(store)

    lease, state = await begin(store, CALL)

    assert state is not None
    assert lease.token


async def test_commit_sets_the_session_ttl_on_state_and_steps(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store)
    keys = store.keys(CALL)

    assert TTL - 5 <= await redis.ttl(keys.state) <= TTL
    assert TTL - 5 <= await redis.ttl(keys.steps) <= TTL


async def test_each_commit_slides_the_ttl(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store)
    keys = store.keys(CALL)
    await redis.expire(keys.state, 10)
    await redis.expire(keys.steps, 10)

    await run_turn(store)

    assert await redis.ttl(keys.state) > 10
    assert await redis.ttl(keys.steps) > 10


@pytest.mark.parametrize("expected_steps", [1, 5])
async def test_commit_with_a_stale_step_count_writes_nothing(
    store: RedisStore, expected_steps: int
) -> None:
    lease, _ = await begin(store, CALL)

    with pytest.raises(TurnConflict) as caught:
        await store.commit_step(lease, expected_steps, state_after(1), step(1))

    assert caught.value.details == {"call_identify_id": CALL}
    assert await store.read_call(CALL) is None
    assert await store.read_steps(CALL) is None


async def test_commit_over_a_call_that_moved_on_writes_nothing(store: RedisStore) -> None:
    await run_turn(store)
    lease, _ = await begin(store, CALL)

    with pytest.raises(TurnConflict):
        await store.commit_step(lease, 0, state_after(1), step(1))

    state, steps = await store.read_call(CALL)
    assert state == state_after(1)
    assert len(steps) == 1


async def test_commit_after_the_call_was_deleted_is_a_conflict(store: RedisStore) -> None:
    await run_turn(store)
    lease, _ = await begin(store, CALL)
    assert await store.delete_call(CALL) is True

    with pytest.raises(TurnConflict):
        await store.commit_step(lease, 1, state_after(2), step(2))

    assert await store.read_call(CALL) is None
    assert await store.read_steps(CALL) is None


async def test_commit_sent_again_after_its_answer_was_lost_is_recorded_once(
    store: RedisStore,
) -> None:
    lease, _ = await begin(store, CALL)
    await store.commit_step(lease, 0, state_after(1), step(1))

    await store.commit_step(lease, 0, state_after(1), step(1))  # the same command, resent

    assert [s["seq"] for s in await store.read_steps(CALL)] == [1]


async def test_commit_of_another_step_after_the_lease_went_is_still_a_conflict(
    store: RedisStore,
) -> None:
    lease, _ = await begin(store, CALL)
    await store.commit_step(lease, 0, state_after(1), step(1))

    with pytest.raises(TurnConflict):
        await store.commit_step(lease, 0, state_after(1), step(2))


async def test_begin_sent_again_after_its_answer_was_lost_keeps_the_lease(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    keys = call_keys("orch", CALL)
    args = [*keys.begin, "token-1|", 2500, ""]

    first = await redis.eval(redis_store.BEGIN_TURN, 4, *args)
    again = await redis.eval(redis_store.BEGIN_TURN, 4, *args)  # the same command, resent
    other = await redis.eval(redis_store.BEGIN_TURN, 4, *keys.begin, "token-2|", 2500, "")

    assert first[0] == again[0] == 1  # both runs: the lease is this request's
    assert other[0] == 0  # another request still finds the call busy
    assert await redis.get(keys.lease) == b"token-1|"


async def test_turns_go_on_after_redis_lost_its_scripts(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    # A restarted Redis, or a replica promoted in a failover, starts with no scripts cached.
    await run_turn(store)
    await redis.script_flush()
    await run_turn(store)
    await redis.script_flush()
    lease, _ = await begin(store, "CALL-2")
    await redis.script_flush()
    await store.release(lease)

    assert len(await redis.lrange(call_keys("orch", CALL).steps, 0, -1)) == 2
    assert not await redis.exists(call_keys("orch", "CALL-2").lease)


async def test_release_lets_the_next_turn_in(store: RedisStore) -> None:
    lease, _ = await begin(store, CALL)

    await store.release(lease)

    _, state = await begin(store, CALL)
    assert state is None


async def test_release_of_someone_elses_lease_does_nothing(store: RedisStore) -> None:
    await store.begin_turn(CALL)

    await store.release(Lease(CALL, "not-our-token"))

    with pytest.raises(TurnInProgress):
        await store.begin_turn(CALL)


async def test_commit_of_a_turn_whose_lease_was_taken_over_is_a_conflict(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    late, _ = await begin(store, CALL)
    await redis.delete(store.keys(CALL).lease)  # as if the late turn's lease had expired
    await store.begin_turn(CALL)

    with pytest.raises(TurnConflict):
        await store.commit_step(late, 0, state_after(1), step(1))

    assert await store.read_call(CALL) is None
    with pytest.raises(TurnInProgress):  # the new holder still holds its lease
        await store.begin_turn(CALL)


async def test_commit_of_a_turn_whose_lease_lapsed_is_refused(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    late, _ = await begin(store, CALL)
    await redis.delete(store.keys(CALL).lease)  # expired (or the call was deleted meanwhile)

    with pytest.raises(TurnConflict):
        await store.commit_step(late, 0, state_after(1), step(1))

    assert await store.read_call(CALL) is None
    assert await redis.keys("*") == []


async def test_keys_carry_the_call_id_as_a_hash_tag(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store)
    await store.begin_turn(CALL)

    assert sorted(await redis.keys("*")) == [
        b"orch:{CALL-1}:bytes",
        b"orch:{CALL-1}:lease",
        b"orch:{CALL-1}:state",
        b"orch:{CALL-1}:steps",
    ]
    assert call_keys("other", "C:9").state == "other:{C:9}:state"


async def test_unknown_call_reads_as_none(store: RedisStore) -> None:
    assert await store.read_call("NOBODY") is None
    assert await store.read_steps("NOBODY") is None


async def test_delete_of_an_unknown_call_reports_false(store: RedisStore) -> None:
    assert await store.delete_call("NOBODY") is False


async def test_delete_forgets_the_call_and_its_trail(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store)
    await run_turn(store, "CALL-2")

    assert await store.delete_call(CALL) is True

    assert await store.read_call(CALL) is None
    assert await store.read_steps(CALL) is None
    assert await redis.keys("orch:{CALL-1}:*") == []
    assert await store.read_call("CALL-2") is not None


async def test_ping_answers_true_when_redis_is_up(store: RedisStore) -> None:
    assert await store.ping() is True


@pytest.fixture
async def unreachable_store() -> AsyncIterator[RedisStore]:
    client = redis_store.connect(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    yield RedisStore(client, prefix="orch", ttl_sec=TTL, lease_sec=2.5, max_call_bytes=MAX_BYTES)
    await client.aclose()


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.begin_turn(CALL),
        lambda s: s.commit_step(Lease(CALL, "t"), 0, state_after(1), step(1)),
        lambda s: s.release(Lease(CALL, "t")),
        lambda s: s.read_call(CALL),
        lambda s: s.read_steps(CALL),
        lambda s: s.delete_call(CALL),
        lambda s: s.ping(),
        lambda s: s.live_calls(scan_limit=10),
    ],
    ids=[
        "begin_turn",
        "commit_step",
        "release",
        "read_call",
        "read_steps",
        "delete",
        "ping",
        "live_calls",
    ],
)
async def test_redis_down_is_store_unavailable_with_retry_after(
    unreachable_store: RedisStore, operation
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await operation(unreachable_store)

    assert caught.value.status_code == 503
    assert caught.value.headers == {"Retry-After": "1"}
    assert caught.value.details["reason"] == "ConnectionError"


async def ping_meeting(
    fault: BaseException | Callable[[], Awaitable[Any]],
    redis: fakeredis.FakeAsyncRedis,
    store: RedisStore,
) -> bool:
    """The store's ping, its Redis command raising `fault` (or running a failing command)."""

    async def ping() -> bool:
        if isinstance(fault, BaseException):
            raise fault
        return await fault()

    redis.ping = ping  # type: ignore[method-assign]
    return await store.ping()


@pytest.mark.parametrize(
    "fault",
    [
        redis_exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis_exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis_exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing"),
        redis_exceptions.SlotNotCoveredError("Slot 1234 is not covered by the cluster"),
    ],
)
async def test_cluster_faults_are_store_unavailable(
    fault: Exception, redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await ping_meeting(fault, redis, store)

    assert caught.value.status_code == 503
    assert caught.value.details["reason"] == type(fault).__name__
    assert caught.value.headers == {"Retry-After": "1"}


async def test_write_on_a_connection_the_cluster_client_closed_meanwhile_is_store_unavailable(
    redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    closed = RuntimeError("unable to perform operation on <TCPTransport>; the handler is closed")
    with pytest.raises(StoreUnavailable) as caught:
        await ping_meeting(closed, redis, store)

    assert caught.value.details["reason"] == "ConnectionClosed"
    assert caught.value.__cause__ is closed


async def test_write_on_a_connection_torn_down_meanwhile_is_store_unavailable(
    redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    # What redis-py's cluster client does in a failover: another turn's command disconnects
    # the connection after this one took it, before it writes. Whatever redis-py raises for
    # that, the turn hears the service's answer: 503 store_unavailable, retry shortly.
    torn_down = AsyncConnection()
    torn_down._writer = None
    with pytest.raises(StoreUnavailable) as caught:
        await ping_meeting(lambda: torn_down._send_packed_command([b"PING"]), redis, store)

    assert caught.value.status_code == 503
    assert caught.value.code == "store_unavailable"
    assert caught.value.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    "refusal",
    [
        # Redis 7: the script's write is refused with the OOM error itself.
        redis_exceptions.OutOfMemoryError(
            "command not allowed when used memory > 'maxmemory'. script: 4aea30, on @user_script:1."
        ),
        # Redis 6: the same refusal wrapped in the script's error.
        redis_exceptions.ResponseError(
            "Error running script (call to f_acd849): @user_script:10: @user_script: 10:"
            " -OOM command not allowed when used memory > 'maxmemory'."
        ),
    ],
)
async def test_a_full_redis_is_store_unavailable_for_a_while(
    refusal: Exception, redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await ping_meeting(refusal, redis, store)

    assert caught.value.status_code == 503
    assert caught.value.details["reason"] == "OutOfMemoryError"
    assert caught.value.headers == {"Retry-After": "5"}


async def test_other_script_errors_are_not_taken_for_a_full_redis(
    redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    bug = redis_exceptions.ResponseError(
        "Error running script: @user_script:3: attempt to index nil"
    )
    with pytest.raises(redis_exceptions.ResponseError):
        await ping_meeting(bug, redis, store)


async def test_other_runtime_errors_are_not_taken_for_a_store_outage(
    redis: fakeredis.FakeAsyncRedis, store: RedisStore
) -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        await ping_meeting(RuntimeError("no running event loop"), redis, store)


def test_sentinel_url_names_the_sentinels_and_the_primarys_password_and_database() -> None:
    client = redis_store.connect(
        "redis://:s3cret@10.0.0.1:26379,10.0.0.2:26380,sentinel-3/4", 0.5, sentinel_master="main"
    )

    pool = client.connection_pool
    sentinels = [c.connection_pool.connection_kwargs for c in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26380),
        ("sentinel-3", 26379),
    ]
    assert pool.service_name == "main"
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("s3cret", 4)
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    assert sentinels[0]["password"] is None  # the sentinels themselves are asked without it


# Records of another format version: core/records.py decides, the store gives back and logs.


async def store_unversioned_call(redis: fakeredis.FakeAsyncRedis, answer: StoredAnswer) -> None:
    """CALL after one turn, as the release before record versions left it in Redis."""
    keys = call_keys("orch", CALL)
    older = {"intent_flow_id": 1}  # the fields step(1) has that every version had
    old_step, old_answer = orjson.dumps(step_record_v1(1, **older)), orjson.dumps(answer)
    old_state = call_state_v1(**{k: v for k, v in state_after(1).items() if k in call_state_v1()})
    await redis.set(keys.state, orjson.dumps(old_state), ex=TTL)
    await redis.rpush(keys.steps, old_step)
    await redis.hset(keys.idempotency, "key-1", old_answer)
    await redis.set(keys.size, len(old_step) + len("key-1") + len(old_answer), ex=TTL)


async def snapshot(redis: fakeredis.FakeAsyncRedis) -> dict[bytes, bytes]:
    return {key: await redis.dump(key) for key in await redis.keys("*")}


def logged(capsys: pytest.CaptureFixture[str], event: str) -> list[dict]:
    lines = capsys.readouterr().err.splitlines()
    return [entry for entry in map(orjson.loads, lines) if entry["event"] == event]


async def test_a_call_stored_before_record_versions_is_read_and_goes_on(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    answer = StoredAnswer(fingerprint="f" * 64, status_code=200, body='{"step_seq": 1}')
    await store_unversioned_call(redis, answer)

    assert (await store.begin_turn(CALL, "key-1")).replay == answer
    assert await store.read_call(CALL) == (state_after(1), [step(1)])
    assert await run_turn(store) == state_after(2)

    assert await store.read_call(CALL) == (state_after(2), [step(1), step(2)])
    keys = call_keys("orch", CALL)
    assert orjson.loads(await redis.get(keys.state))["v"] == STATE.version  # rewritten: current
    old, new = [orjson.loads(raw) for raw in await redis.lrange(keys.steps, 0, -1)]
    assert "v" not in old and new["v"] == STEP.version  # a step, once written, is not rewritten


async def test_a_state_from_a_newer_release_refuses_the_turn_changes_nothing_and_is_logged(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_turn(store)
    newer_version = STATE.version + 1
    newer = orjson.loads(STATE.write(state_after(1))) | {"v": newer_version, "stage": 2}
    await redis.set(call_keys("orch", CALL).state, orjson.dumps(newer), keepttl=True)
    before = await snapshot(redis)
    capsys.readouterr()

    for _ in range(2):  # refused again, not busy: the lease its script took was given back
        with pytest.raises(StoredRecordUnreadable) as caught:
            await store.begin_turn(CALL)

    assert caught.value.details == {
        "call_identify_id": CALL,
        "record": "state",
        "version": newer_version,
        "reason": "newer_version",
    }
    assert await snapshot(redis) == before
    [line, _] = logged(capsys, "stored_record_unreadable")
    assert line["level"] == "warning"
    assert {key: line[key] for key in ("call_identify_id", "record", "version")} == {
        "call_identify_id": CALL,
        "record": "state",
        "version": newer_version,
    }


async def test_a_kept_answer_from_a_newer_release_refuses_its_retry_and_changes_nothing(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    answer = StoredAnswer(fingerprint="f" * 64, status_code=200, body="{}")
    start = await store.begin_turn(CALL, "key-1")
    await store.commit_step(start.lease, 0, state_after(1), step(1), answer)
    newer = {"v": 2, "fingerprint": "f" * 64, "status": 200, "body": "{}"}
    await redis.hset(call_keys("orch", CALL).idempotency, "key-1", orjson.dumps(newer))
    before = await snapshot(redis)

    with pytest.raises(StoredRecordUnreadable) as caught:
        await store.begin_turn(CALL, "key-1")

    assert caught.value.details["record"] == "answer"
    assert await snapshot(redis) == before


async def test_a_step_from_a_newer_release_refuses_reading_the_trail(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store)
    await redis.rpush(call_keys("orch", CALL).steps, orjson.dumps({"v": 7, **step(2)}))

    for read in (store.read_call, store.read_steps):
        with pytest.raises(StoredRecordUnreadable) as caught:
            await read(CALL)
        assert caught.value.details["record"] == "step"
        assert caught.value.details["version"] == 7


async def test_live_calls_are_the_states_of_every_call_held_and_nothing_else(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    written = [await run_turn(store, f"CALL-{n}") for n in range(5)]
    await store.begin_turn("CALL-NEW")  # a lease, no state yet
    other = RedisStore(redis, prefix="orch2", ttl_sec=TTL, lease_sec=2.5, max_call_bytes=MAX_BYTES)
    await run_turn(other, "CALL-ELSEWHERE")

    live = await store.live_calls(scan_limit=100)

    by_id = itemgetter("call_identify_id")
    assert sorted(live.states, key=by_id) == sorted(written, key=by_id)
    assert (live.truncated, live.unreadable) == (False, 0)


async def test_live_calls_skip_and_count_an_unreadable_state(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    await run_turn(store, "CALL-OK")
    await redis.set(call_keys("orch", "CALL-DAMAGED").state, b"{not json")
    newer = orjson.dumps({"v": 9, **state_after(1, "CALL-NEWER")})
    await redis.set(call_keys("orch", "CALL-NEWER").state, newer)

    live = await store.live_calls(scan_limit=100)

    assert [s["call_identify_id"] for s in live.states] == ["CALL-OK"]
    assert live.unreadable == 2


async def test_live_calls_stop_at_the_scan_limit_and_say_so(store: RedisStore) -> None:
    for n in range(7):
        await run_turn(store, f"CALL-{n}")

    cut = await store.live_calls(scan_limit=3)
    whole = await store.live_calls(scan_limit=7)

    assert (len(cut.states), cut.truncated) == (3, True)
    assert (len(whole.states), whole.truncated) == (7, False)


async def test_live_calls_read_more_calls_than_one_batch(
    store: RedisStore, redis: fakeredis.FakeAsyncRedis
) -> None:
    count = redis_store.SCAN_BATCH * 2 + 1
    for n in range(count):
        await redis.set(
            call_keys("orch", f"CALL-{n}").state, STATE.write(state_after(1, f"CALL-{n}"))
        )

    live = await store.live_calls(scan_limit=count)

    assert len({s["call_identify_id"] for s in live.states}) == count
    assert not live.truncated
