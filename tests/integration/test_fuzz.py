"""Fuzzing the API from its own OpenAPI document, against the served service, a real
`redis-server` and the real a2a-sdk agents.

What it proves: for requests schemathesis builds from `/openapi.json` (valid ones and broken
ones: bad ids, bad headers, bad bodies), the service never answers 5xx, every answer's status
code and content type are documented for its operation, every body matches the schema
documented for its status, and every 4xx body is our error shape
`{"error": {"code": str, "message": str, ...}}`. With no key, the protected operations answer
only 401 and the open ones still answer as documented. A call that exists takes fuzzed turns
too, so the stage rules (409s, 422s, agent answers) are fuzzed, not only validation.

How it is bounded: per operation, the document's example, schemathesis's fixed coverage cases
(boundary values, missing fields, other HTTP methods) and at most `MAX_EXAMPLES` generated
cases, derandomized (the same cases on every run, so CI is reproducible), with no deadline (the
machine is noisy: a slow answer is not a finding) and without shrinking, which can run for
minutes. About 670 requests in all, some 15 seconds on 2 cores.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator_flows.core.flows import load_flows
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE, Settings
from orchestrator_flows.web.app import create_app
from tests.integration.conftest import ACCOUNT_ID, CALL_ID, Agents, Caller, RedisView
from tests.support.service import API_KEYS, agent_urls, bearer

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 40
KEY_HEADERS = {"authorization", "x-api-key"}
INTENTS = sorted(load_flows(DEFAULT_FLOWS_FILE).stage_of_intent)

bounded = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    # Every example of an operation shares the served service and a Redis flushed once per test,
    # on purpose, as the requests of one client would; and on a loaded machine generating a
    # case can be slow without anything being wrong.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def errors_have_the_documented_shape(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    if 400 <= response.status_code < 500:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict), f"{response.status_code} without an error object: {body}"
        assert isinstance(error.get("code"), str), f"error without a string code: {body}"
        assert isinstance(error.get("message"), str), f"error without a string message: {body}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    errors_have_the_documented_shape,
]


# The document is built by the app factory, so that pytest can make one test per operation
# before any server runs; `service_url` checks that the served `/openapi.json` is this very one.
# (`schemathesis.pytest.from_fixture`, which would load it from the served URL, fails on
# pytest 9: it sets `request.node._nodeid`, which pytest 9 no longer has.)
DOCUMENT = create_app(Settings(agent_urls=agent_urls(), api_keys=API_KEYS)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
def service_url(default_service_url: str, store: RedisView, agents: Agents) -> str:
    url = default_service_url.rstrip("/")
    assert httpx.get(f"{url}/openapi.json").json() == DOCUMENT
    return url


@schema.parametrize()
@bounded
def test_fuzzed_requests_never_5xx_and_match_the_documented_schema(
    case: Case, service_url: str
) -> None:
    case.call_and_validate(service_url, headers=bearer("admin"), checks=CHECKS, timeout=30)


def is_protected(case: Case) -> bool:
    """The document names a security scheme for the operation, and the case uses its method
    (the coverage phase also sends other methods, which answer 405 before any key is read)."""
    operation = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()]
    return "security" in operation and case.method.upper() == case.operation.method.upper()


@schema.parametrize()
@settings(bounded, max_examples=MAX_EXAMPLES // 4)
def test_without_a_key_protected_operations_answer_only_401(case: Case, service_url: str) -> None:
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in KEY_HEADERS}

    response = case.call_and_validate(service_url, checks=CHECKS, timeout=30)

    assert not KEY_HEADERS & {name.lower() for name in response.request.headers}
    if is_protected(case):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthenticated"


@pytest.fixture
async def call_in_progress(service: Caller) -> str:
    """A call authenticated and at INTENT_CAPTURE, where most intents are allowed."""
    await service.walk(3)
    return CALL_ID


@schema.include(method="POST", path="/orchestrate").parametrize()
@schema.given(intent=st.sampled_from(INTENTS))
# Only generated cases: schemathesis cannot combine `given` with the document's examples.
@settings(bounded, max_examples=MAX_EXAMPLES * 2, phases=[Phase.generate])
def test_fuzzed_turns_for_a_call_in_progress_answer_as_documented(
    case: Case, intent: str, call_in_progress: str, service_url: str
) -> None:
    # A generated turn becomes one for this call, with an intent the flows know; a broken
    # field the generator put elsewhere in the body stays broken.
    if isinstance(case.body, dict) and "call_identify_id" in case.body:
        case.body |= {
            "call_identify_id": call_in_progress,
            "account_id": ACCOUNT_ID,
            "intent": intent,
        }
    case.call_and_validate(service_url, headers=bearer("admin"), checks=CHECKS, timeout=30)
