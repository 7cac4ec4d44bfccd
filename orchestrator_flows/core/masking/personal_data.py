"""The detectors of personal data but phone numbers (phones.py), each masking what it finds in
a `Scan` of one text. mask.py says what each takes and what it leaves, and runs them in order.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from orchestrator_flows.core.masking.scan import (
    BLANK,
    JOIN,
    MIN_SECRET,
    NOT_LETTER_AFTER,
    REPEAT_JOIN,
    Label,
    Number,
    Scan,
    find_all,
    group_sizes,
    leading_value,
    record,
    word_before,
)

# --- what the caller said, repeated -----------------------------------------------------------


def mask_repeats(scan: Scan, numbers: frozenset[str], longest: int) -> None:
    """Masks each run of groups whose digits together are one of `numbers`, whatever was put
    between them ("48, 29, 13" for 482913)."""
    for number in scan.numbers(REPEAT_JOIN):
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


def mask_words(scan: Scan, words: tuple[str, ...]) -> None:
    """Masks the caller's e-mail addresses and passwords (lowered, the longest first) where
    they recur in any case, as whole words: "hunter2" is not in "hunter22"."""
    for word in words:
        edges = _is_word_char(word[0]), _is_word_char(word[-1])
        for start in find_all(scan.lowered, (word,)):
            end = start + len(word)
            if edges[0] and start and _is_word_char(scan.lowered[start - 1]):
                continue
            if edges[1] and end < len(scan.lowered) and _is_word_char(scan.lowered[end]):
                continue
            scan.mask(start, end, "[secret]")


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


# --- passwords and e-mail addresses ------------------------------------------------------------

# Starts on its keyword's first letter, which lets the engine skip along the text fast; the
# letter before it is checked after ("bypass: no").
_PASSWORD = re.compile(
    r"(?:pass(?:word|wd|code|phrase)s?|pass[\s-](?:word|phrase)|pwd|pw|pass(?=\s*[:=]))"
    + NOT_LETTER_AFTER
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
        if not value or BLANK in value or value.lower() in _STATUS_WORDS:
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
    for at in find_all(scan.text, ("@",)):
        domain = _EMAIL_DOMAIN.match(scan.text, at)
        local = _EMAIL_LOCAL.search(scan.text, max(0, at - _LONGEST_LOCAL), at)
        if domain is None or local is None:
            continue
        said = scan.text[local.start() : domain.end()]
        if scan.mask(local.start(), domain.end(), "[email]"):
            record(found, said)
    for at in find_all(scan.lowered, _SPOKEN_AT):
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
        + NOT_LETTER_AFTER
        + r"(?:\W+[a-z']+){0,4}?[\W_]*(?=[0-9])"
    ),
    ("ssn", "s.", "s s n", "social"),
)


def mask_ssns(scan: Scan, found: set[str], *, last_four: bool) -> None:
    for number in scan.numbers(JOIN):
        for first in range(len(number) - 2):
            groups = number[first : first + 3]
            if group_sizes(groups) == [3, 2, 4] and _stands_alone(scan.text, number, first, 3):
                _mask_ssn(scan, found, groups[0][0], groups[-1][1], last_four)
    for _, number in _SSN_LABEL.values(scan, JOIN, 9):
        value = leading_value(number, 9, 9)
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
        + NOT_LETTER_AFTER
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
        r"|(?P<bare>code))" + NOT_LETTER_AFTER + _FILLER + r"(?=[0-9])"
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
        if match.groupdict().get("bare") and word_before(scan.lowered, match.start()) in (
            _NOT_SECRET_CODES
        ):
            continue
        value = leading_value(number, *digits)
        if value is None:
            continue
        said = scan.digits(*value)
        if scan.mask(*value, replacement(*value)):
            found.add(said)


# --- every digit, at AUTHENTICATION -------------------------------------------------------------


def mask_every_digit(scan: Scan, found: set[str]) -> None:
    for number in scan.numbers(JOIN):
        start, end = number[0][0], number[-1][1]
        said = [scan.digits(start, end), *(scan.text[s:e] for s, e in number)]
        scan.mask(start, end, scan.stars(start, end))
        found.update(digits for digits in said if len(digits) >= MIN_SECRET)
