"""The console's call search, pure: reading a query from the form, filtering, rows and pages."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from orchestrator_flows.core.call_search import (
    OUTCOMES,
    CallQuery,
    CallRow,
    matches,
    page_of,
    page_of_states,
    row_of,
)
from orchestrator_flows.core.errors import InvalidRequest
from orchestrator_flows.core.models import CallState, SessionSummary, StageOutcome
from tests.support.records import call_state


def stage(flow_id: int, intent: str, role: str, outcome: str = "success") -> StageOutcome:
    return {
        "flow_id": flow_id,
        "flow_label": "X",
        "steps": 1,
        "errors": 0,
        "outcome": outcome,  # type: ignore[typeddict-item]
        "intent": intent,
        "agent_role": role,
    }


def summary(outcome: str = "completed", duration_sec: float = 42.5) -> SessionSummary:
    return {
        "call_identify_id": "CALL-1",
        "account_id": "ACC-1",
        "outcome": outcome,  # type: ignore[typeddict-item]
        "started_at": "2025-01-01T12:00:00.000000Z",
        "completed_at": "2025-01-01T12:00:42.500000Z",
        "duration_sec": duration_sec,
        "total_steps": 6,
        "error_steps": 0,
        "completed_flows": [1, 2, 3, 4, 5],
        "stages": [],
    }


# A call at INTENT_CAPTURE: greeted, authenticated, started 2025-03-10 14:30 UTC.
AT_INTENT_CAPTURE = call_state(
    call_identify_id="CALL-7",
    account_id="ACC-9",
    current_flow_id=3,
    completed_flows=[1, 2],
    step_count=3,
    created_at="2025-03-10T14:30:00.000000Z",
    updated_at="2025-03-10T14:31:30.250000Z",
    stages={
        "1": stage(1, "greeting", "greeting"),
        "2": stage(2, "otp_verify", "auth"),
    },
)
COMPLETED = call_state(
    current_flow_id=5,
    completed_flows=[1, 2, 3, 4, 5],
    is_complete=True,
    step_count=6,
    session_summary=summary(),
)
SENT_TO_CLOSING = call_state(current_flow_id=5, escalation="no_match")
ENDED_BY_NO_MATCH = call_state(
    current_flow_id=5, is_complete=True, session_summary=summary("no_match")
)


def query(**params: str) -> CallQuery:
    return CallQuery.from_params(params)


@pytest.mark.parametrize(
    ("params", "answers"),
    [
        ({}, True),
        ({"call_id": "CALL-7"}, True),
        ({"call_id": "CALL-70"}, False),
        ({"account_id": "ACC-9"}, True),
        ({"account_id": "acc-9"}, False),
        ({"stage": "3"}, True),
        ({"stage": "intent_capture"}, True),
        ({"stage": "2"}, False),
        ({"intent": "otp_verify"}, True),
        ({"intent": "refund_request"}, False),
        ({"agent": "auth"}, True),
        ({"agent": "refund"}, False),
        ({"outcome": "in_progress"}, True),
        ({"outcome": "completed"}, False),
        ({"from": "2025-03-10"}, True),
        ({"from": "2025-03-10T14:30"}, True),
        ({"from": "2025-03-10T14:31"}, False),
        ({"to": "2025-03-10"}, True),
        ({"to": "2025-03-10T14:30"}, True),
        ({"to": "2025-03-10T14:29"}, False),
        ({"to": "2025-03-09"}, False),
        ({"from": "2025-03-10", "to": "2025-03-10"}, True),
        ({"account_id": "ACC-9", "stage": "3", "agent": "greeting"}, True),
        ({"account_id": "ACC-9", "stage": "4"}, False),
        ({"call_id": "", "account_id": " ", "outcome": ""}, True),
    ],
)
def test_a_call_answers_a_search_only_when_it_meets_every_part_set(
    params: dict[str, str], answers: bool
) -> None:
    assert matches(query(**params), AT_INTENT_CAPTURE) is answers


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (AT_INTENT_CAPTURE, "in_progress"),
        (SENT_TO_CLOSING, "in_progress"),
        (COMPLETED, "completed"),
        (ENDED_BY_NO_MATCH, "no_match"),
    ],
)
def test_the_outcome_searched_for_is_the_calls_summary_or_in_progress(
    state: CallState, outcome: str
) -> None:
    assert [o for o in OUTCOMES if matches(query(outcome=o), state)] == [outcome]
    assert row_of(state).outcome == outcome


def test_a_call_in_progress_lasts_from_its_start_to_its_last_step() -> None:
    assert row_of(AT_INTENT_CAPTURE) == CallRow(
        call_identify_id="CALL-7",
        account_id="ACC-9",
        started_at=datetime(2025, 3, 10, 14, 30, tzinfo=UTC),
        duration_sec=90.25,
        stages_completed=(1, 2),
        current_stage=3,
        outcome="in_progress",
        step_count=3,
        is_complete=False,
    )


def test_a_completed_call_lasts_as_its_summary_says() -> None:
    row = row_of(COMPLETED)

    assert (row.duration_sec, row.is_complete, row.stages_completed) == (
        42.5,
        True,
        (1, 2, 3, 4, 5),
    )


def test_dates_are_read_as_utc_and_to_runs_to_the_end_of_the_day_or_minute() -> None:
    by_day = query(**{"from": "2025-03-10", "to": "2025-03-11"})
    by_minute = query(**{"from": "2025-03-10T09:15", "to": "2025-03-10T09:15"})

    assert (by_day.since, by_day.until) == (
        datetime(2025, 3, 10, tzinfo=UTC),
        datetime(2025, 3, 12, tzinfo=UTC),
    )
    assert (by_minute.since, by_minute.until) == (
        datetime(2025, 3, 10, 9, 15, tzinfo=UTC),
        datetime(2025, 3, 10, 9, 16, tzinfo=UTC),
    )


def test_empty_and_unknown_parameters_set_nothing() -> None:
    params = dict.fromkeys(["call_id", "account_id", "from", "to", "stage", "intent"], "")
    assert query(**params, agent="  ", page="3") == CallQuery()


@pytest.mark.parametrize(
    ("params", "field", "kind"),
    [
        ({"stage": "six"}, "stage", "stage_unknown"),
        ({"stage": "-1"}, "stage", "stage_unknown"),
        ({"stage": "0"}, "stage", "stage_range"),
        ({"stage": "6"}, "stage", "stage_range"),
        ({"from": "10/03/2025"}, "from", "datetime_parsing"),
        ({"from": "2025-02-30"}, "from", "datetime_parsing"),
        ({"to": "2025-03-10T25:00"}, "to", "datetime_parsing"),
        ({"to": "2025-03-10T10:00+02:00"}, "to", "datetime_parsing"),
        ({"from": "2025-03-11", "to": "2025-03-10"}, "from", "date_order"),
        ({"from": "2025-03-10T10:01", "to": "2025-03-10T10:00"}, "from", "date_order"),
        ({"outcome": "abandoned"}, "outcome", "outcome_unknown"),
        ({"call_id": "CALL 1"}, "call_id", "string_pattern_mismatch"),
        ({"call_id": "C" * 129}, "call_id", "string_pattern_mismatch"),
        ({"account_id": "{ACC}"}, "account_id", "string_pattern_mismatch"),
        ({"intent": "Refund-Request"}, "intent", "string_pattern_mismatch"),
        ({"agent": "9auth"}, "agent", "string_pattern_mismatch"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field_and_not_its_value(
    params: dict[str, str], field: str, kind: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        query(**params)

    error = refused.value.body()["error"]
    assert error["code"] == "validation_error"
    [problem] = error["fields"]
    assert (problem["loc"], problem["type"]) == (["query", field], kind)
    assert field in problem["message"] and field in error["message"]
    for value in params.values():
        assert value not in error["message"]


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidRequest) as refused:
        query(stage="9", outcome="lost", to="tomorrow")

    named = [f["loc"][1] for f in refused.value.details["fields"]]
    assert named == ["to", "stage", "outcome"]


def rows(*started: tuple[str, str]) -> list[CallRow]:
    return [
        row_of(call_state(call_identify_id=call_id, created_at=at, updated_at=at))
        for call_id, at in started
    ]


def test_a_page_lists_newest_first_then_by_call_id() -> None:
    listed = rows(
        ("CALL-A", "2025-01-01T10:00:00.000000Z"),
        ("CALL-C", "2025-01-02T10:00:00.000000Z"),
        ("CALL-B", "2025-01-02T10:00:00.000000Z"),
        ("CALL-D", "2025-01-01T09:00:00.000000Z"),
    )

    page = page_of(listed, offset=0, limit=10)

    assert [r.call_identify_id for r in page] == ["CALL-C", "CALL-B", "CALL-A", "CALL-D"]


def test_pages_cover_every_call_once() -> None:
    listed = rows(*[(f"CALL-{n % 7}-{n}", f"2025-01-0{1 + n % 3}T10:00:00Z") for n in range(23)])

    pages = [page_of(listed, offset, 5) for offset in range(0, 25, 5)]

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert sorted(r.call_identify_id for p in pages for r in p) == sorted(
        r.call_identify_id for r in listed
    )
    assert page_of(listed, 30, 5) == []


def test_a_page_of_states_is_the_page_of_their_rows() -> None:
    states = [
        call_state(call_identify_id=f"CALL-{n}", created_at=f"2025-01-0{1 + n % 4}T10:00:00Z")
        for n in range(17)
    ]
    random.Random(7).shuffle(states)
    rows = [row_of(state) for state in states]

    for offset in (0, 5, 15):
        assert page_of_states(states, offset, 5) == page_of(rows, offset, 5)


@pytest.mark.parametrize(("offset", "limit"), [(-1, 10), (0, 0)])
def test_a_page_needs_a_place_and_a_size(offset: int, limit: int) -> None:
    with pytest.raises(ValueError):
        page_of([], offset, limit)
    with pytest.raises(ValueError):
        page_of_states([], offset, limit)
