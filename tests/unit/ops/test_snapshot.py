"""The operations page's figures, from a real Metrics registry: counts, quantiles and rates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator_flows.ops.metrics import Metrics
from orchestrator_flows.ops.snapshot import (
    OUTCOMES,
    STAGES,
    OpsSnapshot,
    RedisHealth,
    rates,
    snapshot_of,
)

HEALTHY = RedisHealth(round_trip_ms=0.4)


def metrics() -> Metrics:
    return Metrics({"greeting", "refund_request"}, lambda: {})


def snapshot(m: Metrics, **live) -> OpsSnapshot:
    return snapshot_of(
        m.samples(),
        circuits=live.get("circuits", {}),
        in_flight=live.get("in_flight", 0),
        redis=live.get("redis", HEALTHY),
    )


def counted(turns: dict[tuple[str, str], int]) -> OpsSnapshot:
    """A snapshot holding these turn counts, (stage, outcome) -> turns since start."""
    m = metrics()
    for (stage, outcome), count in turns.items():
        m.turns_by(stage, "greeting", outcome, "").inc(count)
    return snapshot(m)


def test_an_idle_service_shows_every_stage_and_outcome_at_zero() -> None:
    got = snapshot(metrics())

    assert list(got.turns) == list(STAGES)
    assert all(got.turns[stage] == dict.fromkeys(OUTCOMES, 0) for stage in STAGES)
    assert got.agents == {}
    assert (got.calls_started, got.calls_completed, got.in_flight) == (0, 0, 0)


def test_turns_are_counted_by_stage_and_outcome_over_intents_and_codes() -> None:
    m = metrics()
    m.turns_by("GREETING", "greeting", "success", "").inc(3)
    m.turns_by("INTENT_CAPTURE", "refund_request", "error", "agent_timeout").inc()
    m.turns_by("INTENT_CAPTURE", "refund_request", "error", "agent_task_failed").inc(2)
    m.turns_by("INTENT_CAPTURE", "greeting", "rejected", "intent_not_allowed").inc()

    got = snapshot(m).turns

    assert got["GREETING"]["success"] == 3
    assert got["INTENT_CAPTURE"] == {"success": 0, "input_required": 0, "error": 3, "rejected": 1}


def test_calls_started_and_completed_are_totals_since_start() -> None:
    m = metrics()
    m.calls_started.inc(4)
    m.calls_completed.inc()

    got = snapshot(m)

    assert (got.calls_started, got.calls_completed) == (4, 1)


def test_the_live_figures_are_passed_through() -> None:
    down = RedisHealth(round_trip_ms=None, unavailable="ConnectionError")

    got = snapshot(metrics(), circuits={"refund": "open"}, in_flight=7, redis=down)

    assert (got.circuits, got.in_flight, got.redis) == ({"refund": "open"}, 7, down)


# Agent call times in seconds -> the p50 and p95 shown: the upper bound of the bucket
# (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30) holding the quantile.
LATENCIES = [
    pytest.param([0.003], 5.0, 5.0, id="one fast call"),
    pytest.param([0.02] * 10, 25.0, 25.0, id="all in one bucket"),
    pytest.param([0.02] * 19 + [0.7], 25.0, 25.0, id="one slow call in twenty is under p95"),
    pytest.param([0.02] * 9 + [0.7] * 11, 1000.0, 1000.0, id="most calls slow"),
    pytest.param([0.02] * 10 + [0.07] * 9 + [2.0], 25.0, 100.0, id="p95 in a higher bucket"),
    pytest.param([0.02] * 10 + [45.0] * 10, 25.0, None, id="p95 past the last bound"),
]


@pytest.mark.parametrize(("seconds", "p50", "p95"), LATENCIES)
def test_agent_latency_quantiles_are_bucket_upper_bounds(
    seconds: list[float], p50: float, p95: float | None
) -> None:
    m = metrics()
    for sec in seconds:
        m.agent_seconds_by("refund").observe(sec)

    got = snapshot(m).agents["refund"]

    assert (got.calls, got.p50_ms, got.p95_ms) == (len(seconds), p50, p95)


def test_an_agent_that_only_faulted_before_any_timed_call_has_no_quantiles() -> None:
    m = metrics()
    m.agent_faults_by("billing", "agent_timeout").inc(2)

    got = snapshot(m).agents["billing"]

    assert (got.calls, got.faults, got.p50_ms, got.p95_ms) == (0, 2, None, None)


def test_agent_faults_add_up_over_codes() -> None:
    m = metrics()
    m.agent_seconds_by("refund").observe(0.02)
    m.agent_faults_by("refund", "agent_timeout").inc()
    m.agent_faults_by("refund", "agent_task_failed").inc(2)

    assert snapshot(m).agents["refund"].faults == 3


# (turns before, turns after, seconds between) -> (turns/s by stage, by outcome, total,
# error rate, rejection rate).
RATES = [
    pytest.param(
        {},
        {},
        2.0,
        ({}, {}, 0.0, None, None),
        id="no turns: no rates of failure",
    ),
    pytest.param(
        {("GREETING", "success"): 5},
        {("GREETING", "success"): 9},
        2.0,
        ({"GREETING": 2.0}, {"success": 2.0}, 2.0, 0.0, 0.0),
        id="only the interval's turns count",
    ),
    pytest.param(
        {},
        {
            ("GREETING", "success"): 4,
            ("AUTHENTICATION", "input_required"): 2,
            ("FULFILLMENT", "error"): 1,
            ("FULFILLMENT", "rejected"): 3,
        },
        2.0,
        (
            {"GREETING": 2.0, "AUTHENTICATION": 1.0, "FULFILLMENT": 2.0},
            {"success": 2.0, "input_required": 1.0, "error": 0.5, "rejected": 1.5},
            5.0,
            0.1,
            0.3,
        ),
        id="by stage and by outcome",
    ),
    pytest.param(
        {("CLOSING", "success"): 8, ("GREETING", "success"): 1},
        {("CLOSING", "success"): 2, ("GREETING", "success"): 2},
        1.0,
        ({"GREETING": 1.0}, {"success": 1.0}, 1.0, 0.0, 0.0),
        id="a counter that went down counts as no turns",
    ),
    pytest.param(
        {("INTENT_CAPTURE", "error"): 1},
        {("INTENT_CAPTURE", "error"): 3},
        0.5,
        ({"INTENT_CAPTURE": 4.0}, {"error": 4.0}, 4.0, 1.0, 0.0),
        id="every turn failed",
    ),
]


@pytest.mark.parametrize(("before", "after", "elapsed", "expected"), RATES)
def test_rates_over_an_interval(
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    elapsed: float,
    expected: tuple,
) -> None:
    by_stage, by_outcome, total, error_rate, rejection_rate = expected

    got = rates(counted(before), counted(after), elapsed)

    assert got.by_stage == dict.fromkeys(STAGES, 0.0) | by_stage
    assert got.by_outcome == dict.fromkeys(OUTCOMES, 0.0) | by_outcome
    assert got.total == pytest.approx(total)
    assert got.error_rate == pytest.approx(error_rate)
    assert got.rejection_rate == pytest.approx(rejection_rate)


@pytest.mark.parametrize("elapsed", [0.0, -1.0])
def test_rates_need_time_to_pass(elapsed: float) -> None:
    same = counted({})

    with pytest.raises(ValueError, match="elapsed_sec must be positive"):
        rates(same, same, elapsed)


def test_a_stage_unknown_to_the_previous_snapshot_counts_from_zero() -> None:
    before = counted({})
    after = counted({("GREETING", "success"): 2})
    before_without_greeting = replace(
        before, turns={k: v for k, v in before.turns.items() if k != "GREETING"}
    )

    assert rates(before_without_greeting, after, 1.0).by_stage["GREETING"] == 2.0
