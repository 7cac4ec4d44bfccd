"""Phone numbers: after a phone label, or wherever libphonenumber finds a valid one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

import phonenumbers

from orchestrator_flows.core.masking.scan import (
    NOT_LETTER_AFTER,
    PHONE_JOIN,
    WORDS,
    Label,
    Number,
    Scan,
    group_sizes,
    leading_value,
    word_before,
)

_PHONE_LABEL = Label(
    re.compile(
        r"(?:(?:tele)?phone|mobile|cell(?:phone)?|tel|fax|whatsapp"
        r"|(?:text|call|reach|ring|contact)\s+me|number\s+is)"
        + NOT_LETTER_AFTER
        + r"(?:[\s:=#'.,\-]*(?:is|was|number|no|at|on|to|me|my|the|back|it's)\b){0,4}"
        r"[\s:=#'.,\-]*(?P<lead>[+(]?)"
    ),
    ("phone", "tele", "mobile", "cell", "tel", "fax", "whatsapp", "text", "call", "reach",
     "ring", "contact", "number"),
)  # fmt: skip
# Words that make a bare digit string a reference, not a phone number: "order 2125550123".
_REFERENCE_WORDS = frozenset({
    "order", "ord", "ref", "reference", "ticket", "case", "invoice", "inv", "tracking",
    "confirmation", "conf", "booking", "transaction", "txn", "receipt", "id", "po", "sku",
    "item", "claim"
})  # fmt: skip
_INTERNATIONAL_00 = re.compile(r"(?<![0-9+])00(?=[1-9])")
_SHORTEST_PHONE = 7  # digits; fewer is an extension, a PIN or an amount
_LONGEST_PHONE = 17  # digits: "00", a country code and 15 more (E.164)
# Characters around a number that libphonenumber reads to judge it: a "+" or "(" before, a
# letter that makes it part of a word, ":30" after that makes it a time stamp.
_PHONE_CONTEXT = 8
# Candidates libphonenumber reads in one number: a phone number said among others takes a few;
# two thousand digits in a row would take thousands, each a parse.
_PHONE_TRIES = 32


def mask_phones(scan: Scan, found: set[str], region: str) -> None:
    _mask_labelled_phones(scan, found)
    lengths = _national_lengths(region)
    for number in scan.numbers(PHONE_JOIN):
        if _may_hold_phone(scan.text, number, lengths):
            _mask_valid_phones(scan, found, region, number[0][0], number[-1][1])


@lru_cache(maxsize=16)
def _national_lengths(region: str) -> frozenset[int]:
    """How many digits a national number of `region` has, with its trunk prefix or without
    (libphonenumber's metadata: 10 or 11 in the US, 7-11 in Great Britain)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return frozenset()
    lengths = set(metadata.general_desc.possible_length)
    prefix = len(metadata.national_prefix or "")
    return frozenset(lengths | {length + prefix for length in lengths})


def _may_hold_phone(text: str, number: Number, lengths: frozenset[int]) -> bool:
    """Whether libphonenumber could find a phone number in these groups: international ("+",
    "00") with enough digits, or consecutive groups with as many digits as a national number
    has. A date (4-2-2) or an amount never has; asking libphonenumber costs far more."""
    start = number[0][0]
    sizes = group_sizes(number)
    if "+" in text[max(0, start - 2) : start] or text.startswith("00", start):
        return sum(sizes) >= _SHORTEST_PHONE
    for first in range(len(sizes)):
        total = 0
        for size in sizes[first:]:
            total += size
            if total in lengths:
                return True
            if total > _LONGEST_PHONE:
                break
    return False


def _mask_labelled_phones(scan: Scan, found: set[str]) -> None:
    """7-15 digits after a phone label are a phone number, valid or not ("555 0199")."""
    for label, number in _PHONE_LABEL.values(scan, PHONE_JOIN, _SHORTEST_PHONE):
        if word_before(scan.lowered, label.start()) in _REFERENCE_WORDS:
            continue  # "order number is 2125550123"
        value = leading_value(number, _SHORTEST_PHONE, 15)
        if value is None:
            continue
        said = scan.digits(*value)
        if scan.mask(label.start("lead"), value[1], "[phone]"):
            found.add(said)


def _mask_valid_phones(scan: Scan, found: set[str], region: str, first: int, last: int) -> None:
    """Masks what libphonenumber finds valid in the digits from `first` to `last`, read with the
    characters around them."""
    window = max(0, first - _PHONE_CONTEXT), last + _PHONE_CONTEXT
    for start, end, national in _valid_phones(scan.text, *window, region):
        raw = scan.text[start:end]
        if raw.isdigit() and _reference_near(scan.lowered, start, end):
            continue  # "order 2125550123"
        said = scan.digits(start, end)
        if scan.mask(start, end, "[phone]"):
            digits = {d for d in (said, *national) if len(d) >= _SHORTEST_PHONE}
            found.update(digits)
            scan.judged_alone.update(digits)


def _valid_phones(
    text: str, first: int, last: int, region: str
) -> Iterator[tuple[int, int, tuple[str, str]]]:
    """(start, end, its digits as said at home and abroad) of each number libphonenumber finds
    valid in text[first:last]; "0044 ..." is read as "+44 ..." (as long, so positions hold)."""
    said = text[first:last]
    international = _INTERNATIONAL_00.sub(" +", said)
    matcher = phonenumbers.PhoneNumberMatcher(
        international, region, leniency=phonenumbers.Leniency.VALID, max_tries=_PHONE_TRIES
    )
    for match in matcher:
        start = match.start
        if international[start] == "+" and said[start - 1 : start + 1] == "00":
            start -= 1
        national = str(match.number.national_number)
        yield first + start, first + match.end, (national, f"{match.number.country_code}{national}")


def _reference_near(lowered: str, start: int, end: int) -> bool:
    """A reference word among the three words before or the four after: "order 2125550123",
    "2125550123 is my order number"."""
    before = WORDS.findall(lowered, max(0, start - 32), start)[-3:]
    after = WORDS.findall(lowered, end, end + 40)[:4]
    return not _REFERENCE_WORDS.isdisjoint(before + after)
