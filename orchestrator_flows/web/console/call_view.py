"""What the call page shows, from the stored call: the five stages as a track, and the steps
grouped into exchanges (an agent asking the caller for more input, then the answers, until it
is done). Pure: no I/O, no markup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from orchestrator_flows.core.flows import Stage
from orchestrator_flows.core.models import CallState, StepRecord

StagePosition = Literal["done", "current", "ahead", "passed"]


@dataclass(frozen=True)
class TrackStage:
    flow_id: int
    label: str
    position: StagePosition  # passed: the call moved beyond it without completing it

    @property
    def title(self) -> str:
        return self.label.replace("_", " ").title()


@dataclass(frozen=True)
class Exchange:
    """Steps with one agent at one stage: one step, or an agent's questions and the caller's
    answers until the agent stopped waiting for input."""

    steps: tuple[StepRecord, ...]

    @property
    def asked_for_input(self) -> bool:
        return len(self.steps) > 1 or self.steps[0]["response_status"] == "input_required"


def track(state: CallState) -> list[TrackStage]:
    done, current = set(state["completed_flows"]), state["current_flow_id"]
    stages = []
    for stage in Stage:
        if stage.value in done:
            position: StagePosition = "done"
        elif stage.value == current and not state["is_complete"]:
            position = "current"
        elif stage.value < current:
            position = "passed"
        else:
            position = "ahead"
        stages.append(TrackStage(stage.value, stage.label, position))
    return stages


def exchanges(steps: list[StepRecord]) -> list[Exchange]:
    """Steps in order, a step joining the exchange before it while that exchange's agent, at
    the same stage, was waiting for the caller's input."""
    groups: list[list[StepRecord]] = []
    for step in steps:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and last["response_status"] == "input_required"
            and _same_agent(last, step)
        ):
            groups[-1].append(step)
        else:
            groups.append([step])
    return [Exchange(tuple(group)) for group in groups]


def _same_agent(before: StepRecord, step: StepRecord) -> bool:
    return (
        before["intent_flow_id"] == step["intent_flow_id"]
        and before["agent_role"] == step["agent_role"]
    )


def answer_text(step: StepRecord) -> str:
    """The agent's words as stored (masked), or "" when it said nothing."""
    text = step["response_data"].get("text")
    return text if isinstance(text, str) else ""


def answer_details(step: StepRecord) -> dict[str, Any]:
    """The rest of the stored answer (data parts, task ids and state), for the curious."""
    return {key: value for key, value in step["response_data"].items() if key != "text"}
