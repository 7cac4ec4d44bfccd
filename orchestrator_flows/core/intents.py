"""Which intent a turn carries: the client's, or the classifier's choice among the stage's intents.

Pure: the choice is made in service/intent_choice.py (a model or an agent); this module holds its
shape and the rule that turns a ranking into a choice or a no-match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

NO_MATCH = "no_match"  # the intent a turn is recorded under when no intent fits it
IntentSource = Literal["client", "classifier"]
Classifier = Literal["model", "agent"]
NoMatchReason = Literal["low_confidence", "ambiguous", "unlike_examples", "no_examples"]


@with_config(ConfigDict(extra="forbid"))
class Alternative(TypedDict):
    intent: str
    confidence: float


class Thresholds(NamedTuple):
    """Below `confidence` the top intent is not trusted; closer than `margin` to the second, the
    two cannot be told apart (as Rasa's FallbackClassifier decides)."""

    confidence: float
    margin: float


class IntentChoice(NamedTuple):
    intent: str  # the intent the turn is routed by: the client's, the classifier's, or NO_MATCH
    source: IntentSource = "client"
    confidence: float | None = None  # the top intent's, 0-1 (None: the client chose)
    alternatives: tuple[Alternative, ...] = ()  # the next ones, best first
    no_match_reason: NoMatchReason | None = None
    classifier: Classifier | None = None  # what chose: the built-in model or the agent

    @property
    def no_match(self) -> bool:
        return self.source == "classifier" and self.intent == NO_MATCH


def client_choice(intent: str) -> IntentChoice:
    return IntentChoice(intent)


def judge(ranked: Sequence[Alternative], thresholds: Thresholds) -> NoMatchReason | None:
    """Why the best of `ranked` (best first) may not be taken, or None when it may."""
    if not ranked:
        return "no_examples"
    first = ranked[0]["confidence"]
    second = ranked[1]["confidence"] if len(ranked) > 1 else 0.0
    if first < thresholds.confidence:
        return "low_confidence"
    if first - second < thresholds.margin:
        return "ambiguous"
    return None


def choice_from_ranking(
    ranked: Sequence[Alternative],
    thresholds: Thresholds,
    classifier: Classifier,
    *,
    reason: NoMatchReason | None = None,
    alternatives: int = 2,
) -> IntentChoice:
    """The choice a ranking makes under `thresholds`; `reason` is one the ranker already found
    (the model's out-of-scope gate), which stands. A match's alternatives are the intents after
    it; a no-match's are the best ones, none of them taken."""
    reason = reason or judge(ranked, thresholds)
    best = ranked[0] if ranked else None
    first = 1 if reason is None else 0
    return IntentChoice(
        intent=NO_MATCH if reason or best is None else best["intent"],
        source="classifier",
        confidence=best["confidence"] if best else 0.0,
        alternatives=tuple(ranked[first : first + alternatives]),
        no_match_reason=reason,
        classifier=classifier,
    )
