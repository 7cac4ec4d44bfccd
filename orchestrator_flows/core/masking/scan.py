"""One text being masked: its normalised form, its digit groups gathered into numbers, the
stretches masked so far, and labels found where their first word stands.

A detector (personal_data.py, phones.py) reads the normalised text (normalise.py); keyword
patterns read it lowered, without re.I (case-insensitive alternations are far slower;
bench/RESULTS.md, "What masking one turn costs"). What a detector masks is blanked out for the
ones after it, and its raw value is added to `found` (a number as its digits).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator_flows.core.masking.normalise import Normalised, lower, normalise

MIN_SECRET = 3  # shorter values would mask unrelated text everywhere

Group = tuple[int, int]  # a run of digits: (start, end) in the normalised text
Number = list[Group]  # groups joined by separators

BLANK = "\x00"  # stands in for a masked stretch: no digit, no word, no separator
_MARKER = re.compile(
    r"\[(?:card [*\d]{8}|ssn \*{3}-\*{2}-[*\d]{4}|cvv|password|email|phone|secret)\]"
)
GROUP = re.compile(r"[0-9]+")
_DIGIT = re.compile(r"[0-9]")
# Separators inside one number: "4111 1111", "4111-1111", "123.45.6789", "15 / 01", "48, 29".
JOIN = re.compile(r"\s{0,3}[-./]?\s{0,3}|\s{0,2},\s{1,3}")
# A phone number's: "(415) 555-0100", "+44 (0)20 7946 0958", "415, 555, 0100".
PHONE_JOIN = re.compile(r"[\s().,\-/]{1,4}")
# An agent repeating a value may put anything short between its pieces: "4111, 1111", "48 - 29".
REPEAT_JOIN = re.compile(r"[^\w\x00]{1,4}")
_LONGEST_JOIN = 7


class Scan:
    """One text being masked: its normalised form, what is masked so far, and the text the next
    detector reads, where every masked stretch is blanked out (same length)."""

    def __init__(self, source: str, normalised: Normalised | None = None) -> None:
        self.source = source
        self.normalised = normalised or normalise(source)
        self.text = self.normalised.text
        self.lowered = lower(self.text)
        self.spans: list[tuple[int, int, str]] = []
        # Values masked for what they look like where they stand, with no label: masked where
        # they recur in the caller's next words or the agent's answer, but in this text each
        # occurrence is judged in its own context ("order 2125550123" stays).
        self.judged_alone: set[str] = set()
        self._numbers: dict[re.Pattern[str], list[Number]] = {}
        self._after: dict[re.Pattern[str], dict[int, Number]] = {}  # until the next blank
        for marker in _MARKER.finditer(self.text):  # masked before: never read again
            self.blank(*marker.span())

    def has(self, *words: str) -> bool:
        return any(word in self.lowered for word in words)

    def mask(self, start: int, end: int, replacement: str) -> bool:
        if end <= start or BLANK in self.text[start:end]:
            return False
        self.spans.append((start, end, replacement))
        self.blank(start, end)
        return True

    def blank(self, start: int, end: int) -> None:
        blank = BLANK * (end - start)
        self.text = self.text[:start] + blank + self.text[end:]
        self.lowered = self.lowered[:start] + blank + self.lowered[end:]
        # A blank only parts numbers (it is no separator), so they are cut, not found again.
        for join, numbers in self._numbers.items():
            self._numbers[join] = _cut(numbers, start, end)
        self._after.clear()

    def stars(self, start: int, end: int) -> str:
        return _DIGIT.sub("*", self.normalised.text[start:end])

    def digits(self, start: int, end: int) -> str:
        return "".join(GROUP.findall(self.text, start, end))

    def numbers(self, join: re.Pattern[str]) -> list[Number]:
        """The digit groups gathered into numbers: consecutive groups with `join` between."""
        if join not in self._numbers:
            numbers: list[Number] = []
            for group in GROUP.finditer(self.text):
                start = group.start()
                if numbers and _joined(self.text, numbers[-1][-1][1], start, join):
                    numbers[-1].append(group.span())
                else:
                    numbers.append([group.span()])
            self._numbers[join] = numbers
        return self._numbers[join]

    def from_group(self, join: re.Pattern[str]) -> dict[int, Number]:
        """Where each group starts -> its number from that group on."""
        if join not in self._after:
            self._after[join] = {
                group[0]: number[index:]
                for number in self.numbers(join)
                for index, group in enumerate(number)
            }
        return self._after[join]

    def result(self) -> str:
        """The source with each masked stretch replaced; the rest exactly as it was written."""
        if not self.spans:
            return self.source
        out, done = [], 0
        for start, end, replacement in sorted(self.spans):
            source_start, source_end = self.normalised.source_span(start, end)
            out.append(self.source[done:source_start] if source_start > done else "")
            out.append(replacement)
            done = max(done, source_end)
        out.append(self.source[done:])
        return "".join(out)


def _cut(numbers: list[Number], start: int, end: int) -> list[Number]:
    """The numbers once text[start:end] is blanked: what is left of each on either side."""
    cut: list[Number] = []
    for number in numbers:
        if number[-1][1] <= start or number[0][0] >= end:
            cut.append(number)
            continue
        before = [(s, min(e, start)) for s, e in number if s < start]
        after = [(max(s, end), e) for s, e in number if e > end]
        cut.extend(part for part in (before, after) if part)
    return cut


def _joined(text: str, end: int, start: int, join: re.Pattern[str]) -> bool:
    return start - end <= _LONGEST_JOIN and join.fullmatch(text, end, start) is not None


@dataclass(frozen=True)
class Label:
    """A label and the filler words after it, up to the value's first digit. Tried only where
    one of `first_words` stands (found with str.find), so that no pattern is tried at every
    position of the text."""

    pattern: re.Pattern[str]
    first_words: tuple[str, ...]

    def values(
        self, scan: Scan, join: re.Pattern[str], fewest: int
    ) -> Iterator[tuple[re.Match[str], Number]]:
        """(the label, its number from the group right after it on) for each label followed by
        a number of at least `fewest` digits: a value read after a label ("cvv2 123") begins at
        the group after it, whatever came before."""
        if all(number[-1][1] - number[0][0] < fewest for number in scan.numbers(join)):
            return  # no number long enough: no need to look for labels
        starts = find_all(scan.lowered, self.first_words)
        if not starts:
            return
        after = scan.from_group(join)
        for position in starts:
            if position and scan.lowered[position - 1].isalpha():  # "spin", "opinion"
                continue
            match = self.pattern.match(scan.lowered, position)
            if match is not None and match.end() in after:
                yield match, after[match.end()]


def find_all(text: str, needles: tuple[str, ...]) -> list[int]:
    """Where each needle occurs in the text, in order."""
    positions = set()
    for needle in needles:
        position = text.find(needle)
        while position >= 0:
            positions.add(position)
            position = text.find(needle, position + 1)
    return sorted(positions)


def group_sizes(groups: Number) -> list[int]:
    return [end - start for start, end in groups]


def leading_value(number: Number, fewest: int, most: int) -> Group | None:
    """The leading groups of `number` holding at most `most` digits, if at least `fewest`:
    "cvv 1 2 3" -> "1 2 3"; "the code is 123456, 4417 ..." -> "123456"."""
    count, last = 0, None
    for index, (start, end) in enumerate(number):
        if count + end - start > most:
            break
        count += end - start
        last = index
    if last is None or count < fewest:
        return None
    return number[0][0], number[last][1]


WORDS = re.compile(r"[a-z]+")
NOT_LETTER_AFTER = r"(?![^\W\d_])"


def record(found: set[str], value: str) -> None:
    """Keeps a masked value to hide it where it recurs: a number as its digits."""
    if any(char.isalpha() for char in value):
        if len(value) >= MIN_SECRET:
            found.add(value)
        return
    digits = "".join(GROUP.findall(value))
    if len(digits) >= MIN_SECRET:
        found.add(digits)


def word_before(lowered: str, position: int) -> str:
    words = WORDS.findall(lowered, max(0, position - 24), position)
    return words[-1] if words else ""
