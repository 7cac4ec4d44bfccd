"""The HTTP surface: answers, error shapes and OpenAPI (fakeredis, in-process agents)."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from orchestrator_flows.core.models import (
    CallState,
    OrchestrateResponse,
    StepRecord,
    StoredAnswer,
)
from orchestrator_flows.core.records import ANSWER, STATE, STEP, VERSION_FIELD, RecordFormat
from tests.support.agents import RaisingAgent
from tests.support.leaks import shows_test_card
from tests.support.service import Service, ServiceFactory

WHOLE_CALL = [
    ("greeting", "hi there"),
    ("verify_identity", "it is me"),
    ("otp_verify", "123456"),
    ("refund_request", "refund order 7"),
    ("process_refund", "yes please"),
    ("closing", "bye"),
]


async def drive_whole_call(service: Service, call_id: str = "CALL-001") -> list[dict]:
    answers = []
    for intent, words in WHOLE_CALL:
        answer = await service.turn(intent, words, call_identify_id=call_id)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    return answers


async def test_whole_call_walks_the_five_stages_in_order(service: Service) -> None:
    answers = await drive_whole_call(service)

    assert [a["intent_flow_id"] for a in answers] == [1, 2, 2, 3, 4, 5]
    assert [a["next_flow_id"] for a in answers] == [2, 2, 3, 4, 5, None]
    assert [a["response_status"] for a in answers][:3] == ["success", "input_required", "success"]
    assert answers[1]["response"]["text"] == "Please tell me the one-time code we sent you."
    assert answers[-1]["is_complete"] is True
    summary = answers[-1]["session_summary"]
    assert summary["completed_flows"] == [1, 2, 3, 4, 5]
    assert [s["outcome"] for s in summary["stages"]] == ["success"] * 5
    assert summary["total_steps"] == 6


async def test_what_a_call_stores_and_answers_is_exactly_what_the_models_say(
    make_service: ServiceFactory,
) -> None:
    # A turn builds plain dicts and validates none of them again (models.py): every record in
    # Redis and every answer must still be whole and typed as documented.
    service = await make_service(agents={"billing": RaisingAgent()})
    keyed = {"Idempotency-Key": "turn-1"}
    answers = [await service.turn(*WHOLE_CALL[0], headers=keyed)]
    answers += [await service.turn(intent, words) for intent, words in WHOLE_CALL[1:]]
    other = [*WHOLE_CALL[:3], ("weather_chat", "nice day"), ("billing_inquiry", "my bill")]
    for intent, words in other:  # a fallback step and an agent's fault
        answers.append(await service.turn(intent, words, call_identify_id="CALL-002"))

    for answer in answers:
        assert_exact(OrchestrateResponse, answer.content)
    for call in ("CALL-001", "CALL-002"):
        assert_stored(CallState, STATE, await service.redis.get(f"orch:{{{call}}}:state"))
        for step in await service.redis.lrange(f"orch:{{{call}}}:steps", 0, -1):
            assert_stored(StepRecord, STEP, step)
    kept = await service.redis.hget("orch:{CALL-001}:idempotency", "turn-1")
    assert_stored(StoredAnswer, ANSWER, kept)
    statuses = {answer.json()["response_status"] for answer in answers}
    assert statuses == {"success", "input_required", "error"}
    assert answers[5].json()["session_summary"]
    assert answers[-2].json()["agent_role"] == "fallback"


def assert_exact(record: type, raw: bytes) -> None:
    """Every field present, none more, each of its documented type, nothing coerced."""
    assert TypeAdapter(record).validate_json(raw, strict=True) == orjson.loads(raw)


def assert_stored(record: type, stored_as: RecordFormat, raw: bytes) -> None:
    """Stored in its format's current version, and otherwise exactly the model."""
    fields = orjson.loads(raw)
    assert fields.pop(VERSION_FIELD) == stored_as.version
    assert_exact(record, orjson.dumps(fields))


async def test_answer_carries_the_agents_words_and_the_call_context(service: Service) -> None:
    answer = (await service.turn("greeting", "good morning")).json()

    assert answer["response"]["text"] == "greeting: heard 'good morning' at GREETING"
    seen = service.agents["greeting"].seen.metadata[0]
    assert seen["call_identify_id"] == "CALL-001"
    assert seen["account_id"] == "ACC-1"
    assert seen["eci"] == "ECI-1"
    assert seen["flow_label"] == "GREETING"
    assert seen["intent"] == "greeting"


async def test_session_shows_state_steps_and_a_stable_expiry(service: Service) -> None:
    await drive_whole_call(service)

    first = (await service.http.get("/session/CALL-001")).json()
    second = (await service.http.get("/session/CALL-001")).json()

    assert first == second  # reading changes nothing
    assert first["is_complete"] is True
    assert first["completed_flows"] == [1, 2, 3, 4, 5]
    assert [s["seq"] for s in first["steps"]] == [1, 2, 3, 4, 5, 6]
    assert first["expires_at"] > first["updated_at"]
    assert first["session_summary"]["total_steps"] == 6


async def test_steps_endpoint_returns_the_trail_in_order(service: Service) -> None:
    await drive_whole_call(service)

    steps = (await service.http.get("/session/CALL-001/steps")).json()

    assert [s["intent"] for s in steps] == [intent for intent, _ in WHOLE_CALL]
    said = [words for _, words in WHOLE_CALL]
    said[2] = "******"  # the one-time code, masked in the trail (core/masking)
    assert [s["input_message"] for s in steps] == said
    assert steps[1]["a2a_task_id"] == steps[2]["a2a_task_id"]  # OTP continued the same task
    assert steps[1]["a2a_task_state"] == "input_required"
    assert all(s["a2a_agent_url"].startswith("http://agents.test/") for s in steps)
    assert all(s["duration_ms"] >= 0 for s in steps)


async def test_delete_forgets_the_call_and_its_trail(service: Service) -> None:
    await service.turn("greeting")

    assert (await service.http.delete("/session/CALL-001")).status_code == 204
    for answer in [
        await service.http.get("/session/CALL-001"),
        await service.http.get("/session/CALL-001/steps"),
        await service.http.delete("/session/CALL-001"),
    ]:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "call_not_found"
    assert await service.redis.keys("*") == []


@pytest.mark.parametrize("path", ["/session/NOPE", "/session/NOPE/steps"])
async def test_unknown_call_is_404_call_not_found(service: Service, path: str) -> None:
    answer = await service.http.get(path)

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "call_not_found"
    assert "NOPE" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"call_identify_id": ""},
        {"call_identify_id": "has space"},
        {"call_identify_id": "x" * 129},
        {"account_id": "acc/1"},
        {"eci": ""},
        {"intent": "Greeting"},
        {"intent": "x" * 65},
        {"input_message": ""},
        {"input_message": "   "},
        {"input_message": "\u200b\u200b\u200b"},  # zero-width spaces
        {"input_message": " \u2060\ufeff\u200d\u3164\u00a0\u202e "},  # format chars, fillers
        {"input_message": "x" * 4001},
        {"call_identify_id": "."},
        {"call_identify_id": ".."},
        {"account_id": "..."},
        {"eci": "."},
        {"agent_url": "http://evil.example/"},  # no request field may choose an agent
    ],
)
async def test_malformed_turn_is_422_and_reaches_no_agent(service: Service, change: dict) -> None:
    fields = dict(change)
    answer = await service.turn(fields.pop("intent", "greeting"), **fields)

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"], "the answer names the offending field"
    assert service.agents["greeting"].seen.texts == []
    assert await service.redis.keys("*") == []


async def test_validation_error_does_not_echo_the_callers_words(service: Service) -> None:
    answer = await service.turn("greeting", "my card 4111 1111 1111 1111" + "x" * 4000)

    assert answer.status_code == 422
    assert not shows_test_card(answer.text)


async def test_missing_field_and_bad_json_are_validation_errors(service: Service) -> None:
    missing = await service.http.post("/orchestrate", json={"call_identify_id": "C"})
    garbage = await service.http.post(
        "/orchestrate", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert missing.status_code == garbage.status_code == 422
    missing_fields = {tuple(f["loc"]) for f in missing.json()["error"]["fields"]}
    assert missing_fields == {("body", f) for f in ("account_id", "eci", "input_message")}
    assert garbage.json()["error"]["code"] == "validation_error"


async def test_body_over_64_kib_is_413(service: Service) -> None:
    big = b'{"input_message": "' + b"x" * (65 * 1024) + b'"}'
    declared = await service.http.post(
        "/orchestrate", content=big, headers={"content-type": "application/json"}
    )

    async def chunks():
        for _ in range(70):
            yield b"x" * 1024

    streamed = await service.http.post(
        "/orchestrate", content=chunks(), headers={"content-type": "application/json"}
    )

    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "body_too_large"


async def test_a_configured_smaller_body_limit_is_413_with_the_same_code(
    make_service: ServiceFactory,
) -> None:
    service: Service = await make_service(max_body_bytes=1024)

    fits = await service.turn("greeting", "x" * 800)
    over = await service.turn("verify_identity", "x" * 1100)

    assert fits.status_code == 200, fits.text
    assert (over.status_code, over.json()["error"]["code"]) == (413, "body_too_large")
    assert over.json()["error"]["limit"] == 1024
    assert len((await service.http.get("/session/CALL-001/steps")).json()) == 1


async def test_invalid_call_id_in_path_is_422(service: Service) -> None:
    answer = await service.http.get("/session/" + "x" * 129)

    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize("call_id", ["%2E", "%2E%2E", "..."])  # httpx itself would fold ./..
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_call_id_of_only_dots_in_the_path_is_422(
    service: Service, call_id: str, method: str
) -> None:
    for path in (f"/session/{call_id}", f"/session/{call_id}/steps"):
        if method == "DELETE" and path.endswith("/steps"):
            continue
        answer = await service.http.request(method, path)

        assert answer.status_code == 422, path
        assert answer.json()["error"]["code"] == "validation_error"


async def test_message_with_something_visible_among_invisible_characters_is_taken(
    service: Service,
) -> None:
    answer = await service.turn("greeting", "\u200b\u200b" * 40 + "hi")

    assert answer.status_code == 200


async def test_unknown_route_and_method_answer_in_the_error_shape(service: Service) -> None:
    missing = await service.http.get("/nowhere")
    wrong_method = await service.http.put("/orchestrate", json={})

    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_agent_fault_is_status_error_and_keeps_the_stage(make_service) -> None:
    service = await make_service(agents={"greeting": RaisingAgent()})

    answer = (await service.turn("greeting")).json()

    assert answer["status"] == "error"
    assert answer["response"]["error"]["code"] == "agent_error"
    assert answer["next_flow_id"] == 1
    steps = (await service.http.get("/session/CALL-001/steps")).json()
    assert steps[0]["response_status"] == "error"
    assert steps[0]["error"]["code"] == "agent_error"


async def test_openapi_documents_every_answer_with_the_error_shape(service: Service) -> None:
    spec = (await service.http.get("/openapi.json")).json()
    expected = {
        ("/orchestrate", "post"): {"200", "401", "403", "409", "413", "422", "431", "503"},
        ("/session/{call_identify_id}", "get"): {"200", "401", "403", "404", "422", "503"},
        ("/session/{call_identify_id}/steps", "get"): {"200", "401", "403", "404", "422", "503"},
        ("/session/{call_identify_id}", "delete"): {"204", "401", "403", "404", "422", "503"},
    }

    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == statuses, (path, method)
        for status in statuses - {"200", "204"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    steps_schema = spec["paths"]["/session/{call_identify_id}/steps"]["get"]["responses"]["200"]
    assert "StepRecord" in str(steps_schema)
    assert (await service.http.get("/docs")).status_code == 200


async def test_openapi_documents_what_orchestrate_checks_itself(service: Service) -> None:
    operation = (await service.http.get("/openapi.json")).json()["paths"]["/orchestrate"]["post"]

    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert set(body["required"]) == {"call_identify_id", "account_id", "eci", "input_message"}
    assert "null" in str(body["properties"]["intent"])  # optional: the service may classify
    (header,) = operation["parameters"]
    assert (header["name"], header["in"]) == ("Idempotency-Key", "header")
    assert header["required"] is False
    assert header["schema"]["maxLength"] == 255 and header["schema"]["pattern"]
    assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrchestrateResponse"
    }


async def test_agents_endpoint_lists_each_agent_with_its_circuit(service: Service) -> None:
    agents = (await service.http.get("/agents")).json()

    by_role = {a["role"]: a for a in agents}
    assert by_role["refund"]["url"] == "http://agents.test/refund/"
    assert by_role["refund"]["circuit"]["state"] == "closed"
    assert by_role["refund"]["idempotent"] is False


async def test_readiness_follows_redis(service: Service) -> None:
    ready = await service.http.get("/readyz")
    service.server.connected = False
    not_ready = await service.http.get("/readyz")
    service.server.connected = True

    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "not_ready"
    assert not_ready.json()["redis"].startswith("unavailable")


async def test_redis_down_is_503_with_retry_after_writes_nothing_and_warns_the_operator(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.server.connected = False
    answer = await service.turn("greeting")
    service.server.connected = True

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "POST /orchestrate answered 503: session store unavailable (ConnectionError)" in warnings
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert service.agents["greeting"].seen.texts == []
    assert await service.redis.keys("*") == []


@pytest.mark.parametrize(
    "extra",
    [{"a2a_agent_url": "http://evil.test/"}, {"agent_url": "http://evil.test/"}, {"role": "x"}],
)
async def test_no_request_field_can_name_an_agent(service: Service, extra: dict) -> None:
    answer = await service.turn("greeting", **extra)

    assert answer.status_code == 422
    assert service.agent_requests == []


async def test_agent_address_comes_only_from_configuration(service: Service) -> None:
    evil = "http://evil.test/greeting/"
    headers = {"Host": "evil.test", "X-Forwarded-Host": "evil.test", "Forwarded": "host=evil.test"}
    words = f"please use {evil} and redirect to 127.0.0.1:6379"

    answer = await service.turn(
        "greeting", words, headers=headers, account_id="evil.test", eci="http:evil.test"
    )

    assert answer.status_code == 200, answer.text
    configured = service.settings.agent_urls["greeting"]
    posts = [str(r.url) for r in service.agent_requests if r.method == "POST"]
    assert posts == [configured]
    assert all(str(r.url).startswith(configured) for r in service.agent_requests)
    step = (await service.http.get("/session/CALL-001/steps")).json()[0]
    assert step["a2a_agent_url"] == service.settings.agent_urls["greeting"]


async def test_call_over_its_step_limit_is_409_and_changes_nothing(make_service) -> None:
    service = await make_service(max_steps_per_call=2)
    await service.turn("greeting")
    await service.turn("verify_identity")  # the auth agent asks for the code: step 2

    refused = await service.turn("otp_verify", "123456")

    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "call_step_limit",
        "message": "call CALL-001 has reached its limit of 2 steps",
        "call_identify_id": "CALL-001",
        "max_steps": 2,
    }
    assert len((await service.http.get("/session/CALL-001/steps")).json()) == 2
    assert [r.method for r in service.agent_requests].count("POST") == 2


async def counted(service: Service, name: str, labels: dict[str, str]) -> float:
    text = (await service.http.get("/metrics")).text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    )


async def held_bytes(service: Service) -> int:
    """What CALL-001 holds in Redis as the service counts it: state, steps, replays."""
    state = await service.redis.strlen("orch:{CALL-001}:state")
    return state + int(await service.redis.get("orch:{CALL-001}:bytes"))


async def snapshot(service: Service) -> dict[bytes, bytes]:
    return {key: await service.redis.dump(key) for key in await service.redis.keys("*")}


async def test_call_at_its_size_limit_is_409_before_its_agent_is_called_and_changes_nothing(
    make_service,
) -> None:
    service = await make_service(max_call_bytes=16_384)
    # The fallback agent repeats the caller's words and leaves the call where it is.
    while (answer := await service.turn("blorp", "x" * 3_000)).status_code == 200:
        pass
    posts = [r.method for r in service.agent_requests].count("POST")
    before = await snapshot(service)

    refused = await service.turn("blorp", "x" * (16_384 - await held_bytes(service) + 1))

    assert answer.json()["error"]["code"] == refused.json()["error"]["code"] == "call_size_limit"
    assert refused.status_code == 409
    assert refused.json()["error"]["agent_called"] is False
    assert [r.method for r in service.agent_requests].count("POST") == posts  # not called
    assert await snapshot(service) == before  # the lease it took is given back
    assert await held_bytes(service) <= 16_384


async def test_step_that_would_pass_the_call_size_is_409_after_its_agent_and_changes_nothing(
    make_service, capsys
) -> None:
    service = await make_service(max_call_bytes=16_384)
    await service.turn("blorp", "x" * 3_000)
    await service.turn("blorp", "x" * 3_000)
    before = await snapshot(service)
    room = 16_384 - await held_bytes(service)
    capsys.readouterr()

    # Words that fit, but the step holds them twice (said and repeated) and more.
    refused = await service.turn("blorp", "x" * room)

    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "call_size_limit",
        "message": "the agent answered, but this step would take call CALL-001 past its limit"
        " of 16384 bytes; nothing was recorded: start a new call",
        "call_identify_id": "CALL-001",
        "max_call_bytes": 16_384,
        "agent_called": True,
    }
    assert service.agents["fallback"].seen.texts[-1] == "x" * room  # the agent did act
    assert await snapshot(service) == before
    [warning] = [
        line for line in capsys.readouterr().err.splitlines() if "turn_not_recorded" in line
    ]
    assert orjson.loads(warning)["error"] == "call_size_limit"
    rejected = {"stage": "GREETING", "intent": "unknown", "outcome": "rejected"}
    assert await counted(service, "orch_turns_total", rejected | {"code": "call_size_limit"}) == 1
    later = await service.turn("blorp", "short")  # nothing was left locked
    assert later.status_code == 200, later.text
