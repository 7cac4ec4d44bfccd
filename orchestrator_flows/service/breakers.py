"""A circuit breaker per agent: after repeated faults, stop calling the agent for a while.

While a circuit is open, turns to that agent fail at once (`agent_unavailable`) instead of each
waiting for a timeout; after the reset period one probe turn is let through and decides.
State is per process: each replica learns an agent's health from its own calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from orchestrator_flows.core.errors import (
    AgentBadResponse,
    AgentDisconnected,
    AgentFault,
    AgentHttpError,
    AgentTimeout,
    AgentUnavailable,
    AgentUnreachable,
)

# Faults that say the agent is unwell. An agent that answers a JSON-RPC error or fails a task
# is working: it said no.
UNHEALTHY = (AgentTimeout, AgentUnreachable, AgentDisconnected, AgentHttpError, AgentBadResponse)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Circuit:
    state: CircuitState = CircuitState.CLOSED
    consecutive_faults: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_fault: dict[str, Any] | None = None


class Breakers:
    def __init__(
        self,
        roles: Iterable[str],
        *,
        threshold: int,
        reset_sec: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._circuits = {role: Circuit() for role in roles}
        self._threshold = threshold
        self._reset_sec = reset_sec
        self._clock = clock

    def admit(self, role: str) -> None:
        """Raises AgentUnavailable unless a call to `role` may go out now."""
        circuit = self._circuits[role]
        if circuit.state == CircuitState.CLOSED:
            return
        if circuit.state == CircuitState.OPEN and self._reset_due(circuit):
            circuit.state, circuit.probing = CircuitState.HALF_OPEN, False
        if circuit.state == CircuitState.HALF_OPEN and not circuit.probing:
            circuit.probing = True  # this turn is the probe; others wait for its verdict
            return
        raise AgentUnavailable(
            f"agent {role!r} is failing ({circuit.consecutive_faults} faults in a row); "
            f"not calling it for up to {self._reset_sec:g}s",
            attempts=0,
        )

    def record(self, role: str, fault: AgentFault | None) -> None:
        """The outcome of an admitted call: None for an answer, else the fault."""
        circuit = self._circuits[role]
        circuit.probing = False
        if not isinstance(fault, UNHEALTHY):
            circuit.state, circuit.consecutive_faults, circuit.opened_at = (
                CircuitState.CLOSED,
                0,
                None,
            )
            return
        circuit.consecutive_faults += 1
        circuit.last_fault = {
            "code": fault.code,
            "message": fault.message,
            "at": _now_iso(),
        }
        if circuit.state == CircuitState.HALF_OPEN or circuit.consecutive_faults >= self._threshold:
            circuit.state, circuit.opened_at = CircuitState.OPEN, self._clock()

    def abandon(self, role: str) -> None:
        """An admitted call ended without a verdict (cancelled): let another probe through."""
        self._circuits[role].probing = False

    def _reset_due(self, circuit: Circuit) -> bool:
        return (
            circuit.opened_at is not None and self._clock() - circuit.opened_at >= self._reset_sec
        )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            role: {
                "state": c.state.value,
                "consecutive_faults": c.consecutive_faults,
                "last_fault": c.last_fault,
            }
            for role, c in self._circuits.items()
        }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
