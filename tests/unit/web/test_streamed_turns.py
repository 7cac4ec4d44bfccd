"""Turns sent with `Accept: text/event-stream` through the HTTP surface (in-process service,
fakeredis, in-process a2a-sdk agents): the events and their order, the last event's body,
refusals as JSON, replays, faults, and a commit that fails after the agent spoke."""

from __future__ import annotations

import json
from typing import Any

from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from httpx_sse import aconnect_sse

from tests.support.agents import RaisingAgent, Recording
from tests.support.service import Service, ServiceFactory, bearer

WORDS = ["Hello ", "and ", "welcome."]
TURN = {
    "call_identify_id": "CALL-S",
    "account_id": "ACC-1",
    "eci": "ECI-1",
    "input_message": "hello",
    "intent": "greeting",
}


class Words(Recording):
    """Streams WORDS as appended parts of one artifact, then completes. With `on_answer`, runs
    it before answering (to take Redis down while the turn is inside the agent call)."""

    def __init__(self, on_answer: Any = None) -> None:
        super().__init__()
        self.on_answer = on_answer

    async def answer(self, ctx: RequestContext, queue: EventQueue) -> None:
        if self.on_answer:
            self.on_answer()
        await queue.enqueue_event(new_task_from_user_message(ctx.message))
        up = TaskUpdater(queue, ctx.task_id, ctx.context_id)
        for n, word in enumerate(WORDS):
            await up.add_artifact([new_text_part(word)], artifact_id="a", append=n > 0)
        await up.complete()


async def stream(
    service: Service, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], list[tuple[str, Any]]]:
    """Status, headers and [(event, data)] of one streamed turn; a JSON answer as ("json", body)."""
    async with aconnect_sse(
        service.http, "POST", "/orchestrate", json=body or TURN, headers=dict(headers or {})
    ) as source:
        answer = source.response
        if not answer.headers["content-type"].startswith("text/event-stream"):
            return (
                answer.status_code,
                dict(answer.headers),
                [("json", json.loads(await answer.aread()))],
            )
        events = [(e.event, json.loads(e.data)) async for e in source.aiter_sse()]
        return answer.status_code, dict(answer.headers), events


async def test_words_arrive_as_chunks_then_the_turn_with_the_same_text(
    make_service: ServiceFactory,
) -> None:
    service = await make_service(agents={"greeting": Words()})

    status, headers, events = await stream(service)

    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert [name for name, _ in events] == [
        "status",
        "chunk",
        "chunk",
        "chunk",
        "status",
        "turn",
    ]
    assert [data["text"] for name, data in events if name == "chunk"] == WORDS
    assert [data["state"] for name, data in events if name == "status"] == [
        "submitted",
        "completed",
    ]
    turn = events[-1][1]
    assert turn["response"]["text"] == "".join(WORDS)
    assert (turn["status"], turn["step_seq"], turn["next_flow_label"]) == (
        "success",
        1,
        "AUTHENTICATION",
    )


async def test_streamed_turn_answers_what_the_same_turn_answers_unstreamed(
    make_service: ServiceFactory,
) -> None:
    service = await make_service(agents={"greeting": Words()})

    _, _, events = await stream(service)
    unstreamed = (
        await service.http.post("/orchestrate", json=TURN | {"call_identify_id": "CALL-J"})
    ).json()

    streamed = events[-1][1]
    ids = {"call_identify_id", "response"}
    assert {k: v for k, v in streamed.items() if k not in ids} == {
        k: v for k, v in unstreamed.items() if k not in ids
    }
    same = ("text", "data", "kind", "task_state")
    assert [streamed["response"][k] for k in same] == [unstreamed["response"][k] for k in same]


async def test_turn_refused_before_the_agent_is_a_json_error(service: Service) -> None:
    wrong_stage = TURN | {"intent": "process_refund"}

    status, _, events = await stream(service, wrong_stage)
    unauthenticated, _, unauth_events = await stream(
        service, headers={"Authorization": "Bearer nope"}
    )

    assert status == 409 and events[0][1]["error"]["code"] == "intent_not_allowed"
    assert unauthenticated == 401 and unauth_events[0][0] == "json"
    assert service.agent_requests == []
    assert (await service.http.get("/session/CALL-S")).status_code == 404


async def test_replay_of_a_streamed_turn_is_its_one_turn_event(
    make_service: ServiceFactory,
) -> None:
    agent = Words()
    service = await make_service(agents={"greeting": agent})
    key = {"Idempotency-Key": "turn-1"}

    _, _, first = await stream(service, headers=key)
    status, headers, replay = await stream(service, headers=key)

    assert status == 200 and headers["idempotent-replayed"] == "true"
    assert [name for name, _ in replay] == ["turn"]
    assert replay[0][1]["step_seq"] == first[-1][1]["step_seq"] == 1
    assert len(agent.seen.texts) == 1


async def test_agent_fault_ends_the_stream_with_an_error_turn_that_is_recorded(
    make_service: ServiceFactory,
) -> None:
    service = await make_service(agents={"greeting": RaisingAgent()})

    status, _, events = await stream(service)

    assert status == 200
    name, turn = events[-1]
    assert name == "turn" and turn["status"] == "error"
    assert turn["response"]["error"]["code"] == "agent_error"
    steps = (await service.http.get("/session/CALL-S/steps")).json()
    assert [s["error"]["code"] for s in steps] == ["agent_error"]


async def test_commit_failing_after_the_agent_spoke_ends_with_the_error_and_a_retry_records_it(
    make_service: ServiceFactory,
) -> None:
    holder: list[Service] = []

    def redis_goes_down() -> None:
        holder[0].server.connected = False

    agent = Words(on_answer=redis_goes_down)
    service = await make_service(agents={"greeting": agent})
    holder.append(service)
    key = {"Idempotency-Key": "turn-9"}

    _, _, events = await stream(service, headers=key)
    service.server.connected = True
    await service.redis.delete("orch:{CALL-S}:lease")  # the lease would have expired
    agent.on_answer = None
    _, _, retried = await stream(service, headers=key)

    assert [data["text"] for name, data in events if name == "chunk"] == WORDS
    assert events[-1] == ("turn", events[-1][1])
    assert events[-1][1]["error"]["code"] == "store_unavailable"
    assert [name for name, _ in retried] == ["chunk", "turn"], (
        retried
    )  # told again, the agent not asked
    assert retried[0][1]["text"] == "".join(WORDS)
    assert retried[-1][1]["step_seq"] == 1
    assert len(agent.seen.texts) == 1


async def test_streamed_turns_and_first_words_are_counted(make_service: ServiceFactory) -> None:
    service = await make_service(agents={"greeting": Words()})

    await stream(service)
    exposition = (await service.http.get("/metrics", headers=bearer("monitor"))).text

    assert 'orch_streamed_turns_total{transport="sse"} 1.0' in exposition
    assert 'orch_agent_first_chunk_seconds_count{agent="greeting"} 1.0' in exposition
