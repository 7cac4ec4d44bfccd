"""A stored call as the API and the console show it: its state, its steps, when it expires."""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator_flows.core.flows import Stage
from orchestrator_flows.core.models import CallState, SessionView, StepRecord
from orchestrator_flows.core.transitions import iso


def session_view(state: CallState, steps: list[StepRecord], ttl_sec: int) -> SessionView:
    expires = datetime.fromisoformat(state["updated_at"]) + timedelta(seconds=ttl_sec)
    return SessionView.model_validate(
        {key: value for key, value in state.items() if key in SessionView.model_fields}
        | {
            "current_flow_label": Stage(state["current_flow_id"]).label,
            "steps": steps,
            "expires_at": iso(expires),
        }
    )
