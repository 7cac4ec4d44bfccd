"""judge and choice_from_ranking: when a ranking's best intent is taken, and what a no-match
keeps. Pure."""

from __future__ import annotations

import pytest

from orchestrator_flows.core.intents import (
    NO_MATCH,
    Alternative,
    Thresholds,
    choice_from_ranking,
    client_choice,
    judge,
)

RULES = Thresholds(confidence=0.5, margin=0.1)


def ranking(*pairs: tuple[str, float]) -> list[Alternative]:
    return [{"intent": intent, "confidence": confidence} for intent, confidence in pairs]


@pytest.mark.parametrize(
    ("ranked", "reason"),
    [
        pytest.param(ranking(("refund", 0.49), ("billing", 0.1)), "low_confidence", id="low"),
        pytest.param(ranking(("refund", 0.55), ("billing", 0.5)), "ambiguous", id="too-close"),
        pytest.param(ranking(("refund", 0.3), ("billing", 0.29)), "low_confidence", id="both"),
        pytest.param([], "no_examples", id="empty"),
        pytest.param(ranking(("refund", 0.9), ("billing", 0.05)), None, id="match"),
        pytest.param(ranking(("refund", 0.5), ("billing", 0.25)), None, id="at-the-confidence"),
        pytest.param(ranking(("refund", 0.6)), None, id="alone"),
    ],
)
def test_judge_names_why_the_best_intent_may_not_be_taken(
    ranked: list[Alternative], reason: str | None
) -> None:
    assert judge(ranked, RULES) == reason


def test_judge_takes_a_lone_intent_against_nothing_for_the_margin() -> None:
    assert judge(ranking(("refund", 0.35)), Thresholds(confidence=0.3, margin=0.3)) is None
    assert judge(ranking(("refund", 0.25)), Thresholds(confidence=0.2, margin=0.3)) == "ambiguous"


def test_match_routes_by_the_best_and_offers_the_next_two_as_alternatives() -> None:
    ranked = ranking(("refund", 0.8), ("billing", 0.1), ("booking", 0.06), ("complaint", 0.04))

    choice = choice_from_ranking(ranked, RULES, "model")

    assert choice.intent == "refund"
    assert choice.source == "classifier"
    assert choice.confidence == 0.8
    assert choice.alternatives == tuple(ranked[1:3])
    assert choice.no_match_reason is None
    assert choice.classifier == "model"
    assert choice.no_match is False


def test_no_match_keeps_the_best_ones_as_alternatives_none_of_them_taken() -> None:
    ranked = ranking(("refund", 0.4), ("billing", 0.35), ("booking", 0.25))

    choice = choice_from_ranking(ranked, RULES, "agent")

    assert choice.intent == NO_MATCH
    assert choice.no_match is True
    assert choice.no_match_reason == "low_confidence"
    assert choice.confidence == 0.4
    assert choice.alternatives == tuple(ranked[:2])
    assert choice.classifier == "agent"


def test_reason_given_by_the_ranker_stands_over_a_ranking_the_thresholds_would_take() -> None:
    ranked = ranking(("refund", 0.95), ("billing", 0.01))

    choice = choice_from_ranking(ranked, RULES, "model", reason="unlike_examples")

    assert choice.intent == NO_MATCH
    assert choice.no_match_reason == "unlike_examples"
    assert choice.alternatives == tuple(ranked)


def test_empty_ranking_is_a_no_match_for_want_of_examples_with_zero_confidence() -> None:
    choice = choice_from_ranking([], RULES, "model")

    assert choice.intent == NO_MATCH
    assert choice.no_match_reason == "no_examples"
    assert choice.confidence == 0.0
    assert choice.alternatives == ()


def test_number_of_alternatives_can_be_asked_for() -> None:
    ranked = ranking(("a", 0.9), ("b", 0.05), ("c", 0.03), ("d", 0.02))

    assert len(choice_from_ranking(ranked, RULES, "model", alternatives=3).alternatives) == 3


def test_client_choice_is_not_a_no_match_even_when_the_client_sends_no_match() -> None:
    choice = client_choice(NO_MATCH)

    assert choice.source == "client"
    assert choice.no_match is False
    assert choice.confidence is None
