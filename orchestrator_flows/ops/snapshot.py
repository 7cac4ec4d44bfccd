"""The operations page's figures: what the metrics hold at one moment, and the rates between
two such moments.

Pure: the samples (`Metrics.samples()`), the circuits, the turns in flight and Redis's health
are read by the caller and passed in. Counters count since the process started (since the
first worker started, with PROMETHEUS_MULTIPROC_DIR); rates are their differences over an
interval, so a page that opens late still sees the present.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator_flows.core.flows import Stage
from orchestrator_flows.ops.metrics import Sample, quantile_ms

STAGES = tuple(stage.label for stage in Stage)
# A turn's outcome label on orch_turns_total: the step's response status, or a refusal.
OUTCOMES = ("success", "input_required", "error", "rejected")


@dataclass(frozen=True)
class AgentLatency:
    """An agent's calls since start (retries included in each call's time)."""

    calls: int
    faults: int
    p50_ms: float | None  # upper bound of the bucket holding the median; None past the last
    p95_ms: float | None


@dataclass(frozen=True)
class RedisHealth:
    """One PING: its round trip, or why Redis did not answer (StoreUnavailable's reason)."""

    round_trip_ms: float | None
    unavailable: str | None = None


@dataclass(frozen=True)
class OpsSnapshot:
    turns: Mapping[str, Mapping[str, int]]  # stage label -> outcome -> turns since start
    agents: Mapping[str, AgentLatency]
    circuits: Mapping[str, str]  # agent role -> closed | half_open | open (this worker's)
    in_flight: int  # turns this worker holds now
    calls_started: int
    calls_completed: int
    redis: RedisHealth
    # Live calls in Redis not yet complete, and all live calls, as last counted (None: not yet,
    # or Redis did not answer); `calls_counted_all` False when the scan limit cut the count.
    calls_in_progress: int | None = None
    live_calls: int | None = None
    calls_counted_all: bool = True


@dataclass(frozen=True)
class OpsRates:
    """Turns per second over an interval, and the shares of its turns that failed."""

    by_stage: Mapping[str, float]
    by_outcome: Mapping[str, float]
    total: float
    error_rate: float | None  # errors / turns of the interval; None when it had no turns
    rejection_rate: float | None  # refused turns / turns of the interval


def snapshot_of(
    samples: Iterable[Sample],
    *,
    circuits: Mapping[str, str],
    in_flight: int,
    redis: RedisHealth,
) -> OpsSnapshot:
    turns = {stage: dict.fromkeys(OUTCOMES, 0) for stage in STAGES}
    agents: dict[str, _AgentSums] = {}
    started = completed = 0.0
    for name, labels, value in samples:
        if name == "orch_turns_total":
            by_outcome = turns.setdefault(labels["stage"], dict.fromkeys(OUTCOMES, 0))
            outcome = labels["outcome"]
            by_outcome[outcome] = by_outcome.get(outcome, 0) + int(value)
        elif name.startswith("orch_agent_call_seconds") or name == "orch_agent_faults_total":
            agents.setdefault(labels["agent"], _AgentSums()).add(name, labels, value)
        elif name == "orch_calls_started_total":
            started += value
        elif name == "orch_calls_completed_total":
            completed += value
    return OpsSnapshot(
        turns=turns,
        agents={role: sums.latency() for role, sums in sorted(agents.items())},
        circuits=dict(circuits),
        in_flight=in_flight,
        calls_started=int(started),
        calls_completed=int(completed),
        redis=redis,
    )


def rates(previous: OpsSnapshot, current: OpsSnapshot, elapsed_sec: float) -> OpsRates:
    """The turns counted between two snapshots taken `elapsed_sec` apart (> 0). A counter
    that went down (its process restarted) counts as no turns, never as negative ones."""
    if elapsed_sec <= 0:
        raise ValueError(f"elapsed_sec must be positive, not {elapsed_sec}")
    counted = {
        (stage, outcome): max(0, count - previous.turns.get(stage, {}).get(outcome, 0))
        for stage, by_outcome in current.turns.items()
        for outcome, count in by_outcome.items()
    }
    by_stage = dict.fromkeys(current.turns, 0)
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    for (stage, outcome), count in counted.items():
        by_stage[stage] += count
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    total = sum(by_stage.values())
    return OpsRates(
        by_stage={stage: count / elapsed_sec for stage, count in by_stage.items()},
        by_outcome={outcome: count / elapsed_sec for outcome, count in by_outcome.items()},
        total=total / elapsed_sec,
        error_rate=by_outcome["error"] / total if total else None,
        rejection_rate=by_outcome["rejected"] / total if total else None,
    )


class _AgentSums:
    """One agent's histogram buckets and fault counts, added up over workers."""

    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}
        self.calls = 0.0
        self.faults = 0.0

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if name == "orch_agent_call_seconds_bucket":
            le = float(labels["le"])
            self.buckets[le] = self.buckets.get(le, 0) + value
        elif name == "orch_agent_call_seconds_count":
            self.calls += value
        elif name == "orch_agent_faults_total":
            self.faults += value

    def latency(self) -> AgentLatency:
        calls = int(self.calls)
        return AgentLatency(
            calls=calls,
            faults=int(self.faults),
            p50_ms=quantile_ms(self.buckets, calls, 0.5) if calls else None,
            p95_ms=quantile_ms(self.buckets, calls, 0.95) if calls else None,
        )
