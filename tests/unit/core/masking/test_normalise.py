"""normalise: one spelling for every way of writing a digit, and the way back to what was said."""

from __future__ import annotations

import pytest

from orchestrator_flows.core.masking.normalise import lower, normalise


@pytest.mark.parametrize(
    ("said", "read"),
    [
        ("card 4111", "card 4111"),
        ("\uff14\uff11\uff11\uff11", "4111"),  # fullwidth
        ("\u0664\u0661\u0661\u0661", "4111"),  # Arabic-Indic
        ("\u096a\u0967\u0967\u0967", "4111"),  # Devanagari
        ("\U0001d7d2\U0001d7cf", "41"),  # mathematical bold
        ("\u2074\u00b9", "41"),  # superscript
        ("4\u200b1\u200c1\u200d1\u2060\u00ad", "4111"),  # zero-width and soft hyphen: gone
        ("123\u2013456\u2014789\u2212", "123-456-789-"),  # dashes and minus
        ("a\u00a0b\u3000c", "a b c"),  # no-break and ideographic spaces
        ("pin\u2019s", "pin's"),
        ("jane\uff20example", "jane@example"),
        ("four one one one", "4 1 1 1"),
        ("Four One One One", "4 1 1 1"),
        ("four one five, oh one double five", "4 1 5, 0 1 55"),
        ("triple oh seven", "000 7"),
        ("forty-one eleven", "41 11"),
        ("five five five, oh one hundred", "5 5 5, 0 100"),
        ("4111 one one one", "4111 1 1 1"),
        ("one", "one"),  # a lone number word is a word
        ("one-time code", "one-time code"),
        ("Oh, one more thing", "Oh, one more thing"),
        ("someone phoned", "someone phoned"),
        ("one hundred dollars", "one hundred dollars"),
        ("I have one question and two kids", "I have one question and two kids"),
    ],
)
def test_digits_are_read_however_written(said: str, read: str) -> None:
    assert normalise(said).text == read


@pytest.mark.parametrize(
    ("said", "piece", "source"),
    [
        ("my code is \uff14\uff18\uff12\uff19", "4829", "\uff14\uff18\uff12\uff19"),
        ("card 4\u200b1\u200b1\u200b1 ok", "4111", "4\u200b1\u200b1\u200b1"),
        ("pin four one two three.", "4 1 2 3", "four one two three"),
        ("x double four y", "44", "double four"),
        ("caf\u00e9 \u0661\u0662\u0663 end", "123", "\u0661\u0662\u0663"),
        ("jose\u0301@x.io", "jos\u00e9@x.io", "jose\u0301@x.io"),
    ],
)
def test_each_stretch_maps_back_to_what_was_said(said: str, piece: str, source: str) -> None:
    normalised = normalise(said)
    start = normalised.text.index(piece)
    begin, end = normalised.source_span(start, start + len(piece))
    assert said[begin:end] == source


def test_plain_text_maps_onto_itself() -> None:
    normalised = normalise("order 4417, thanks")
    assert normalised.layers == ()
    assert normalised.source_span(6, 10) == (6, 10)


def test_lowering_keeps_every_position() -> None:
    said = "\u0130stanbul PIN"  # "İ" lowers to two characters
    assert len(lower(said)) == len(said)
    assert lower(said).endswith("pin")
