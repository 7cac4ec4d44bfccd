"""Pydantic models at the boundaries: the API's requests and answers, the call state in Redis."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
INTENT_PATTERN = r"^[a-z0-9_]{1,64}$"
MAX_INPUT_CHARS = 4000

CallId = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
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
    input_message: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, pattern=r"\S")
    intent: str = Field(min_length=1, max_length=64, pattern=INTENT_PATTERN)


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable machine-readable code, e.g. intent_not_allowed")
    message: str = Field(description="What went wrong, for a human")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class PendingTask(BaseModel):
    """An A2A task the agent left waiting for the caller (input-required / auth-required)."""

    task_id: str
    context_id: str | None = None


class StageOutcome(BaseModel):
    flow_id: int
    flow_label: str
    steps: int = 0
    errors: int = 0
    outcome: Literal["pending", "input_required", "error", "success"] = "pending"
    intent: str | None = None
    agent_role: str | None = None


class SessionSummary(BaseModel):
    call_identify_id: str
    account_id: str
    outcome: Literal["completed"] = "completed"
    started_at: str
    completed_at: str
    duration_sec: float
    total_steps: int
    error_steps: int
    completed_flows: list[int]
    stages: list[StageOutcome]


class CallState(BaseModel):
    """The call as stored in Redis (without its steps, which live in their own list)."""

    call_identify_id: str
    account_id: str
    eci: str
    current_flow_id: int = 1
    completed_flows: list[int] = Field(default_factory=list)
    is_complete: bool = False
    step_count: int = 0
    error_steps: int = 0
    created_at: str
    updated_at: str
    # role -> task the agent is waiting on, at the current stage only.
    pending_tasks: dict[str, PendingTask] = Field(default_factory=dict)
    stages: dict[str, StageOutcome] = Field(default_factory=dict)
    session_summary: SessionSummary | None = None


class StepError(BaseModel):
    code: str
    message: str


class StepRecord(BaseModel):
    """One line of the audit trail: a turn that reached an agent."""

    seq: int = Field(description="1-based position in the call's trail")
    intent_flow_id: int
    flow_label: str
    intent: str
    input_message: str
    agent_role: str
    a2a_agent_url: str
    fallback: bool = False
    response_status: ResponseStatus
    response_data: dict[str, Any]
    error: StepError | None = None
    a2a_message_id: str
    attempts: int = Field(1, description="Agent calls made for this step (0: circuit open)")
    idempotency_key: str | None = None
    api_key_id: str | None = Field(
        None, description="Id of the API key that sent the turn (first 12 hex of its SHA-256)"
    )
    a2a_task_id: str | None = None
    a2a_context_id: str | None = None
    a2a_task_state: str | None = None
    duration_ms: float
    timestamp: str = Field(description="When the agent's answer (or fault) was recorded, UTC")


class OrchestrateResponse(BaseModel):
    call_identify_id: str
    intent_flow_id: int
    flow_label: str
    intent: str
    status: Literal["success", "error"]
    response: dict[str, Any] = Field(
        description="The agent's answer ({text, data, task_id, task_state, ...}) or {error}"
    )
    response_status: ResponseStatus
    agent_role: str
    next_flow_id: int | None
    next_flow_label: str | None
    is_complete: bool
    step_seq: int
    session_summary: SessionSummary | None = None


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
