"""Masks personal data in what a caller and an agent say, before it reaches the audit trail.

Pure: every pattern is compiled once here. Markers hold no digits except a card's or an SSN's
last four, and those are never enough to trigger a detector, so masking is idempotent.
Patterns start on a keyword, a `+` or a token boundary, and repeat only disjoint pieces, so
they stay linear on long input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class MaskingPolicy:
    emails: bool = True  # mask e-mail addresses
    phones: bool = True  # mask phone numbers
    auth_digits: bool = True  # at the AUTHENTICATION stage, mask every digit of the caller's words


class Masked(NamedTuple):
    text: str  # the masked text
    secrets: frozenset[str]  # the raw values masked, to hide them wherever they recur


MIN_SECRET = 3  # shorter values would mask unrelated text everywhere

_MARKER = r"\[(?:card [*\d]{8}|ssn \*{3}-\*{2}-[*\d]{4}|cvv|password|email|phone|secret)\]"
_IS_MARKER = re.compile(_MARKER)
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")  # "123456", "1 2 3 4 5 6", "1990-01-15"
_PASSWORD = re.compile(
    r"(\b(?:password|passcode|passwd|pass ?phrase)(?:\s+is\b\s*:?|\s*:|['\u2019]s\b)\s*)(\S+)", re.I
)
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
# Any grouping with single spaces or dashes; Luhn decides (see _mask_card).
_CARD = re.compile(r"(?<!\w)\d(?:[ -]?\d){12,18}(?!\w)")
_CARD_GROUP_END = re.compile(r"[ -]")
_SSN = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])")
# Nine bare digits are an SSN only a few words after "ssn" / "social"; the words hold no
# digits, so the context cannot jump over another number.
_SSN_SPOKEN = re.compile(r"(\b(?:ssn|social)\b(?:\W+[a-z]+){0,4}?\W+)(\d{9})(?!\w)", re.I)
_CVV = re.compile(
    r"(\b(?:cvv2?|cvc2?|cid|security\s+code|card\s+code"
    r"|card\s+verification(?:\s+(?:code|value|number))?)\b"
    r"(?:\s*(?:is\b|number\b|[:#-])){0,3}\s*)(\d{3,4})(?!\d)",
    re.I,
)
# A bare "code" needs "is" or ":" ("area code 415" is no secret); PIN and OTP do not.
_CODE = re.compile(
    r"(\b(?:(?:(?:one[- ]time|verification|access)\s+(?:pass)?code|otp|pin)"
    r"(?:\s+(?:code|number))?\b(?:\s+is\b)?(?:\s*[:#-])?|code(?:\s+is\b|\s*:))\s*)"
    r"(\d(?:[ -]?\d){2,7})(?!\d|[ -]\d)",
    re.I,
)
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d(?:[ .-]?\(?\d\)?){6,14}(?!\d)")
# Separators are required: ten bare digits look like an order number, 2024-01-15 like a date.
_PHONE_NORTH_AMERICAN = re.compile(
    r"(?<![\w+.-])(?:1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)"
)
_PHONE_SPOKEN = re.compile(
    r"(\b(?:(?:phone|mobile|cell)(?:\s+(?:phone|number)){0,2}\b(?:\s+is\b)?(?:\s*:)?"
    r"|number\s+is\b|call\s+me\s+at\b)\s*)(1?\d{10})(?!\d)",
    re.I,
)
_TRAILING = ".,!?;:\"'"
# Possessive: from a digit, on to the next one without backtracking.
_THREE_DIGITS = re.compile(r"\d\D*+\d\D*+\d")


def _maybe_personal(text: str) -> bool:
    """Whether any detector above could match: each needs a password keyword, an "@" or three
    digits. Text with none (most of what callers and agents say: ids, states, plain words,
    "order 7") is left as it is after this one check instead of ten scans: two str methods
    and a regex that cannot backtrack, about half the cost of one case-insensitive regex."""
    return (
        "@" in text
        or "pass" in text.casefold()  # casefold, as re.I reads it: "pa\u017fs" too
        or _THREE_DIGITS.search(text) is not None
    )


def mask_caller_words(text: str, policy: MaskingPolicy, *, authentication: bool = False) -> Masked:
    found: set[str] = set()
    masked = _detect(text, policy, found)
    if authentication and policy.auth_digits:
        masked = _DIGIT_RUN.sub(lambda m: _record(m[0], found, _stars(m[0])), masked)
    return Masked(masked, frozenset(filter(_worth_hiding, found)))


def mask_text(text: str, policy: MaskingPolicy, secrets: frozenset[str] = frozenset()) -> str:
    return _mask(text, policy, _secret_pattern(secrets))


def mask_json(value: Any, policy: MaskingPolicy, secrets: frozenset[str] = frozenset()) -> Any:
    return _walk(value, policy, _secret_pattern(secrets))


def _walk(value: Any, policy: MaskingPolicy, secrets: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _mask(value, policy, secrets)
    if isinstance(value, dict):
        return {key: _walk(item, policy, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(item, policy, secrets) for item in value)
    return value


def _mask(text: str, policy: MaskingPolicy, secrets: re.Pattern[str] | None) -> str:
    masked = _detect(text, policy, set())
    return secrets.sub(_hide_secret, masked) if secrets else masked


def _detect(text: str, policy: MaskingPolicy, found: set[str]) -> str:
    if not _maybe_personal(text):
        return text
    # Passwords first: the token is opaque and may hold digits or an "@".
    text = _PASSWORD.sub(lambda m: _mask_password(m, found), text)
    if policy.emails:
        text = _EMAIL.sub(lambda m: _record(m[0], found, "[email]"), text)
    text = _CARD.sub(lambda m: _mask_card(m[0], found), text)
    text = _SSN.sub(lambda m: _mask_ssn(m[0], found), text)
    text = _SSN_SPOKEN.sub(lambda m: m[1] + _mask_ssn(m[2], found), text)
    # CVV before codes: "security code is 321" is a CVV, "security code is 123456" a code.
    text = _CVV.sub(lambda m: m[1] + _record(m[2], found, "[cvv]"), text)
    text = _CODE.sub(lambda m: m[1] + _record(m[2], found, _stars(m[2])), text)
    if policy.phones:
        text = _PHONE_INTERNATIONAL.sub(lambda m: _record(m[0], found, "[phone]"), text)
        text = _PHONE_NORTH_AMERICAN.sub(lambda m: _record(m[0], found, "[phone]"), text)
        text = _PHONE_SPOKEN.sub(lambda m: m[1] + _record(m[2], found, "[phone]"), text)
    return text


def _record(raw: str, found: set[str], replacement: str) -> str:
    found.add(raw)
    return replacement


def _worth_hiding(secret: str) -> bool:
    if _DIGIT_RUN.fullmatch(secret):  # "1 2" is two digits, not a code
        return len(_DIGIT.findall(secret)) >= MIN_SECRET
    return len(secret) >= MIN_SECRET


def _stars(raw: str) -> str:
    return _DIGIT.sub("*", raw)


def _mask_password(m: re.Match[str], found: set[str]) -> str:
    # Quotes and sentence punctuation around the token stay in the text, out of the secret.
    lead, token = m[1], m[2]
    start = len(token) - len(token.lstrip("\"'"))
    end = len(token.rstrip(_TRAILING))
    if end <= start or _IS_MARKER.fullmatch(token[start:end]):  # nothing left, or masked
        return m[0]
    return lead + token[:start] + _record(token[start:end], found, "[password]") + token[end:]


def _mask_card(raw: str, found: set[str]) -> str:
    # The greedy match may swallow a trailing group ("4111 1111 1111 1111 123"): try each
    # group boundary, longest first, and keep what follows the card.
    ends = [len(raw), *(m.start() for m in _CARD_GROUP_END.finditer(raw))]
    for end in sorted(ends, reverse=True):
        digits = "".join(_DIGIT.findall(raw[:end]))
        if 13 <= len(digits) <= 19 and _luhn_valid(digits):
            return _record(raw[:end], found, f"[card ****{digits[-4:]}]") + raw[end:]
    return raw


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _mask_ssn(raw: str, found: set[str]) -> str:
    digits = "".join(_DIGIT.findall(raw))
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    # SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000.
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return raw
    return _record(raw, found, f"[ssn ***-**-{serial}]")


def _secret_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    usable = sorted(filter(_worth_hiding, secrets), key=lambda s: (-len(s), s))
    if not usable:
        return None
    # Markers come first so that a secret never matches inside one: masking stays idempotent.
    return re.compile("|".join([f"(?P<marker>{_MARKER})", *map(_secret_regex, usable)]))


def _secret_regex(secret: str) -> str:
    if _DIGIT_RUN.fullmatch(secret):
        # The same digits as a whole number, however spaced: "123456", "123 456", "1-2-3-4-5-6".
        return r"(?<!\d)" + "[ -]?".join(_DIGIT.findall(secret)) + r"(?!\d)"
    return r"(?<!\w)" + re.escape(secret) + r"(?!\w)"


def _hide_secret(m: re.Match[str]) -> str:
    if m["marker"]:
        return m[0]
    return _stars(m[0]) if _DIGIT_RUN.fullmatch(m[0]) else "[secret]"
