"""An agent's answer as the turn sees it, whatever the protocol version that carried it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Task states (normalised, see a2a_client.normalise_state) in which the agent waits for the caller.
NEEDS_INPUT = frozenset({"input_required", "auth_required"})


@dataclass(frozen=True)
class AgentReply:
    text: str
    kind: Literal["message", "task"]
    data: list[Any] = field(default_factory=list)
    task_id: str | None = None
    context_id: str | None = None
    task_state: str | None = None  # normalised: "completed", "input_required", ...
    attempts: int = 1

    @property
    def needs_input(self) -> bool:
        return self.task_state in NEEDS_INPUT

    def as_response(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "data": self.data,
            "kind": self.kind,
            "task_id": self.task_id,
            "context_id": self.context_id,
            "task_state": self.task_state,
        }
