"""A turn's guarantees across retries: Idempotency-Key replays, and no second agent call when
Redis failed after the agent answered (fakeredis, in-process a2a-sdk agents)."""

from __future__ import annotations

import pytest
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue

from tests.support.agents import MessageAgent, RaisingAgent
from tests.support.service import Service


async def keyed_turn(service: Service, key: str, intent: str = "greeting", **fields):
    return await service.turn(intent, headers={"Idempotency-Key": key}, **fields)


async def test_same_key_and_body_replays_the_answer_without_a_new_step(service: Service) -> None:
    first = await keyed_turn(service, "k-1")
    again = await keyed_turn(service, "k-1")

    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(service.agents["greeting"].seen.texts) == 1
    assert await service.redis.llen("orch:{CALL-001}:steps") == 1


async def test_same_key_with_another_body_is_refused_and_writes_nothing(service: Service) -> None:
    await keyed_turn(service, "k-1")
    before = await service.redis.get("orch:{CALL-001}:state")

    reused = await keyed_turn(service, "k-1", input_message="something else")

    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert await service.redis.get("orch:{CALL-001}:state") == before
    assert len(service.agents["greeting"].seen.texts) == 1


async def test_after_an_agent_fault_the_same_key_replays_and_a_new_key_asks_again(
    make_service,
) -> None:
    service = await make_service(agents={"greeting": RaisingAgent()})
    failed = await keyed_turn(service, "k-1")
    replayed = await keyed_turn(service, "k-1")
    fresh = await keyed_turn(service, "k-2")

    steps = (await service.http.get("/session/CALL-001/steps")).json()
    assert failed.json()["status"] == "error"
    assert replayed.content == failed.content
    assert fresh.json()["status"] == "error"
    assert [s["idempotency_key"] for s in steps] == ["k-1", "k-2"]
    assert steps[0]["a2a_message_id"] != steps[1]["a2a_message_id"]
    assert len(service.agents["greeting"].seen.texts) == 2


class DropsRedisWhenCalled(MessageAgent):
    """Answers, and takes Redis down on the way: the turn's commit will fail."""

    def __init__(self, service_box: list) -> None:
        super().__init__("greeting")
        self.service_box = service_box
        self.drops = 1

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        if self.drops:
            self.drops -= 1
            self.service_box[0].server.connected = False
        await super().answer(ctx, queue)


async def test_answer_lost_to_a_redis_fault_is_committed_by_the_retry_not_asked_again(
    make_service,
) -> None:
    box: list = []
    agent = DropsRedisWhenCalled(box)
    service = await make_service(agents={"greeting": agent})
    box.append(service)

    lost = await keyed_turn(service, "k-1")
    service.server.connected = True
    await service.redis.delete("orch:{CALL-001}:lease")  # the lease would have expired
    retried = await keyed_turn(service, "k-1")

    assert lost.status_code == 503
    assert lost.json()["error"]["code"] == "store_unavailable"
    assert retried.status_code == 200
    assert retried.json()["next_flow_id"] == 2
    assert len(agent.seen.texts) == 1  # the agent acted once
    assert await service.redis.llen("orch:{CALL-001}:steps") == 1


async def test_without_the_key_a_retry_after_a_redis_fault_asks_the_agent_again(
    make_service,
) -> None:
    box: list = []
    agent = DropsRedisWhenCalled(box)
    service = await make_service(agents={"greeting": agent})
    box.append(service)

    lost = await service.turn("greeting")
    service.server.connected = True
    await service.redis.delete("orch:{CALL-001}:lease")
    agent.drops = 0
    retried = await service.turn("greeting")

    assert lost.status_code == 503
    assert retried.status_code == 200
    assert len(agent.seen.texts) == 2  # the limit: without a key the agent is asked twice


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("has space", "string_pattern_mismatch"),
        ("", "string_too_short"),
        ("k" * 256, "string_too_long"),
        ("del\x7f", "string_pattern_mismatch"),
    ],
)
async def test_invalid_idempotency_key_is_a_validation_error(
    service: Service, key: str, rule: str
) -> None:
    answer = await keyed_turn(service, key)

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    (field,) = error["fields"]
    assert (field["loc"], field["type"]) == (["header", "Idempotency-Key"], rule)
    assert key not in field["message"] or not key  # the value is never echoed
    assert service.agents["greeting"].seen.texts == []
    assert await service.redis.keys("*") == []
