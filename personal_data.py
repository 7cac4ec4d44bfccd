"""The detectors of personal data, each masking what it finds in a `Scan` of one text.

masking.py says what each detector takes and what it leaves, and runs them in order. A detector
reads the normalised text (normalise.py); keyword patterns read it lowered, without re.I
(case-insensitive alternations cost several times as much). What a detector masks is blanked
out for the ones after it, and its raw value is added to `found` (a number as its digits).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from normalise import Normalised, lower, normalise

MIN_SECRET = 3  # shorter values would mask unrelated text everywhere

Group = tuple[int, int]  # a run of digits: (start, end) in the normalised text
Number = list[Group]  # groups joined by separators

_BLANK = "\x00"  # stands in for a masked stretch: no digit, no word, no separator
_MARKER = re.compile(
    r"\[(?:card [*\d]{8}|ssn \*{3}-\*{2}-[*\d]{4}|cvv|password|email|phone|secret)\]"
)
_GROUP = re.compile(r"[0-9]+")
_DIGIT = re.compile(r"[0-9]")
# Separators inside one number: "4111 1111", "4111-1111", "123.45.6789", "15 / 01", "48, 29".
JOIN = re.compile(r"\s{0,3}[-./]?\s{0,3}|\s{0,2},\s{1,3}")
# A phone number's: "(415) 555-0100", "+44 (0)20 7946 0958", "415, 555, 0100".
_PHONE_JOIN = re.compile(r"[\s().,\-/]{1,4}")
# An agent repeating a value may put anything short between its pieces: "4111, 1111", "48 - 29".
_REPEAT_JOIN = re.compile(r"[^\w\x00]{1,4}")
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
        if end <= start or _BLANK in self.text[start:end]:
            return False
        self.spans.append((start, end, replacement))
        self.blank(start, end)
        return True

    def blank(self, start: int, end: int) -> None:
        blank = _BLANK * (end - start)
        self.text = self.text[:start] + blank + self.text[end:]
        self.lowered = self.lowered[:start] + blank + self.lowered[end:]
        # A blank only parts numbers (it is no separator), so they are cut, not found again.
        for join, numbers in self._numbers.items():
            self._numbers[join] = _cut(numbers, start, end)
        self._after.clear()

    def stars(self, start: int, end: int) -> str:
        return _DIGIT.sub("*", self.normalised.text[start:end])

    def digits(self, start: int, end: int) -> str:
        return "".join(_GROUP.findall(self.text, start, end))

    def numbers(self, join: re.Pattern[str]) -> list[Number]:
        """The digit groups gathered into numbers: consecutive groups with `join` between."""
        if join not in self._numbers:
            numbers: list[Number] = []
            for group in _GROUP.finditer(self.text):
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
    one of `first_words` stands (found with str.find): patterns that may start anywhere and
    must be tried at every position cost several times as much."""

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
        positions = _positions(scan.lowered, self.first_words)
        if not positions:
            return
        after = scan.from_group(join)
        for position in positions:
            if position and scan.lowered[position - 1].isalpha():  # "spin", "opinion"
                continue
            match = self.pattern.match(scan.lowered, position)
            if match is not None and match.end() in after:
                yield match, after[match.end()]


def _positions(text: str, needles: tuple[str, ...]) -> list[int]:
    """Where each needle occurs in the text, in order."""
    positions = set()
    for needle in needles:
        position = text.find(needle)
        while position >= 0:
            positions.add(position)
            position = text.find(needle, position + 1)
    return sorted(positions)


def _lengths(groups: Number) -> list[int]:
    return [end - start for start, end in groups]


def _value(number: Number, fewest: int, most: int) -> Group | None:
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


# --- what the caller said, repeated -----------------------------------------------------------


def mask_repeats(scan: Scan, numbers: frozenset[str], longest: int) -> None:
    """Masks each run of groups whose digits together are one of `numbers`, whatever was put
    between them ("48, 29, 13" for 482913)."""
    for number in scan.numbers(_REPEAT_JOIN):
        first = 0
        while first < len(number):
            last = _longest_known(scan.text, number, first, numbers, longest)
            if last is None:
                first += 1
                continue
            start, end = number[first][0], number[last][1]
            scan.mask(start, end, scan.stars(start, end))
            first = last + 1


def _longest_known(
    text: str, number: Number, first: int, numbers: frozenset[str], longest: int
) -> int | None:
    digits, found = "", None
    for index in range(first, len(number)):
        start, end = number[index]
        digits += text[start:end]
        if len(digits) > longest:
            break
        if digits in numbers:
            found = index
    return found


def mask_words(scan: Scan, words: re.Pattern[str]) -> None:
    """Masks the caller's e-mail addresses and passwords where they recur (lower case)."""
    for match in words.finditer(scan.lowered):
        scan.mask(*match.span(), "[secret]")


# --- passwords and e-mail addresses ------------------------------------------------------------

_NOT_LETTER_AFTER = r"(?![^\W\d_])"
# Starts on its keyword's first letter, which lets the engine skip along the text fast; the
# letter before it is checked after ("bypass: no").
_PASSWORD = re.compile(
    r"(?:pass(?:word|wd|code|phrase)s?|pass[\s-](?:word|phrase)|pwd|pw|pass(?=\s*[:=]))"
    + _NOT_LETTER_AFTER
    + r"(?:(?P<said>(?:\s+(?:for|to|on|of|at|in|with)(?:\s+[^\s:=]+){1,3}?)?"
    r"\s*(?:[:=]|\bis\b|\bwas\b|'s\b)\s*(?:[:=]\s*)?)|(?P<bare>\s+))"
    r"(?P<token>\"[^\"\n]{1,100}\"|'[^'\n]{1,100}'|\S+)"
)
# What follows "password is" without being one: "my password was reset".
_STATUS_WORDS = frozenset({
    "reset", "changed", "updated", "expired", "wrong", "incorrect", "correct", "invalid",
    "valid", "required", "not", "too", "the", "a", "an", "now", "still", "being", "set", "sent",
    "locked", "blocked", "weak", "strong", "ok", "okay", "fine", "missing", "empty",
    "case-sensitive"
})  # fmt: skip
_TRAILING = ".,!?;:\"'"
_CREDENTIAL_LOOK = re.compile(r"[\W\d_]|.[A-Z]")


def mask_passwords(scan: Scan, found: set[str]) -> None:
    if not scan.has("pass", "pw"):
        return
    for match in _PASSWORD.finditer(scan.lowered):
        if match.start() and scan.lowered[match.start() - 1].isalpha():
            continue
        start, end = match.span("token")
        token = scan.text[start:end]
        if token[0] in "\"'" and len(token) > 1 and token[-1] == token[0]:
            start, end = start + 1, end - 1  # a quoted pass phrase, spaces and all
        else:
            start += len(token) - len(token.lstrip("\"'"))
            end -= len(token) - len(token.rstrip(_TRAILING))
        if scan.text[start:end].isdigit():  # a numeric passcode, however grouped: "482 913"
            end = scan.from_group(JOIN).get(start, [(start, end)])[-1][1]
        value = scan.text[start:end]
        if not value or _BLANK in value or value.lower() in _STATUS_WORDS:
            continue
        if match["bare"] is not None and not _CREDENTIAL_LOOK.search(value):
            continue  # "password reset": a word, not a password
        if scan.mask(start, end, "[password]"):
            record(found, value)


# Word characters with the combining marks of Latin and Indic scripts, which \w leaves out.
_LOCAL_CHAR = r"[\w\u0300-\u036f\u0900-\u0dff.%+-]"
_DOMAIN_CHAR = r"[\w\u0300-\u036f\u0900-\u0dff-]"
_LETTER = r"(?:[^\W\d_]|[\u0300-\u036f\u0900-\u0dff])"  # a top-level domain's: "com", "भारत"
# An address is found from its "@": the domain after it, then the local part before it.
_EMAIL_DOMAIN = re.compile(
    rf"@{_DOMAIN_CHAR}+(?:\.{_DOMAIN_CHAR}+)*\.(?:{_LETTER}{{2,}}|xn--[\w-]+)(?![\w-])"
)
_EMAIL_LOCAL = re.compile(rf"{_LOCAL_CHAR}+\Z")
_LONGEST_LOCAL = 64  # characters, as RFC 5321 allows
_TLD = (
    r"(?:com|org|net|edu|gov|mil|int|info|biz|io|co|me|tv|app|dev|us|uk|ca|au|nz|ie|de|fr|es|it"
    r"|nl|be|ch|at|se|no|dk|fi|pl|pt|br|mx|ar|in|jp|cn|kr|ru)"
)
# A spoken address is found from its " at <domain> dot <tld>", then its local part before it.
_SPOKEN_AT = (" at ", "(at)", "[at]")
_SPOKEN_DOMAIN = re.compile(
    r"\s*(?:at|\(at\)|\[at\])\s+[\w-]+(?:(?:\s+dot\s+|\.)[\w-]+){0,3}?"
    rf"(?:\s+dot\s+|\.){_TLD}\b"
)
_SPOKEN_LOCAL = re.compile(
    r"(?<![\w.%+-])[\w%+-]+(?:(?:\.|\s+(?:dot|underscore|dash|hyphen)\s+)[\w%+-]+){0,4}\s*\Z"
)
_LONGEST_SPOKEN_LOCAL = 100
_SPOKEN_PARTS = re.compile(r"\s*\b(dot|at|underscore|dash|hyphen)\b\s*|\s+")
_WRITTEN = {"dot": ".", "at": "@", "underscore": "_", "dash": "-", "hyphen": "-", None: ""}


def mask_emails(scan: Scan, found: set[str]) -> None:
    for at in _positions(scan.text, ("@",)):
        domain = _EMAIL_DOMAIN.match(scan.text, at)
        local = _EMAIL_LOCAL.search(scan.text, max(0, at - _LONGEST_LOCAL), at)
        if domain is None or local is None:
            continue
        said = scan.text[local.start() : domain.end()]
        if scan.mask(local.start(), domain.end(), "[email]"):
            record(found, said)
    for at in _positions(scan.lowered, _SPOKEN_AT):
        domain = _SPOKEN_DOMAIN.match(scan.lowered, at)
        if domain is None:
            continue
        local = _SPOKEN_LOCAL.search(scan.lowered, max(0, at - _LONGEST_SPOKEN_LOCAL), at)
        # One "dot" said, or a dotted local part, tells it from "log in at example.com".
        if local is None or (" dot " not in domain[0] and "." not in local[0]):
            continue
        said = scan.lowered[local.start() : domain.end()]
        if scan.mask(local.start(), domain.end(), "[email]"):
            record(found, said)
            record(found, _SPOKEN_PARTS.sub(lambda part: _WRITTEN[part[1]], said))


def record(found: set[str], value: str) -> None:
    """Keeps a masked value to hide it where it recurs: a number as its digits."""
    if any(char.isalpha() for char in value):
        if len(value) >= MIN_SECRET:
            found.add(value)
        return
    digits = "".join(_GROUP.findall(value))
    if len(digits) >= MIN_SECRET:
        found.add(digits)


# --- cards and SSNs ---------------------------------------------------------------------------

# Issuers' first digits: Mastercard 2221-2720, Amex/Diners/JCB 3, Visa 4, Mastercard 5, others 6.
_CARD_PREFIX = re.compile(r"2(?:22[1-9]|2[3-9]|[3-6]|7[01]|720)|[3-6]")
_CURRENCY = frozenset("$€£¥₹₩₽")


def mask_cards(scan: Scan, found: set[str], *, last_four: bool) -> None:
    for number in scan.numbers(JOIN):
        first = 0
        while first < len(number):
            last = _longest_card(scan, number, first)
            if last is None:
                first += 1
                continue
            start, end = number[first][0], number[last][1]
            digits = scan.digits(start, end)
            scan.mask(start, end, f"[card ****{digits[-4:] if last_four else '****'}]")
            found.add(digits)
            first = last + 1


def _longest_card(scan: Scan, number: Number, first: int) -> int | None:
    start = number[first][0]
    if _CURRENCY.intersection(scan.text[max(0, start - 3) : start]):  # "$4,111 ...": money
        return None
    digits, cards = "", []
    for index in range(first, len(number)):
        digits += scan.text[number[index][0] : number[index][1]]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and _CARD_PREFIX.match(digits) and _luhn_valid(digits):
            cards.append(index)
    for last in reversed(cards):
        if _card_grouping(scan.text, number[first : last + 1]):
            return last
    return None


def _card_grouping(text: str, groups: Number) -> bool:
    """Whether commas, if any, split the digits as cards are printed: 4-4-4-4 (and a short last
    part), 4-6-5 or 4-6-4. "4111, 1111, 1111, 1111" is a card; "4417, 55, 6678 ..." a list."""
    parts = [groups[0][1] - groups[0][0]]
    for (_, end), (start, stop) in itertools.pairwise(groups):
        if "," in text[end:start]:
            parts.append(0)
        parts[-1] += stop - start
    if len(parts) == 1:
        return True
    return parts[:-1] == [4] * (len(parts) - 1) or parts in ([4, 6, 5], [4, 6, 4])


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


_SSN_LABEL = Label(
    re.compile(
        r"(?:ssn|s\.\s?s\.\s?n\.?|s\s+s\s+n|social(?:\s+security)?)"
        + _NOT_LETTER_AFTER
        + r"(?:\W+[a-z']+){0,4}?[\W_]*(?=[0-9])"
    ),
    ("ssn", "s.", "s s n", "social"),
)


def mask_ssns(scan: Scan, found: set[str], *, last_four: bool) -> None:
    for number in scan.numbers(JOIN):
        for first in range(len(number) - 2):
            groups = number[first : first + 3]
            if _lengths(groups) == [3, 2, 4] and _stands_alone(scan.text, number, first, 3):
                _mask_ssn(scan, found, groups[0][0], groups[-1][1], last_four)
    for _, number in _SSN_LABEL.values(scan, JOIN, 9):
        value = _value(number, 9, 9)
        if value:
            _mask_ssn(scan, found, *value, last_four)


def _stands_alone(text: str, number: Number, first: int, count: int) -> bool:
    """Whether number[first:first + count] is the whole number, or set off by commas."""
    last = first + count - 1
    before = first == 0 or "," in text[number[first - 1][1] : number[first][0]]
    after = last == len(number) - 1 or "," in text[number[last][1] : number[last + 1][0]]
    return before and after


def _mask_ssn(scan: Scan, found: set[str], start: int, end: int, last_four: bool) -> None:
    digits = scan.digits(start, end)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    # SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000.
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return
    if scan.mask(start, end, f"[ssn ***-**-{serial if last_four else '****'}]"):
        found.add(digits)


# --- labelled values: CVVs, codes, PINs --------------------------------------------------------

# Words that may stand between a label and its value: "my pin's 4321", "the code was 482913",
# "the three digits on the back are 123", "cvv=123". Bounded, so a failed try costs little.
_FILLER = (
    r"(?:[\s:=#'.,\-]*(?:is|was|are|were|s|it's|its|number|no|code|value|digits?|of|on|for"
    r"|the|my|your|this|that|card|back|reads|says|please|then|be|will|would|should|just|here"
    r"|again|now|new|verification|security)\b){0,5}[\s:=#'.,\-]*"
)
_CVV = Label(
    re.compile(
        r"(?:cvv2?|cvc2?|cvn|cid|csc|card\s+verification(?:\s+(?:code|value|number))?"
        r"|verification\s+value|(?:card\s+)?security\s+code|card\s+code"
        r"|digits\s+on\s+the\s+back|back\s+of\s+(?:the|my|your)\s+card)"
        + _NOT_LETTER_AFTER
        + _FILLER
        + r"(?=[0-9])"
    ),
    ("cvv", "cvc", "cvn", "cid", "csc", "card", "verification", "security", "digits", "back"),
)
_CODE = Label(
    re.compile(
        r"(?:otp|(?:one|1)[\s-]?time\s+(?:pass\s*)?(?:code|pin)"
        r"|(?:verification|access|auth(?:entication|ori[sz]ation)?|security|sms|text|login"
        r"|sign[\s-]?in|2fa|mfa|one[\s-]?time)\s+code|pin(?:\s+(?:code|number|no))?"
        r"|(?P<bare>code))" + _NOT_LETTER_AFTER + _FILLER + r"(?=[0-9])"
    ),
    ("otp", "one", "1-time", "1 time", "verification", "access", "auth", "security", "sms",
     "text", "login", "sign", "2fa", "mfa", "pin", "code"),
)  # fmt: skip
# "area code 415" or "error code 500" names no secret.
_NOT_SECRET_CODES = frozenset({
    "area", "zip", "postal", "post", "country", "dialing", "dialling", "dial", "error", "status",
    "reason", "response", "http", "exit", "return", "product", "promo", "promotional",
    "discount", "coupon", "voucher", "gift", "tracking", "reference", "ref", "confirmation",
    "booking", "order", "airport", "currency", "language", "tax", "sort", "routing", "swift",
    "branch", "source", "bar", "qr", "item", "sku"
})  # fmt: skip
_WORDS = re.compile(r"[a-z]+")


def mask_cvvs(scan: Scan, found: set[str]) -> None:
    _mask_labelled(scan, found, _CVV, (3, 4), lambda start, end: "[cvv]")


def mask_codes(scan: Scan, found: set[str]) -> None:
    _mask_labelled(scan, found, _CODE, (MIN_SECRET, 8), scan.stars)


def _mask_labelled(
    scan: Scan,
    found: set[str],
    label: Label,
    digits: tuple[int, int],
    replacement: Callable[[int, int], str],
) -> None:
    for match, number in label.values(scan, JOIN, digits[0]):
        if match.groupdict().get("bare") and _word_before(scan.lowered, match.start()) in (
            _NOT_SECRET_CODES
        ):
            continue
        value = _value(number, *digits)
        if value is None:
            continue
        said = scan.digits(*value)
        if scan.mask(*value, replacement(*value)):
            found.add(said)


def _word_before(lowered: str, position: int) -> str:
    words = _WORDS.findall(lowered, max(0, position - 24), position)
    return words[-1] if words else ""


# --- phone numbers ----------------------------------------------------------------------------

_PHONE_LABEL = Label(
    re.compile(
        r"(?:(?:tele)?phone|mobile|cell(?:phone)?|tel|fax|whatsapp"
        r"|(?:text|call|reach|ring|contact)\s+me|number\s+is)"
        + _NOT_LETTER_AFTER
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
    for number in scan.numbers(_PHONE_JOIN):
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
    sizes = _lengths(number)
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
    for label, number in _PHONE_LABEL.values(scan, _PHONE_JOIN, _SHORTEST_PHONE):
        if _word_before(scan.lowered, label.start()) in _REFERENCE_WORDS:
            continue  # "order number is 2125550123"
        value = _value(number, _SHORTEST_PHONE, 15)
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
    before = _WORDS.findall(lowered, max(0, start - 32), start)[-3:]
    after = _WORDS.findall(lowered, end, end + 40)[:4]
    return not _REFERENCE_WORDS.isdisjoint(before + after)


# --- every digit, at AUTHENTICATION -------------------------------------------------------------


def mask_every_digit(scan: Scan, found: set[str]) -> None:
    for number in scan.numbers(JOIN):
        start, end = number[0][0], number[-1][1]
        said = [scan.digits(start, end), *(scan.text[s:e] for s, e in number)]
        scan.mask(start, end, scan.stars(start, end))
        found.update(digits for digits in said if len(digits) >= MIN_SECRET)
