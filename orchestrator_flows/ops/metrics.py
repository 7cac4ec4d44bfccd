"""Prometheus metrics of the service, and the operator's summary (`/stats`) read back from them.

Label values come only from configuration (stages, configured intents, agent roles, our error
codes), never from request text, so the number of series stays bounded. With several uvicorn
workers, set PROMETHEUS_MULTIPROC_DIR (`orchestrator-flows serve` does) and every worker's
figures are added up at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from orchestrator_flows.core.intents import NO_MATCH

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
CALL_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600)
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
POOL_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
CLASSIFY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 2.5, 5)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Children:
    """A labelled metric's children, each looked up through prometheus-client once: its
    `labels()` builds a tuple and takes a lock on every call, several times a turn. Label
    values come from configuration, so there are few."""

    def __init__(self, metric: MetricWrapperBase):
        self._metric = metric
        self._known: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(
        self,
        known_intents: set[str],
        circuits: Callable[[], dict[str, dict]],
        in_flight: Callable[[], int] = lambda: 0,
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        self._known_intents = known_intents
        self._circuits = circuits
        self._in_flight = in_flight
        r = self.registry
        self.turns = Counter(
            "orch_turns", "Turns by stage, intent and outcome",
            ["stage", "intent", "outcome", "code"], registry=r,
        )  # fmt: skip
        self.agent_seconds = Histogram(
            "orch_agent_call_seconds", "Agent call latency, retries included", ["agent"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.agent_faults = Counter(
            "orch_agent_faults", "Agent faults by agent and code", ["agent", "code"], registry=r
        )
        self.calls_started = Counter("orch_calls_started", "Calls started", registry=r)
        self.calls_completed = Counter("orch_calls_completed", "Calls completed", registry=r)
        self.call_seconds = Histogram(
            "orch_call_duration_seconds", "First turn to CLOSING", buckets=CALL_BUCKETS, registry=r
        )
        self.redis_seconds = Histogram(
            "orch_redis_command_seconds", "Redis round trips by operation", ["operation"],
            buckets=REDIS_BUCKETS, registry=r,
        )  # fmt: skip
        self.redis_faults = Counter(
            "orch_redis_faults", "Failed Redis round trips by operation and reason"
            " (OutOfMemoryError: Redis is at its maxmemory)", ["operation", "reason"],
            registry=r,
        )  # fmt: skip
        self.unreplicated_commits = Counter(
            "orch_redis_unreplicated_commits",
            "Steps recorded on the primary that fewer than REDIS_WAIT_REPLICAS replicas"
            " confirmed in time",
            registry=r,
        )
        self.turns_shed = Counter(
            "orch_turns_shed", "Turns answered 503 overloaded: the worker held"
            " MAX_TURNS_IN_FLIGHT turns", registry=r,
        )  # fmt: skip
        self.pool_wait_seconds = Histogram(
            "orch_pool_wait_seconds", "Time a turn waited for a free connection, by pool (redis,"
            " agents); only waits are observed", ["pool"], buckets=POOL_BUCKETS, registry=r,
        )  # fmt: skip
        self.pool_wait_seconds_by = Children(self.pool_wait_seconds)
        self.classifications = Counter(
            "orch_intent_classifications", "Turns classified, by stage, classifier (model or"
            " agent) and result (matched, or the no-match reason)",
            ["stage", "classifier", "result"], registry=r,
        )  # fmt: skip
        self.classification_seconds = Histogram(
            "orch_intent_classification_seconds", "Time to classify a turn, by classifier",
            ["classifier"], buckets=CLASSIFY_BUCKETS, registry=r,
        )  # fmt: skip
        self.classifier_agent_faults = Counter(
            "orch_classifier_agent_fallbacks", "Turns the built-in model classified because"
            " the classifier agent faulted or answered out of shape, by code",
            ["code"], registry=r,
        )  # fmt: skip
        self.agent_first_chunk_seconds = Histogram(
            "orch_agent_first_chunk_seconds", "Streamed turns: from the agent call to the"
            " agent's first words, by agent", ["agent"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.streamed_turns = Counter(
            "orch_streamed_turns", "Turns answered as a stream, by transport (sse, websocket)",
            ["transport"], registry=r,
        )  # fmt: skip
        self.agent_streams_cut = Counter(
            "orch_agent_streams_cut", "Agent answers that failed after their first words, by"
            " agent and code", ["agent", "code"], registry=r,
        )  # fmt: skip
        self.stream_clients_gone = Counter(
            "orch_stream_clients_gone", "Streamed turns whose client left before the end (the"
            " turn still ran to its commit), by transport", ["transport"], registry=r,
        )  # fmt: skip
        self.agent_first_chunk_seconds_by = Children(self.agent_first_chunk_seconds)
        self.streamed_turns_by = Children(self.streamed_turns)
        self.agent_streams_cut_by = Children(self.agent_streams_cut)
        self.stream_clients_gone_by = Children(self.stream_clients_gone)
        self.classifications_by = Children(self.classifications)
        self.classification_seconds_by = Children(self.classification_seconds)
        self.classifier_agent_faults_by = Children(self.classifier_agent_faults)
        self.turns_by = Children(self.turns)
        self.agent_seconds_by = Children(self.agent_seconds)
        self.agent_faults_by = Children(self.agent_faults)
        self.redis_seconds_by = Children(self.redis_seconds)
        self.redis_faults_by = Children(self.redis_faults)

    def intent_label(self, intent: str) -> str:
        return intent if intent in self._known_intents or intent == NO_MATCH else "unknown"

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = self.registry
        live = _LiveRegistry(self._circuits, self._in_flight)
        return generate_latest(registry) + generate_latest(live)

    def stats(self) -> dict[str, Any]:
        """The figures an operator asks first, from the same samples /metrics shows."""
        samples = self.samples()
        return {
            "agents": _agent_stats(samples),
            "stages": _stage_stats(samples),
            "calls_started": _total(samples, "orch_calls_started_total"),
            "calls_completed": _total(samples, "orch_calls_completed_total"),
        }

    def samples(self) -> list[Sample]:
        """Every sample /metrics shows from the counters and histograms (every worker's, with
        PROMETHEUS_MULTIPROC_DIR), as (name, labels, value)."""
        return list(_samples(self._collected()))

    def turns_in_flight(self) -> int:
        """Turns this worker holds now, arrival to answer."""
        return self._in_flight()

    def _collected(self) -> Iterator[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            yield from MultiProcessCollector(None).collect()
        else:
            yield from self.registry.collect()


class _LiveRegistry(CollectorRegistry):
    """What this process holds at scrape time: each agent's circuit state (0 closed,
    1 half-open, 2 open) and the turns in flight."""

    def __init__(self, circuits: Callable[[], dict[str, dict]], in_flight: Callable[[], int]):
        super().__init__(auto_describe=False)
        self._circuits = circuits
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "orch_agent_circuit_state", "0 closed, 1 half-open, 2 open", labels=["agent"]
        )
        for role, circuit in self._circuits().items():
            gauge.add_metric([role], CIRCUIT_VALUES[circuit["state"]])
        yield gauge
        yield GaugeMetricFamily(
            "orch_turns_in_flight",
            "Turns this worker holds now, arrival to answer (MAX_TURNS_IN_FLIGHT caps them)",
            value=self._in_flight(),
        )


Sample = tuple[str, dict[str, str], float]


def _samples(metrics: Iterator[Metric]) -> Iterator[Sample]:
    for metric in metrics:
        for sample in metric.samples:
            yield sample.name, sample.labels, sample.value


def _total(samples: list[Sample], name: str) -> int:
    return int(sum(value for n, _, value in samples if n == name))


def _agent_stats(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    agents: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples:
        if name.startswith("orch_agent_call_seconds") or name == "orch_agent_faults_total":
            agents.setdefault(labels["agent"], {"buckets": {}, "count": 0, "sum": 0, "faults": 0})
        entry = agents.get(labels.get("agent", ""))
        if name == "orch_agent_call_seconds_count":
            entry["count"] += value
        elif name == "orch_agent_call_seconds_sum":
            entry["sum"] += value
        elif name == "orch_agent_call_seconds_bucket":
            le = float(labels["le"])
            entry["buckets"][le] = entry["buckets"].get(le, 0) + value
        elif name == "orch_agent_faults_total":
            entry["faults"] += value
    return {role: _summarise_agent(entry) for role, entry in sorted(agents.items())}


def _summarise_agent(entry: dict[str, Any]) -> dict[str, Any]:
    calls = int(entry["count"])
    return {
        "calls": calls,
        "success_rate": round(1 - entry["faults"] / calls, 4) if calls else None,
        "mean_ms": round(entry["sum"] / calls * 1000, 2) if calls else None,
        "p95_ms": quantile_ms(entry["buckets"], calls, 0.95) if calls else None,
    }


def quantile_ms(buckets: dict[float, float], count: int, q: float) -> float | None:
    """Upper bound of the histogram bucket holding the q-quantile; None past the last bound."""
    rank = q * count
    for le in sorted(buckets):
        if buckets[le] >= rank:
            return round(le * 1000, 2) if le != float("inf") else None
    return None


def _stage_stats(samples: list[Sample]) -> dict[str, dict[str, int]]:
    stages: dict[str, dict[str, int]] = {}
    for name, labels, value in samples:
        if name != "orch_turns_total":
            continue
        entry = stages.setdefault(labels["stage"], {"turns": 0, "errors": 0, "rejected": 0})
        entry["turns"] += int(value)
        entry["errors"] += int(value) if labels["outcome"] == "error" else 0
        entry["rejected"] += int(value) if labels["outcome"] == "rejected" else 0
    return stages
