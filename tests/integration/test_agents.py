"""What the caller sees when the agent behind a stage misbehaves, or speaks the older A2A 0.3."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import (
    OTP_QUESTION,
    AgentServer,
    Caller,
    RedisView,
    ServiceFactory,
)
from tests.support.agents import (
    FailingTaskAgent,
    GatedAgent,
    OtpAgent,
    RaisingAgent,
    free_port,
)
from tests.support.timing import Gate

pytestmark = pytest.mark.integration

A2A_TIMEOUT_SEC = 0.5


@pytest.fixture(params=["agent_timeout", "agent_unreachable", "agent_error", "agent_task_failed"])
def broken_refund_agent(
    request: pytest.FixtureRequest, serve_agent: AgentServer, gate: Gate
) -> tuple[str, str]:
    """(the fault code the caller should see, the URL of an agent that causes it)."""
    code = request.param
    if code == "agent_unreachable":
        return code, f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    executor = {
        "agent_timeout": lambda: GatedAgent(gate),  # held until the test is over
        "agent_error": RaisingAgent,
        "agent_task_failed": FailingTaskAgent,
    }[code]()
    return code, serve_agent(executor)


async def test_agent_fault_is_answered_recorded_and_a_retry_succeeds(
    service: Caller,
    make_service: ServiceFactory,
    broken_refund_agent: tuple[str, str],
    store: RedisView,
) -> None:
    code, broken_url = broken_refund_agent
    # A short agent deadline only where it is the fault: the others answer well within the
    # default (15 s), however loaded the machine.
    timeout = {"a2a_timeout_sec": A2A_TIMEOUT_SEC} if code == "agent_timeout" else {}
    broken = make_service(agent_urls={"refund": broken_url}, **timeout)
    await service.walk(3)

    answer = await broken.turn("refund_request", "I want a refund")

    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["response_status"]) == ("error", "error")
    assert body["response"]["error"]["code"] == code
    assert (body["intent_flow_id"], body["next_flow_id"]) == (3, 3)
    state = store.state()
    assert (state["current_flow_id"], state["completed_flows"]) == (3, [1, 2])
    assert state["stages"]["3"]["errors"] == 1
    step = store.steps()[-1]
    assert (step["seq"], step["response_status"], step["error"]["code"]) == (4, "error", code)
    assert step["a2a_agent_url"] == broken_url
    assert all(ttl > 0 for ttl in store.ttls())

    retry = await service.turn("refund_request", "I want a refund")

    assert retry.status_code == 200
    assert (retry.json()["status"], retry.json()["next_flow_id"]) == ("success", 4)
    assert [s["response_status"] for s in store.steps()[3:]] == ["error", "success"]
    assert store.state()["current_flow_id"] == 4


async def test_agent_speaking_a2a_0_3_serves_its_stage(
    make_service: ServiceFactory, serve_agent: AgentServer, store: RedisView
) -> None:
    otp = OtpAgent()
    url = serve_agent(otp, v03=True)
    async with httpx.AsyncClient() as http:
        card = (await http.get(url + ".well-known/agent-card.json")).json()
    assert card["protocolVersion"] == "0.3"
    legacy = make_service(agent_urls={"auth": url})

    _, question, verified = [a.json() for a in await legacy.walk(3)]

    assert (question["response_status"], question["response"]["text"]) == (
        "input_required",
        OTP_QUESTION,
    )
    assert (verified["response_status"], verified["response"]["text"]) == (
        "success",
        "identity verified",
    )
    task_id = question["response"]["task_id"]
    assert verified["response"]["task_id"] == task_id
    assert otp.seen.task_ids == [task_id, task_id]
    assert verified["next_flow_id"] == 3
    assert store.state()["completed_flows"] == [1, 2]
    assert [s["a2a_agent_url"] for s in store.steps()[1:]] == [url, url]
