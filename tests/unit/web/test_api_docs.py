"""What /openapi.json, /docs and /redoc show: every error code under its status with an example
answer, the agent fault codes, Retry-After; the pages' files served locally, not from a CDN."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator_flows.core.errors import AgentFault, OrchestratorError
from orchestrator_flows.core.models import ErrorResponse
from orchestrator_flows.web.api_docs import agent_faults
from tests.support.service import Service


def subclasses(root: type) -> list[type]:
    found = []
    for kind in root.__subclasses__():
        found += [kind, *subclasses(kind)]
    return found


def listed_codes(description: str) -> list[str]:
    return re.findall(r"^- `([a-z_]+)`:", description, flags=re.MULTILINE)


@pytest.fixture
async def spec(service: Service) -> dict[str, Any]:
    return (await service.http.get("/openapi.json")).json()


def examples_under(spec: dict[str, Any], status: int) -> dict[str, dict[str, Any]]:
    """Every example answer documented for `status`, by code, across operations."""
    found = {}
    for operations in spec["paths"].values():
        for operation in operations.values():
            response = operation["responses"].get(str(status), {})
            for content in response.get("content", {}).values():
                found |= content.get("examples", {})
    return found


@pytest.mark.parametrize("kind", subclasses(OrchestratorError), ids=lambda kind: kind.code)
async def test_every_error_code_is_documented_under_its_status_with_a_valid_example(
    spec: dict[str, Any], kind: type[OrchestratorError]
) -> None:
    examples = examples_under(spec, kind.status_code)

    assert kind.code in examples, f"{kind.code} not documented under {kind.status_code}"
    answer = ErrorResponse.model_validate(examples[kind.code]["value"])
    assert answer.error.code == kind.code and answer.error.message


async def test_each_status_lists_its_codes_and_only_documented_ones(spec: dict[str, Any]) -> None:
    turn = spec["paths"]["/orchestrate"]["post"]["responses"]

    listed = {status: listed_codes(turn[status]["description"]) for status in turn}
    assert set(listed["409"]) == {
        "intent_not_allowed",
        "call_complete",
        "account_mismatch",
        "call_step_limit",
        "call_size_limit",
        "turn_in_progress",
        "idempotency_key_in_progress",
        "turn_conflict",
    }
    assert set(listed["422"]) == {
        "validation_error",
        "unknown_intent",
        "intent_required",
        "no_intent_matched",
        "idempotency_key_reused",
    }
    assert set(listed["503"]) == {
        "store_unavailable",
        "store_record_unreadable",
        "overloaded",
        "too_many_connections",
    }
    assert listed["413"] == ["body_too_large"] and listed["431"] == ["header_too_large"]
    for status in ("401", "403", "409", "413", "422", "431", "503"):
        examples = turn[status]["content"]["application/json"]["examples"]
        assert set(examples) == set(listed[status]), status


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/orchestrate", "post", "409"),
        ("/orchestrate", "post", "503"),
        ("/session/{call_identify_id}", "get", "503"),
        ("/session/{call_identify_id}", "delete", "503"),
        ("/session/{call_identify_id}/steps", "get", "503"),
    ],
)
async def test_retry_after_is_documented_where_it_is_sent(
    spec: dict[str, Any], path: str, method: str, status: str
) -> None:
    headers = spec["paths"][path][method]["responses"][status]["headers"]

    assert headers["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


@pytest.mark.parametrize(
    ("path", "method", "listed"),
    [
        ("/session/{call_identify_id}", "get", True),
        ("/session/{call_identify_id}/steps", "get", True),
        ("/session/{call_identify_id}", "delete", False),  # it reads no record
    ],
)
async def test_an_unreadable_record_is_documented_where_records_are_read(
    spec: dict[str, Any], path: str, method: str, listed: bool
) -> None:
    unavailable = spec["paths"][path][method]["responses"]["503"]["description"]

    assert ("store_record_unreadable" in listed_codes(unavailable)) is listed


async def test_every_agent_fault_code_is_documented_in_the_turns_200(
    spec: dict[str, Any],
) -> None:
    described = spec["paths"]["/orchestrate"]["post"]["responses"]["200"]["description"]
    codes = {kind.code for kind in [AgentFault, *subclasses(AgentFault)]}

    assert set(listed_codes(described)) == codes == set(agent_faults())


def local_urls(page: str) -> list[str]:
    """Every URL the page makes the browser load."""
    return re.findall(r'(?:src|href|spec-url)="([^"]+)"|url: \'([^\']+)\'', page)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_files_and_each_answers_with_its_type(
    service: Service, page: str
) -> None:
    html = (await service.http.get(page)).text
    urls = [a or b for a, b in local_urls(html)]
    expected_type = {".js": "javascript", ".css": "text/css", ".png": "image/png"}

    assert "http://" not in html and "https://" not in html and "//" not in "".join(urls)
    assert "/openapi.json" in urls and len(urls) >= 3
    for url in urls:
        answer = await service.http.get(url)
        assert answer.status_code == 200, url
        kind = expected_type.get(url[url.rfind(".") :], "application/json")
        assert kind in answer.headers["content-type"], url
