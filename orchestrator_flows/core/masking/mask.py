"""Masks personal data in what a caller and an agent say, before it reaches the audit trail.

Pure. The detectors live in personal_data.py and phones.py, reading a `Scan` (scan.py); this
module runs them in order and hides what the caller said wherever it recurs.

**Reading.** Detectors read the text as `normalise` (normalise.py) spells it: Unicode digits as
ASCII, digits said as words as digits ("four one one one" -> "4 1 1 1"), format characters
(zero-width spaces, soft hyphens) gone, every dash as "-". What they find is replaced in the
text as it was said: outside a masked stretch the text is kept exactly as written; a masked
stretch becomes its marker, or, for codes, PINs and digits at AUTHENTICATION, its normalised
spelling with every digit as "*" ("four one two three" -> "* * * *", fullwidth "4829" -> "****").

**Digit groups.** A group is a run of digits, whatever letters it is glued to ("card_4111...",
"exp1226"). A number is groups joined by separators: up to three whitespace characters (space,
tab, newline, NBSP) around at most one "-", "." or "/", or a comma followed by whitespace.

**What is masked**, in this order (a stretch masked once is not read again):
- what the caller said that was masked (in the agent's answer): a number wherever its digits
  recur as consecutive groups, whatever separates them ("48, 29, 13" for 482913), each digit as
  "*"; an e-mail address or a password in any case, as "[secret]";
- passwords: the token after password/passcode/passphrase/passwd/pwd/pw followed by "is",
  "was", "'s", ":" or "=", also after "for the app"-like words ("password for the app is X"),
  or right after the keyword when it holds a digit, a symbol or an inner capital
  ("password Hunter2"), unless it is a status word ("password reset");
- e-mail addresses (Unicode local parts and domains, a fullwidth at sign), and spoken ones
  with "dot" or a dotted local part: "john dot doe at example dot com", "jane.doe at
  example.com";
- payment cards: 13-19 digits in any grouping, Luhn-valid, starting as issuers do (2221-2720,
  3, 4, 5, 6); comma-joined groups only in card groupings (4-4-4-4, 4-6-5); not after a
  currency sign;
- SSNs: 3-2-4 digits with any separators, standing alone, with SSA-valid parts; any other
  grouping of nine digits (3-6, spaced, spelled) after "SSN", "S.S.N." or "social";
- CVVs (3-4 digits), then one-time codes, OTPs, PINs and codes (3-8 digits), each after its
  label and a few filler words ("cvv 1 2 3", "the three digits on the back are 123",
  "my pin's 4321", "the code was 482913");
- phone numbers: 7-15 digits after a phone label ("phone", "call me at", ...), and whatever
  libphonenumber finds valid for `MaskingPolicy.phone_region` or in international form ("+",
  "00"), unless a bare digit string stands next to a reference word (order, ref, invoice, ...);
- what the detectors above found, where it recurs later in the same text without its label
  ("code is 482913, I repeat: 48 29 13"); not a phone number found by libphonenumber alone,
  which each occurrence is judged for in its own context;
- every digit the caller says at AUTHENTICATION (`auth_digits`).
The raw values found are returned as secrets (digits only for numbers) for the agent's answer.
In JSON, the value under a key such as "password", "pin", "otp" or "cvv" is masked whatever
it is, and a number equal to a secret becomes its stars.

**What stays readable**: order and reference numbers (they carry no label; they are masked only
when Luhn-valid with an issuer's prefix, in an SSN's 3-2-4 shape, or a valid phone number with
no reference word next to it); amounts (a currency sign stops the card rule, and "1,250" does
not join: a comma joins only with a space after it); dates and times (no detector takes 2-2-4,
4-2-2 or hh:mm, libphonenumber refuses them, and the code rules need a label right before the
digits). At AUTHENTICATION all of the caller's digits are masked regardless.

Masking is idempotent: markers hold no digits but a card's or an SSN's last four, which are never
read again; codes become "*". Every pattern is tried only where its first word or character
stands and repeats only disjoint pieces or a bounded number of times, groups are joined in one
pass, and libphonenumber reads a bounded number of candidates per number, so a text is masked in
linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from orchestrator_flows.core.masking import personal_data as detect
from orchestrator_flows.core.masking.normalise import lower, normalise
from orchestrator_flows.core.masking.phones import mask_phones
from orchestrator_flows.core.masking.scan import MIN_SECRET, Scan

__all__ = ["MIN_SECRET", "Masked", "MaskingPolicy", "mask_caller_words", "mask_json", "mask_text"]


@dataclass(frozen=True)
class MaskingPolicy:
    emails: bool = True  # mask e-mail addresses
    phones: bool = True  # mask phone numbers
    auth_digits: bool = True  # at the AUTHENTICATION stage, mask every digit of the caller's words
    phone_region: str = "US"  # the country whose national numbers ("(415) 555-0100") are phones


class Masked(NamedTuple):
    text: str  # the masked text
    # The values masked, to hide them wherever they recur: a number as its digits, else the text.
    secrets: frozenset[str]


def mask_caller_words(text: str, policy: MaskingPolicy, *, authentication: bool = False) -> Masked:
    found: set[str] = set()
    every_digit = authentication and policy.auth_digits
    scan = _scan(text, policy, _Known.of(frozenset()), found, every_digit=every_digit)
    return Masked(text if scan is None else scan.result(), frozenset(found))


def mask_text(text: str, policy: MaskingPolicy, secrets: frozenset[str] = frozenset()) -> str:
    return _mask(text, policy, _Known.of(secrets))


def mask_json(value: Any, policy: MaskingPolicy, secrets: frozenset[str] = frozenset()) -> Any:
    return _walk(value, policy, _Known.of(secrets))


def _mask(text: str, policy: MaskingPolicy, known: _Known) -> str:
    scan = _scan(text, policy, known, set(), every_digit=False)
    return text if scan is None else scan.result()


_THREE_DIGITS = re.compile(r"[0-9][^0-9]*+[0-9][^0-9]*+[0-9]")  # possessive: cannot backtrack
_ANY_DIGIT = re.compile(r"[0-9]")


def _scan(
    text: str, policy: MaskingPolicy, known: _Known, found: set[str], *, every_digit: bool
) -> Scan | None:
    """The text with every detector run over it, in order; None if none could match."""
    normalised = normalise(text)
    if not _could_hold(normalised.text, every_digit) and not known.words:
        return None
    scan = Scan(text, normalised)
    known.mask_in(scan)
    detect.mask_passwords(scan, found)
    if policy.emails:
        detect.mask_emails(scan, found)
    if _THREE_DIGITS.search(scan.text):
        detect.mask_cards(scan, found, last_four=not every_digit)
        detect.mask_ssns(scan, found, last_four=not every_digit)
        detect.mask_cvvs(scan, found)  # first: "security code is 321" is a CVV ...
        detect.mask_codes(scan, found)  # ... "security code is 123456" a code
        if policy.phones:
            mask_phones(scan, found, policy.phone_region)
    if found - scan.judged_alone:  # a value said twice, the second time without its label
        _Known.of(frozenset(found - scan.judged_alone)).mask_in(scan)
    if every_digit:
        detect.mask_every_digit(scan, found)
    return scan


def _could_hold(text: str, every_digit: bool) -> bool:
    """Whether any detector could match: each needs an "@", a password keyword, a spoken
    e-mail's "at", or three digits (spelled-out and Unicode digits are ASCII digits by now).
    Most of what callers and agents say has none and is left as it is after this check."""
    if "@" in text or (_ANY_DIGIT if every_digit else _THREE_DIGITS).search(text):
        return True
    lowered = text.lower()
    return "pass" in lowered or "pw" in lowered or " at " in lowered or "(at)" in lowered


@dataclass(frozen=True, slots=True)
class _Known:
    """What the caller said that was masked, ready to be looked for in the rest of the turn.
    Built for each turn and dropped with it: no cache (re's included) keeps a secret longer."""

    numbers: frozenset[str]
    longest: int
    words: tuple[str, ...]  # lowered, the longest first

    @staticmethod
    def of(secrets: frozenset[str]) -> _Known:
        if not secrets:
            return _NOTHING_KNOWN
        numbers = frozenset(s for s in secrets if s.isdigit() and len(s) >= MIN_SECRET)
        words = {lower(s) for s in secrets if not s.isdigit() and len(s) >= MIN_SECRET}
        return _Known(
            numbers,
            max(map(len, numbers), default=0),
            tuple(sorted(words, key=lambda word: (-len(word), word))),
        )

    def mask_in(self, scan: Scan) -> None:
        if self.words:
            detect.mask_words(scan, self.words)
        if self.numbers:
            detect.mask_repeats(scan, self.numbers, self.longest)


_NOTHING_KNOWN = _Known(frozenset(), 0, ())


def _walk(value: Any, policy: MaskingPolicy, known: _Known) -> Any:
    if isinstance(value, str):
        return _mask(value, policy, known)
    if isinstance(value, dict):
        return {key: _walk_item(key, item, policy, known) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_walk(item, policy, known) for item in value)
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in known.numbers:
        return "*" * len(str(value))  # the caller's code sent back as a JSON number
    return value


# Keys whose value is a secret whatever it looks like: {"pin": 1234}, {"password": "x"}.
_CODE_KEYS = ("pin", "pincode", "otp", "onetimecode", "onetimepasscode", "verificationcode")
_CODE_KEYS += ("accesscode", "authcode", "smscode")
_SECRET_KEYS = {
    **dict.fromkeys(("password", "passwd", "pwd", "passcode", "passphrase"), "[password]"),
    **dict.fromkeys(("cvv", "cvv2", "cvc", "cvc2", "csc", "cid", "securitycode"), "[cvv]"),
    **dict.fromkeys(_CODE_KEYS, "*"),
}
_KEY_PUNCTUATION = re.compile(r"[\W_]+")


def _walk_item(key: Any, item: Any, policy: MaskingPolicy, known: _Known) -> Any:
    name = _KEY_PUNCTUATION.sub("", key).lower() if isinstance(key, str) else None
    marker = _SECRET_KEYS.get(name) if name else None
    if marker is None or isinstance(item, bool) or not isinstance(item, str | int):
        return _walk(item, policy, known)
    if marker == "*":  # each digit a star, like a code said in words
        return _ANY_DIGIT.sub("*", normalise(str(item)).text)
    return marker
