"""Admission control: a worker holding MAX_TURNS_IN_FLIGHT turns answers the next one 503
`overloaded` at once, before the key, the body, Redis or an agent; it counts what it shed and
shows the turns it holds; once a turn ends, turns are admitted again."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.support.agents import GatedAgent
from tests.support.service import Service, ServiceFactory
from tests.support.timing import Gate, eventually


def metric(text: str, name: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def test_a_turn_past_the_limit_is_503_overloaded_at_once_and_touches_nothing(
    make_service: ServiceFactory,
) -> None:
    gate = Gate()
    service: Service = await make_service(
        agents={"greeting": GatedAgent(gate)}, max_turns_in_flight=1
    )
    held = asyncio.create_task(service.turn("greeting", call_identify_id="CALL-HELD"))
    await eventually(lambda: gate.arrivals == 1, "the first turn is inside its agent call")
    keys_before = sorted(await service.redis.keys("*"))

    shed = await service.turn("greeting", call_identify_id="CALL-SHED")
    unauthenticated = await service.http.post(
        "/orchestrate", json={}, headers={"Authorization": ""}
    )

    assert shed.status_code == 503
    assert shed.headers["Retry-After"] == "1"
    assert shed.json()["error"]["code"] == "overloaded"
    assert shed.json()["error"]["max_turns_in_flight"] == 1
    assert unauthenticated.status_code == 503  # shed before its key was even looked at
    assert sorted(await service.redis.keys("*")) == keys_before  # no call, no lease
    assert gate.arrivals == 1  # no agent was asked
    text = (await service.http.get("/metrics")).text
    assert metric(text, "orch_turns_in_flight") == 1
    assert metric(text, "orch_turns_shed_total") == 2

    gate.open()
    assert (await held).status_code == 200
    after = await service.turn("greeting", call_identify_id="CALL-SHED")
    assert after.status_code == 200, after.text
    assert metric((await service.http.get("/metrics")).text, "orch_turns_in_flight") == 0


async def test_refused_and_failed_turns_give_their_place_back(service: Service) -> None:
    # Every way out of a turn (an error answer, a validation error) ends its time in flight.
    await service.turn("process_refund")  # 409: a later stage's intent
    await service.http.post("/orchestrate", json={"call_identify_id": "C"})  # 422

    text = (await service.http.get("/metrics")).text
    assert metric(text, "orch_turns_in_flight") == 0


async def test_no_limit_when_max_turns_in_flight_is_0(make_service: ServiceFactory) -> None:
    gate = Gate()
    service = await make_service(agents={"greeting": GatedAgent(gate)}, max_turns_in_flight=0)
    held = [
        asyncio.create_task(service.turn("greeting", call_identify_id=f"CALL-{n}"))
        for n in range(5)
    ]
    await eventually(lambda: gate.arrivals == 5, "five turns inside their agent call")

    gate.open()

    assert [answer.status_code for answer in await asyncio.gather(*held)] == [200] * 5
