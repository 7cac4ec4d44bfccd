"""The API's requests and answers (pydantic models) and a call's records in Redis (typed dicts)."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from orchestrator_flows.core.intents import Alternative, IntentSource, NoMatchReason

# Not only dots: clients and proxies rewrite "." and ".." in a path (/session/..).
ID_PATTERN = r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
INTENT_PATTERN = r"^[a-z0-9_]{1,64}$"
MAX_INPUT_CHARS = 4000
# What shows nothing: controls, format characters (zero-width space and joiners, bidi marks),
# unassigned and private code points, separators, and marks with nothing to sit on; besides
# letters drawn blank (Hangul fillers, the braille blank).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# The usual ones, and the private-use and unassigned planes (4 to 16), at once.
_USUAL_BLANKS = re.compile(
    "[\\s\u00ad\u034f\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u2800\u3164\ue000-\uf8ff\ufe00-\ufe0f\ufeff\uffa0\U00040000-\U0010ffff]+"
)
_PRINTABLE_ASCII = re.compile("[!-~]")


def _shows(char: str) -> bool:
    return not (
        char.isspace()
        or char in BLANK_LETTERS
        or unicodedata.category(char) in INVISIBLE_CATEGORIES
    )


def _not_blank(text: str) -> str:
    # A message shows something in its first characters. Else the usual invisible characters
    # go, and a printable ASCII character is sought, at the regex engine's speed; only what
    # is left then is looked at one by one.
    if any(map(_shows, text[:32])):
        return text
    rest = _USUAL_BLANKS.sub("", text)
    if _PRINTABLE_ASCII.search(rest) is None and not any(map(_shows, rest)):
        raise PydanticCustomError(
            "string_blank", "the message is blank: only spaces or invisible characters"
        )
    return text


CallId = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
CallerWords = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_INPUT_CHARS,
        description="What the caller said; blank (only spaces or invisible characters) is 422",
    ),
    AfterValidator(_not_blank),
]
ResponseStatus = Literal["success", "input_required", "error"]


class OrchestrateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "call_identify_id": "CALL-001",
                    "account_id": "ACC-42",
                    "eci": "ECI-7781",
                    "input_message": "Hi, I'd like some help with my order",
                    "intent": "greeting",
                }
            ]
        },
    )

    call_identify_id: CallId
    account_id: CallId
    eci: CallId
    input_message: CallerWords
    intent: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=INTENT_PATTERN,
        description="The caller's intent; absent or null: the service classifies input_message"
        " among the intents of the call's stage",
    )


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable machine-readable code, e.g. intent_not_allowed")
    message: str = Field(description="What went wrong, for a human")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# A call's records: plain JSON-shaped dicts, typed. The turn builds them, writes them to Redis
# and reads them back with orjson (records.py: each stored with its format's version, checked
# and upgraded as read, with its field names). Their values are not validated again on the hot
# path: they hold only what this service wrote, from a validated request and its own values
# (what pydantic would cost there: bench/RESULTS.md, step 3). pydantic still knows them: OpenAPI
# documents them, the read endpoints validate what they answer with them, and the tests check
# every stored record against them.
Strict = ConfigDict(extra="forbid")


@with_config(Strict)
class PendingTask(TypedDict):
    """An A2A task the agent left waiting for the caller (input-required / auth-required)."""

    task_id: str
    context_id: str | None


@with_config(Strict)
class StageOutcome(TypedDict):
    flow_id: int
    flow_label: str
    steps: int
    errors: int
    outcome: Literal["pending", "input_required", "error", "success", "no_match"]
    intent: str | None
    agent_role: str | None


@with_config(Strict)
class SessionSummary(TypedDict):
    call_identify_id: str
    account_id: str
    outcome: Annotated[
        Literal["completed", "no_match"],
        Field(description="no_match: the call was sent to CLOSING after repeated no-matches"),
    ]
    started_at: str
    completed_at: str
    duration_sec: float
    total_steps: int
    error_steps: int
    completed_flows: list[int]
    stages: list[StageOutcome]


@with_config(Strict)
class CallState(TypedDict):
    """The call as stored in Redis (without its steps, which live in their own list)."""

    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int
    completed_flows: list[int]
    is_complete: bool
    step_count: int
    error_steps: int
    created_at: str
    updated_at: str
    # role -> task the agent is waiting on, at the current stage only.
    pending_tasks: dict[str, PendingTask]
    stages: dict[str, StageOutcome]  # str(flow id) -> how the stage went so far
    session_summary: SessionSummary | None
    no_match_streak: int  # the classifier's no-matches in a row at the current stage
    escalation: Literal["no_match"] | None  # why the call was sent to CLOSING early, if it was


@with_config(Strict)
class StepError(TypedDict):
    code: str
    message: str


@with_config(Strict)
class IntentChosen(TypedDict):
    """How a turn's intent was chosen: in its step and in its answer."""

    intent_source: Annotated[
        IntentSource, Field(description="Who chose the intent: the client or the classifier")
    ]
    intent_confidence: Annotated[
        float | None, Field(description="The classifier's confidence in its top intent (0-1)")
    ]
    intent_alternatives: Annotated[
        list[Alternative], Field(description="The classifier's next best intents, best first")
    ]
    no_match_reason: Annotated[
        NoMatchReason | None,
        Field(description="Why no intent was taken (intent no_match), else null"),
    ]


@with_config(Strict)
class StepRecord(IntentChosen):
    """One line of the audit trail: a turn that reached an agent."""

    seq: Annotated[int, Field(description="1-based position in the call's trail")]
    intent_flow_id: int
    flow_label: str
    intent: str
    intent_classifier: Annotated[
        Literal["model", "agent"] | None,
        Field(description="What classified: the built-in model or the classifier agent"),
    ]
    input_message: str
    agent_role: str
    a2a_agent_url: str
    fallback: bool
    response_status: ResponseStatus
    response_data: dict[str, Any]
    error: StepError | None
    a2a_message_id: str
    attempts: Annotated[int, Field(description="Agent calls made for this step (0: circuit open)")]
    idempotency_key: str | None
    api_key_id: Annotated[
        str | None,
        Field(description="Id of the API key that sent the turn (first 12 hex of its SHA-256)"),
    ]
    a2a_task_id: str | None
    a2a_context_id: str | None
    a2a_task_state: str | None
    duration_ms: float
    timestamp: Annotated[
        str, Field(description="When the agent's answer (or fault) was recorded, UTC")
    ]


@with_config(Strict)
class StoredAnswer(TypedDict):
    """The answer given to a request with an Idempotency-Key, kept to answer its retries."""

    fingerprint: str  # of the request (fingerprints.py): a retry must be the same request
    status_code: int
    body: str  # the answer's JSON, as it was given


@with_config(Strict)
class OrchestrateResponse(IntentChosen):
    call_identify_id: str
    intent_flow_id: int
    flow_label: str
    intent: str
    status: Literal["success", "error"]
    response: Annotated[
        dict[str, Any],
        Field(description="The agent's answer ({text, data, task_id, task_state, ...}) or {error}"),
    ]
    response_status: ResponseStatus
    agent_role: str
    next_flow_id: int | None
    next_flow_label: str | None
    is_complete: bool
    step_seq: int
    session_summary: SessionSummary | None


class SessionView(BaseModel):
    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int = Field(description="The stage the call is at (5 once complete)")
    current_flow_label: str
    completed_flows: list[int]
    is_complete: bool
    step_count: int
    steps: list[StepRecord]
    created_at: str
    updated_at: str
    expires_at: str
    session_summary: SessionSummary | None = None
    escalation: Literal["no_match"] | None = Field(
        default=None,
        description="no_match: the call was sent to CLOSING after repeated no-matches",
    )
    no_match_streak: int = Field(
        default=0, description="The classifier's no-matches in a row at the current stage"
    )


class AgentHealth(BaseModel):
    role: str
    url: str
    idempotent: bool
    circuit: dict[str, Any] = Field(
        description="state (closed, open, half_open), consecutive_faults, last_fault"
    )


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: str
    flows: str
    agents: dict[str, str] = Field(description="role -> circuit state")


class AgentStats(BaseModel):
    calls: int
    success_rate: float | None
    mean_ms: float | None
    p95_ms: float | None = Field(description="upper bound of the latency bucket holding the p95")


class StageStats(BaseModel):
    turns: int
    errors: int
    rejected: int


class Stats(BaseModel):
    agents: dict[str, AgentStats]
    stages: dict[str, StageStats]
    calls_started: int
    calls_completed: int
