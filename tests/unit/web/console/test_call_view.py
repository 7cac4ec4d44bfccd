"""The call page's model: the stage track and the grouping of steps into exchanges."""

from __future__ import annotations

from typing import Any

from orchestrator_flows.web.console.call_view import exchanges, track


def step(seq: int, stage: int, role: str, status: str = "success") -> Any:
    return {"seq": seq, "intent_flow_id": stage, "agent_role": role, "response_status": status}


def state(current: int, completed: list[int], complete: bool = False) -> Any:
    return {"current_flow_id": current, "completed_flows": completed, "is_complete": complete}


def test_the_track_marks_done_current_and_ahead() -> None:
    positions = [s.position for s in track(state(3, [1, 2]))]
    assert positions == ["done", "done", "current", "ahead", "ahead"]


def test_a_stage_left_behind_without_completing_is_passed() -> None:
    # Sent to CLOSING after repeated no-matches at INTENT_CAPTURE.
    positions = [s.position for s in track(state(5, [1, 2], complete=True))]
    assert positions == ["done", "done", "passed", "passed", "ahead"]


def test_a_finished_call_has_every_stage_done() -> None:
    assert {s.position for s in track(state(5, [1, 2, 3, 4, 5], complete=True))} == {"done"}


def test_answers_to_an_agent_that_asked_for_input_join_its_exchange() -> None:
    steps = [
        step(1, 1, "greeting"),
        step(2, 2, "auth", "input_required"),
        step(3, 2, "auth", "input_required"),
        step(4, 2, "auth"),
        step(5, 3, "refund"),
    ]
    groups = [[s["seq"] for s in group.steps] for group in exchanges(steps)]
    assert groups == [[1], [2, 3, 4], [5]]
    assert [group.asked_for_input for group in exchanges(steps)] == [False, True, False]


def test_another_agent_after_a_question_starts_a_new_exchange() -> None:
    steps = [step(1, 2, "auth", "input_required"), step(2, 2, "fallback")]
    groups = exchanges(steps)
    assert [len(group.steps) for group in groups] == [1, 1]
    assert groups[0].asked_for_input  # the question was left unanswered
