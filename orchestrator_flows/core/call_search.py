"""Searching calls for the console: what a search asks (CallQuery), whether a call's state
answers it, the row the console lists for a call, and a page of rows, newest first. Pure: the
states come from the store (service/call_search.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, get_args

from orchestrator_flows.core.errors import InvalidRequest
from orchestrator_flows.core.flows import INTENT_PATTERN, ROLE_PATTERN, Stage
from orchestrator_flows.core.models import ID_PATTERN, CallState

Outcome = Literal["in_progress", "completed", "no_match"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
MAX_ID_CHARS = 128  # as models.CallId
STAGE_IDS = frozenset(int(stage) for stage in Stage)
_ID = re.compile(ID_PATTERN)
# What the console's form sends: a date, or an HTML datetime-local (seconds when it has them).
_MOMENTS = (("%Y-%m-%d", timedelta(days=1)), ("%Y-%m-%dT%H:%M", timedelta(minutes=1)))
_MOMENTS += (("%Y-%m-%dT%H:%M:%S", timedelta(seconds=1)),)


@dataclass(frozen=True)
class CallQuery:
    """What a search asks; every field is optional, and a call must answer all that are set.
    `since` and `until` bound `created_at`: since <= created_at < until (both aware)."""

    call_id: str | None = None
    account_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    stage: int | None = None  # the stage the call has reached: its current one
    intent: str | None = None  # a stage of the call settled on, or last tried, this intent
    agent: str | None = None  # ... or this agent (role)
    outcome: Outcome | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CallQuery:
        """The query from the console's parameters (call_id, account_id, from, to, stage,
        intent, agent, outcome), each a string, empty when not set; others are ignored. Dates
        are UTC, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM`; `to` runs to the end of the day (or
        minute) it names. InvalidRequest names every field at fault, never its value."""
        return _QueryReader(params).query()


class FieldProblem(NamedTuple):
    name: str
    kind: str  # machine-readable, like pydantic's error types
    message: str  # names the field, never its value (it may be personal)


class _QueryReader:
    def __init__(self, params: Mapping[str, str]) -> None:
        self._params = params
        self._problems: list[FieldProblem] = []

    def query(self) -> CallQuery:
        query = CallQuery(
            call_id=self._matching("call_id", _ID, "a call id", MAX_ID_CHARS),
            account_id=self._matching("account_id", _ID, "an account id", MAX_ID_CHARS),
            since=self._moment("from", end=False),
            until=self._moment("to", end=True),
            stage=self._stage(),
            intent=self._matching("intent", INTENT_PATTERN, "an intent name", 64),
            agent=self._matching("agent", ROLE_PATTERN, "an agent role", 32),
            outcome=self._outcome(),
        )
        if query.since and query.until and query.since >= query.until:
            self._problem("from", "date_order", "from is after to")
        if self._problems:
            raise _invalid(self._problems)
        return query

    def _text(self, name: str) -> str | None:
        return (self._params.get(name) or "").strip() or None

    def _problem(self, name: str, kind: str, message: str) -> None:
        self._problems.append(FieldProblem(name, kind, message))

    def _matching(self, name: str, pattern: re.Pattern[str], what: str, most: int) -> str | None:
        text = self._text(name)
        if text is not None and (len(text) > most or not pattern.match(text)):
            self._problem(name, "string_pattern_mismatch", f"{name} is not {what}")
            return None
        return text

    def _moment(self, name: str, *, end: bool) -> datetime | None:
        """The moment a `from` names, or for `to` the end of the day or minute it names."""
        text = self._text(name)
        if text is None:
            return None
        for layout, span in _MOMENTS:
            try:
                moment = datetime.strptime(text, layout).replace(tzinfo=UTC)
            except ValueError:
                continue
            return moment + span if end else moment
        self._problem(name, "datetime_parsing", f"{name} is not a date (YYYY-MM-DD[THH:MM])")
        return None

    def _stage(self) -> int | None:
        text = self._text("stage")
        if text is None:
            return None
        by_name = Stage.__members__.get(text.upper())
        if by_name is not None:
            return int(by_name)
        if not text.isdecimal():
            self._problem("stage", "stage_unknown", "stage is not a stage number (1-5) or name")
        elif int(text) not in STAGE_IDS:
            self._problem("stage", "stage_range", "stage is outside 1-5")
        else:
            return int(text)
        return None

    def _outcome(self) -> Outcome | None:
        text = self._text("outcome")
        if text is not None and text not in OUTCOMES:
            self._problem("outcome", "outcome_unknown", f"outcome is not one of {OUTCOMES}")
            return None
        return text  # type: ignore[return-value]


def _invalid(problems: list[FieldProblem]) -> InvalidRequest:
    return InvalidRequest(
        "the search is invalid: " + "; ".join(p.message for p in problems),
        fields=[{"loc": ["query", p.name], "type": p.kind, "message": p.message} for p in problems],
    )


@dataclass(frozen=True)
class CallRow:
    """A call as the console lists it."""

    call_identify_id: str
    account_id: str
    started_at: datetime
    duration_sec: float  # to the last step while in progress; the summary's once complete
    stages_completed: tuple[int, ...]
    current_stage: int
    outcome: Outcome
    step_count: int
    is_complete: bool


def outcome_of(state: CallState) -> Outcome:
    summary = state["session_summary"]
    return "in_progress" if summary is None else summary["outcome"]


def started_at(state: CallState) -> datetime:
    return datetime.fromisoformat(state["created_at"])


def matches(query: CallQuery, state: CallState) -> bool:
    """Whether the call answers every part of the query that is set."""
    if query.call_id is not None and state["call_identify_id"] != query.call_id:
        return False
    if query.account_id is not None and state["account_id"] != query.account_id:
        return False
    if query.stage is not None and state["current_flow_id"] != query.stage:
        return False
    if query.outcome is not None and outcome_of(state) != query.outcome:
        return False
    if query.intent is not None and not _any_stage(state, "intent", query.intent):
        return False
    if query.agent is not None and not _any_stage(state, "agent_role", query.agent):
        return False
    if query.since is None and query.until is None:
        return True
    started = started_at(state)
    return (query.since is None or query.since <= started) and (
        query.until is None or started < query.until
    )


def _any_stage(state: CallState, name: Literal["intent", "agent_role"], wanted: Any) -> bool:
    return any(stage[name] == wanted for stage in state["stages"].values())


def row_of(state: CallState) -> CallRow:
    started = started_at(state)
    summary = state["session_summary"]
    if summary is not None:
        duration = summary["duration_sec"]
    else:
        duration = (datetime.fromisoformat(state["updated_at"]) - started).total_seconds()
    return CallRow(
        call_identify_id=state["call_identify_id"],
        account_id=state["account_id"],
        started_at=started,
        duration_sec=duration,
        stages_completed=tuple(state["completed_flows"]),
        current_stage=state["current_flow_id"],
        outcome=outcome_of(state),
        step_count=state["step_count"],
        is_complete=state["is_complete"],
    )


def page_of(rows: Iterable[CallRow], offset: int, limit: int) -> list[CallRow]:
    """Rows offset to offset + limit of all, newest first: by start, then by call id (unique),
    so that the order is total and pages neither repeat nor skip a call."""
    newest = sorted(rows, key=lambda row: (row.started_at, row.call_identify_id), reverse=True)
    return _window(newest, offset, limit)


def page_of_states(states: Iterable[CallState], offset: int, limit: int) -> list[CallRow]:
    """page_of(map(row_of, states), offset, limit), making rows for the page's calls only."""
    newest = sorted(states, key=lambda s: (started_at(s), s["call_identify_id"]), reverse=True)
    return [row_of(state) for state in _window(newest, offset, limit)]


def _window(newest: list[Any], offset: int, limit: int) -> list[Any]:
    if offset < 0 or limit < 1:
        raise ValueError(f"a page needs offset >= 0 and limit >= 1, not {offset}, {limit}")
    return newest[offset : offset + limit]
