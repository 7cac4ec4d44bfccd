"""The text masking reads, and where each of its characters came from.

`normalise(text)` gives one canonical spelling of whatever can carry a number or a keyword:
- Unicode digits of any script or style (fullwidth, Arabic-Indic, mathematical, superscript) as
  ASCII digits: NFKC, then `unicodedata.digit`; other characters in their NFKC form;
- format characters (zero-width spaces and joiners, soft hyphens, bidi marks) dropped;
- every dash and minus sign as `-`, curly apostrophes as `'`;
- digits spelled out as speech-to-text writes them ("four one one one", "double four",
  "forty one", "oh" between digits) as digits, in runs of two or more.
Each character of the result maps back to the stretch of the original it came from, so that a
detector reading the normalised text can replace exactly what the caller said.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass

# Piece = (start in the new text, end there, start in the source, end there). Between pieces
# the two texts run one for one.
Piece = tuple[int, int, int, int]

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_MARKS = ("Mn", "Mc", "Me")
_PUNCTUATION = str.maketrans({"\u2212": "-", "\u2018": "'", "\u2019": "'", "\u02bc": "'"})

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen")  # fmt: skip
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_VALUE = (
    {w: str(n) for n, w in enumerate(_UNITS)}
    | {w: str(10 + n) for n, w in enumerate(_TEENS)}
    | {w: str(20 + 10 * n) for n, w in enumerate(_TENS)}
    | {"oh": "0", "o": "0", "nought": "0"}
)
_ZEROS = {"hundred": "00", "thousand": "000"}
# Digits a word adds beside the one its neighbour says: "double four" is two, "one hundred" one.
_DIGITS_ADDED = {"double": 1, "triple": 2, "hundred": 0, "thousand": 0}
_WORD = (
    r"(?:double|triple|hundred|thousand|" + "|".join(sorted(_VALUE, key=len, reverse=True)) + ")"
)
# A number word must stand alone: "one" in "someone" or "one_time" is no digit. Patterns read
# the lowered text, without re.I: case-insensitive alternations are far slower.
_TOKEN = rf"(?:\b{_WORD}\b|(?<![^\W_])[0-9]+)"
# Tokens separated by spaces, commas, dots or dashes, as a transcript writes a number.
_RUN = re.compile(rf"{_TOKEN}(?:[\s,.\-/]{{1,3}}{_TOKEN})*")
_ANY_WORD = re.compile(rf"\b{_WORD}\b")
_TOKENS = re.compile(_TOKEN)


@dataclass(frozen=True, slots=True)
class Normalised:
    text: str
    # The layers applied, innermost first; no piece at all: the text is the source.
    layers: tuple[tuple[Piece, ...], ...] = ()

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """Where the characters text[start:end] (end > start) came from in the source."""
        for pieces in reversed(self.layers):
            start, end = _back(pieces, start, end)
        return start, end


def normalise(text: str) -> Normalised:
    layers = []
    if not text.isascii():
        text, pieces = _unicode(text)
        layers.append(pieces)
    lowered = lower(text)
    if _ANY_WORD.search(lowered):
        spoken, pieces = _spoken_digits(text, lowered)
        if pieces:
            text = spoken
            layers.append(pieces)
    return Normalised(text, tuple(layers))


def _unicode(text: str) -> tuple[str, tuple[Piece, ...]]:
    """ASCII stays as it is; each non-ASCII character, with the marks that follow it, becomes
    its NFKC form, with digits as ASCII digits, dashes as `-` and format characters gone."""
    out: list[str] = []
    pieces: list[Piece] = []
    done = length = 0  # source characters copied so far; length of `out`'s text
    for stretch in _NON_ASCII.finditer(text):
        # A mark may follow an ASCII letter ("e" + U+0301): take the letter along.
        start = (
            stretch.start() - 1 if _is_mark(stretch[0][0]) and stretch.start() else stretch.start()
        )
        start = max(start, done)
        out.append(text[done:start])
        length += start - done
        position = start
        while position < stretch.end():
            cluster_end = position + 1
            while cluster_end < len(text) and _is_mark(text[cluster_end]):
                cluster_end += 1
            piece = _canonical(text[position:cluster_end])
            if piece != text[position:cluster_end]:
                pieces.append((length, length + len(piece), position, cluster_end))
            out.append(piece)
            length += len(piece)
            position = cluster_end
        done = position
    out.append(text[done:])
    return "".join(out), tuple(pieces)


def _is_mark(char: str) -> bool:
    return unicodedata.category(char) in _MARKS


def _canonical(cluster: str) -> str:
    if unicodedata.category(cluster[0]) == "Cf":  # zero-width, soft hyphen, bidi: nothing
        return ""
    text = unicodedata.normalize("NFKC", cluster).translate(_PUNCTUATION)
    if text.isascii():
        return text
    chars = []
    for char in text:
        if char.isdigit():  # Arabic-Indic, Devanagari, ...: a digit, without its marks
            return str(unicodedata.digit(char))
        category = unicodedata.category(char)
        chars.append("-" if category == "Pd" else "" if category == "Cf" else char)
    return "".join(chars)


def lower(text: str) -> str:
    """The text in lower case, character for character (so positions hold)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)  # "İ" stays


def _spoken_digits(text: str, lowered: str) -> tuple[str, tuple[Piece, ...]]:
    """Runs of two or more number tokens written as digits: "four one one one" -> "4 1 1 1"."""
    out: list[str] = []
    pieces: list[Piece] = []
    done = length = 0
    for run in _RUN.finditer(lowered):
        tokens = _spelled(run)
        if tokens is None:
            continue
        for start, end, digits in tokens:
            out.append(text[done:start])
            length += start - done
            pieces.append((length, length + len(digits), start, end))
            out.append(digits)
            length += len(digits)
            done = end
    out.append(text[done:])
    return "".join(out), tuple(pieces)


def _spelled(run: re.Match[str]) -> list[tuple[int, int, str]] | None:
    """The number words of a run as (start, end, digits), or None if the run is not a number
    said digit by digit: fewer than two digits-bearing tokens, or no word at all."""
    tokens = [(t.start(), t.end(), t[0]) for t in _TOKENS.finditer(run[0])]
    while tokens and tokens[0][2] in ("oh", "o", *_ZEROS):  # "Oh, one more thing"
        tokens.pop(0)
    while tokens and tokens[-1][2] in ("double", "triple"):
        tokens.pop()
    digits = sum(_DIGITS_ADDED.get(word, 1) for _, _, word in tokens)  # "double four": two
    if digits < 2 or all(t[2].isdigit() for t in tokens):
        return None
    offset, spelled = run.start(), []
    index = 0
    while index < len(tokens):
        start, end, word = tokens[index]
        index += 1
        following = tokens[index][2] if index < len(tokens) else ""
        if word in ("double", "triple"):
            if len(_digit_of(following)) != 1:
                continue  # a lone "double" stays a word
            digits = _digit_of(following) * (2 if word == "double" else 3)
        elif word in _UNITS[1:] and following in _ZEROS:
            digits = _VALUE[word] + _ZEROS[following]  # "oh one hundred": 0100
        elif word in _TENS and following in _UNITS[1:]:
            digits = _VALUE[word][0] + _VALUE[following]  # "forty one", "forty-one": 41
        else:
            digits = _digit_of(word)
            if not digits:
                continue  # a lone "hundred" stays a word
            following = ""
        if following:  # two tokens made one number
            end = tokens[index][1]
            index += 1
        if digits != word:  # a numeral stays as it was written
            spelled.append((offset + start, offset + end, digits))
    return spelled


def _digit_of(word: str) -> str:
    return word if word.isdigit() else _VALUE.get(word, "")


def _back(pieces: tuple[Piece, ...], start: int, end: int) -> tuple[int, int]:
    return _back_one(pieces, start, first=True), _back_one(pieces, end - 1, first=False)


def _back_one(pieces: tuple[Piece, ...], position: int, *, first: bool) -> int:
    """The source position of the character at `position`: its start (first) or its end."""
    index = bisect.bisect_right(pieces, (position, float("inf"))) - 1
    if index >= 0:
        _, new_end, source_start, source_end = pieces[index]
        if position < new_end:
            return source_start if first else source_end
        shift = source_end - new_end
    else:
        shift = 0
    return position + shift + (0 if first else 1)
