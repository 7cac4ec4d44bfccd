"""A call's records (models.py's typed dicts) whole, for tests that need one of their own."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.core.models import CallState, StepRecord

STAMP = "2025-01-01T12:00:00.000000Z"


def call_state(**fields: Any) -> CallState:
    state: CallState = {
        "call_identify_id": "CALL-1",
        "account_id": "ACC-1",
        "eci": "ECI-1",
        "current_flow_id": 1,
        "completed_flows": [],
        "is_complete": False,
        "step_count": 0,
        "error_steps": 0,
        "created_at": STAMP,
        "updated_at": STAMP,
        "pending_tasks": {},
        "stages": {},
        "session_summary": None,
        "no_match_streak": 0,
        "escalation": None,
    }
    return state | fields  # type: ignore[return-value]


def call_state_v1(**fields: Any) -> dict[str, Any]:
    """A state as format version 1 held it (before intent classification)."""
    state = dict(call_state())
    del state["no_match_streak"], state["escalation"]
    return state | fields


def step_record(seq: int, **fields: Any) -> StepRecord:
    step: StepRecord = {
        "seq": seq,
        "intent_flow_id": 1,
        "flow_label": "GREETING",
        "intent": "greeting",
        "intent_source": "client",
        "intent_confidence": None,
        "intent_alternatives": [],
        "no_match_reason": None,
        "intent_classifier": None,
        "input_message": f"turn {seq}",
        "agent_role": "greeting",
        "a2a_agent_url": "http://agents.test/greeting/",
        "fallback": False,
        "response_status": "success",
        "response_data": {"text": f"answer {seq}"},
        "error": None,
        "a2a_message_id": f"msg-{seq}",
        "attempts": 1,
        "idempotency_key": None,
        "api_key_id": None,
        "a2a_task_id": None,
        "a2a_context_id": None,
        "a2a_task_state": None,
        "duration_ms": 12.5,
        "timestamp": STAMP,
    }
    return step | fields  # type: ignore[return-value]


def step_record_v1(seq: int, **fields: Any) -> dict[str, Any]:
    """A step as format version 1 held it: only the client chose intents."""
    step = dict(step_record(seq))
    for name in CLASSIFIER_FIELDS:
        del step[name]
    return step | fields


CLASSIFIER_FIELDS = (
    "intent_source",
    "intent_confidence",
    "intent_alternatives",
    "no_match_reason",
    "intent_classifier",
)
