"""The built-in intent classifier (issue 27): pure computation over example utterances."""

from .model import NO_MATCH, Classification, IntentModel, Scored, Thresholds

__all__ = ["NO_MATCH", "Classification", "IntentModel", "Scored", "Thresholds"]
