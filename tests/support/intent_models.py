"""A stand-in for the built-in intent model (orchestrator_flows/intents): it answers what the test
sets and remembers every question, for tests of what the service does with a classification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Scored:
    intent: str
    confidence: float


@dataclass
class Found:
    """A classification: the fields of intents.Classification that the service reads."""

    best: str | None
    confidence: float
    alternatives: Sequence[Scored] = ()
    no_match_reason: str | None = None


@dataclass
class FakeModel:
    """Answers `found` to every question; `asked` holds each (words, allowed, thresholds)."""

    found: Found
    asked: list[tuple[str, list[str], Any]] = field(default_factory=list)
    description: str = "fake"

    def classify(self, text: str, allowed: Sequence[str], thresholds: Any) -> Found:
        self.asked.append((text, list(allowed), thresholds))
        return self.found

    def fingerprint(self) -> str:
        return "fake"
