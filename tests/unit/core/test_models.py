"""The request model's rules a client meets first: what counts as a blank message, a bad id."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator_flows.core.models import OrchestrateRequest

TURN = {"call_identify_id": "C-1", "account_id": "A-1", "eci": "E-1", "intent": "greeting"}


@pytest.mark.parametrize(
    "words",
    [
        " \t\n",
        "\u200b" * 50,  # zero-width spaces
        "\u200c\u200d\u2060\ufeff\u00ad",  # joiners, word joiner, BOM, soft hyphen
        "\u202e\u2066\u2069",  # bidi controls
        "\u3164\u115f\u2800",  # Hangul fillers, braille blank
        "\u0301\u0308",  # combining marks with nothing to sit on
        "\ue000\U000f0000",  # private use
        "\u200b" * 40 + "\U0001e8d7",  # an unassigned code point after the usual blanks
    ],
)
def test_message_of_only_invisible_characters_is_blank(words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OrchestrateRequest(**TURN, input_message=words)

    assert caught.value.errors()[0]["type"] == "string_blank"


@pytest.mark.parametrize(
    "words",
    ["hi", "\u200b" * 40 + "é", "\u200b" * 40 + "?", "\u200b" * 40 + "\U0001f600", "привет"],
)
def test_message_with_one_visible_character_is_taken(words: str) -> None:
    assert OrchestrateRequest(**TURN, input_message=words).input_message == words


@pytest.mark.parametrize("field", ["call_identify_id", "account_id", "eci"])
@pytest.mark.parametrize("dots", [".", "..", "...."])
def test_an_id_of_only_dots_is_refused(field: str, dots: str) -> None:
    with pytest.raises(ValidationError):
        OrchestrateRequest(**(TURN | {field: dots}), input_message="hi")


def test_ids_with_dots_among_other_characters_are_taken() -> None:
    ids = {"call_identify_id": "call.2026.1", "account_id": ".hidden", "eci": "x."}

    assert OrchestrateRequest(**(TURN | ids), input_message="hi").eci == "x."
