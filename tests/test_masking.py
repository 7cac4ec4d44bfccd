"""masking: personal data never reaches the audit trail in clear, and look-alikes stay readable."""

from __future__ import annotations

import copy
import random

import pytest

import masking
from masking import Masked, MaskingPolicy, mask_caller_words, mask_json, mask_text

POLICY = MaskingPolicy()

# (what the caller said, what the audit trail may keep)
SECRETS_MASKED = [
    ("card 4111 1111 1111 1111 please", "card [card ****1111] please"),
    ("4111-1111-1111-1111", "[card ****1111]"),
    ("amex 378282246310005.", "amex [card ****0005]."),
    ("5555 5555 5555 4444", "[card ****4444]"),
    ("4111111111111111 123", "[card ****1111] 123"),
    ("cvv is 123", "cvv is [cvv]"),
    ("CVC: 4567", "CVC: [cvv]"),
    ("the security code is 321", "the security code is [cvv]"),
    ("cvv2 123, card verification number: 987", "cvv2 [cvv], card verification number: [cvv]"),
    ("ssn 123-45-6789", "ssn [ssn ***-**-6789]"),
    ("123 45 6789", "[ssn ***-**-6789]"),
    ("my SSN is 123456789", "my SSN is [ssn ***-**-6789]"),
    ("social security number is 123456789", "social security number is [ssn ***-**-6789]"),
    ("my password is hunter2.", "my password is [password]."),
    ("Password: s3cr3t!", "Password: [password]!"),
    ("my password's tr0ub4dor, ok", "my password's [password], ok"),
    ('passcode is "998877".', 'passcode is "[password]".'),
    ("pass phrase is correct-horse", "pass phrase is [password]"),
    ("my code is 123456", "my code is ******"),
    ("code: 9876", "code: ****"),
    ("one-time code 1 2 3 4 5 6", "one-time code * * * * * *"),
    ("OTP: 482913", "OTP: ******"),
    ("verification code 555-123", "verification code ***-***"),
    ("security code is 123456", "security code is ******"),
    ("pin 1234", "pin ****"),
    ("PIN is 1234", "PIN is ****"),
    ("my pin number is 4321", "my pin number is ****"),
    ("write to bob.smith+tag@example.co.uk today", "write to [email] today"),
    ("+1 415 555 0100", "[phone]"),
    ("+44 20 7946 0958", "[phone]"),
    ("+44 (0)20 7946 0958", "[phone]"),
    ("+14155550100", "[phone]"),
    ("(415) 555-0100", "[phone]"),
    ("call 415-555-0100 now", "call [phone] now"),
    ("415.555.0100", "[phone]"),
    ("415 555 0100", "[phone]"),
    ("1-415-555-0100", "[phone]"),
    ("call me at 4155550100", "call me at [phone]"),
    ("my phone number is 4155550100", "my phone number is [phone]"),
    ("cell: 4155550100", "cell: [phone]"),
    ("my number is 4155550100", "my number is [phone]"),
]

LOOK_ALIKES = [
    "order 10442",
    "order #A-77812",
    "tracking 1Z999AA10123456784",
    "1234 5678 9012 3456",
    "order number 4155550100",
    "4155550100",
    "2024-01-15",
    "15/01/2024",
    "Jan 15, 2024",
    "2024-01-15 10:30:00",
    "$1,234.56",
    "1234.56 EUR",
    "€ 99",
    "10:30",
    "1999",
    "reference 123456789",
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "123-00-6789",
    "123-45-0000",
    "v1.2.3",
    "192.168.1.1",
    "spinning 1234 times",
    "a tailspin 360 degrees",
    "in my opinion 1234 is fine",
    "area code 415",
    "password is",
]


@pytest.mark.parametrize(("said", "kept"), SECRETS_MASKED)
def test_personal_data_is_replaced_by_its_marker(said: str, kept: str) -> None:
    assert mask_caller_words(said, POLICY).text == kept


@pytest.mark.parametrize(("said", "kept"), SECRETS_MASKED)
def test_agent_text_gets_the_same_detectors(said: str, kept: str) -> None:
    assert mask_text(said, POLICY) == kept


@pytest.mark.parametrize("said", LOOK_ALIKES)
def test_look_alikes_stay_unchanged(said: str) -> None:
    assert mask_caller_words(said, POLICY) == Masked(said, frozenset())
    assert mask_text(said, POLICY) == said


def test_luhn_invalid_sixteen_digits_stay() -> None:
    assert mask_text("card 4111 1111 1111 1112", POLICY) == "card 4111 1111 1111 1112"


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("my code is 123456", "my code is ******"),
        ("123456", "******"),
        ("born 15 01 1990, order 10442", "born ** ** ****, order *****"),
        ("it is 4-2", "it is *-*"),
        ("card 4111 1111 1111 1111", "card [card ********]"),
        ("ssn 123-45-6789", "ssn [ssn ***-**-****]"),
        ("no digits here", "no digits here"),
    ],
)
def test_authentication_masks_every_digit(said: str, kept: str) -> None:
    assert mask_caller_words(said, POLICY, authentication=True).text == kept


def test_outside_authentication_bare_digits_stay() -> None:
    assert mask_caller_words("123456", POLICY).text == "123456"


@pytest.mark.parametrize(
    ("policy", "said", "kept"),
    [
        (MaskingPolicy(emails=False), "bob@example.com", "bob@example.com"),
        (MaskingPolicy(emails=False), "+1 415 555 0100", "[phone]"),
        (MaskingPolicy(phones=False), "+1 415 555 0100", "+1 415 555 0100"),
        (MaskingPolicy(phones=False), "call me at 4155550100", "call me at 4155550100"),
        (MaskingPolicy(phones=False), "bob@example.com", "[email]"),
        (MaskingPolicy(emails=False, phones=False), "pin 1234", "pin ****"),
    ],
)
def test_policy_switches_turn_off_only_their_detector(
    policy: MaskingPolicy, said: str, kept: str
) -> None:
    assert mask_caller_words(said, policy).text == kept


def test_auth_digits_off_keeps_bare_digits_at_authentication() -> None:
    policy = MaskingPolicy(auth_digits=False)
    said = "born 15 01 1990, code is 123456"
    assert mask_caller_words(said, policy, authentication=True) == Masked(
        "born 15 01 1990, code is ******", frozenset({"123456"})
    )


@pytest.mark.parametrize(
    ("said", "authentication", "secrets"),
    [
        ("4111 1111 1111 1111", False, {"4111 1111 1111 1111"}),
        ("my code is 123456", False, {"123456"}),
        ("one-time code 1 2 3 4 5 6", False, {"1 2 3 4 5 6"}),
        ("my password is hunter2.", False, {"hunter2"}),
        ("cvv 123, ssn 123-45-6789", False, {"123", "123-45-6789"}),
        ("bob@example.com or +1 415 555 0100", False, {"bob@example.com", "+1 415 555 0100"}),
        ("password is ab", False, set()),
        ("born 15 01 1990, 42 and 123456", True, {"15 01 1990", "123456"}),
        ("it is 4-2", True, set()),
        ("pin 1234 5678 9012", False, set()),
    ],
)
def test_secrets_collect_the_raw_values_of_three_or_more_characters(
    said: str, authentication: bool, secrets: set[str]
) -> None:
    assert mask_caller_words(said, POLICY, authentication=authentication).secrets == secrets


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ("Your code 123456 is verified.", "Your code ****** is verified."),
        ("So that is 123 456?", "So that is *** ***?"),
        ("Thanks, hunter2 is now your password.", "Thanks, [secret] is now your password."),
        ("Your PIN 1234 works.", "Your PIN **** works."),
        ("Order 1234567 or 1123456 differ.", "Order 1234567 or 1123456 differ."),
        ("hunter22 is another word.", "hunter22 is another word."),
    ],
)
def test_agent_repeating_a_secret_is_masked(answer: str, kept: str) -> None:
    secrets = mask_caller_words("code is 123456, password is hunter2", POLICY).secrets
    assert mask_text(answer, POLICY, secrets) == kept


def test_longest_secret_is_hidden_first() -> None:
    secrets = frozenset({"pass", "pass-word", "123", "123-456"})
    assert mask_text("say pass-word 123-456", POLICY, secrets) == "say [secret] ***-***"


def test_secrets_never_break_a_marker() -> None:
    secrets = frozenset({"1111", "card", "phone"})
    answer = "[card ****1111] and [phone], card 1111"
    assert mask_text(answer, POLICY, secrets) == "[card ****1111] and [phone], [secret] ****"


def test_mask_json_masks_every_string_and_nothing_else() -> None:
    secrets = frozenset({"123456", "hunter2"})
    answer = {
        "text": "Code 123456 confirmed",
        "items": ["mail bob@example.com", 123456, 4.5, True, None, {"note": "hunter2"}],
        "123456": "key stays",
        "pair": ("pin 9999", 7),
    }
    assert mask_json(answer, POLICY, secrets) == {
        "text": "Code ****** confirmed",
        "items": ["mail [email]", 123456, 4.5, True, None, {"note": "[secret]"}],
        "123456": "key stays",
        "pair": ("pin ****", 7),
    }


def test_mask_json_leaves_its_input_untouched() -> None:
    answer = {"text": "card 4111 1111 1111 1111", "parts": [{"otp": "code is 123456"}]}
    before = copy.deepcopy(answer)
    masked = mask_json(answer, POLICY, frozenset({"123456"}))
    assert answer == before
    assert masked == {"text": "card [card ****1111]", "parts": [{"otp": "code is ******"}]}


@pytest.mark.parametrize("value", ["plain", 42, 1.5, False, None, [], {}])
def test_mask_json_returns_scalars_and_empty_containers_as_they_are(value: object) -> None:
    assert mask_json(value, POLICY) == value


@pytest.mark.parametrize(("said", "kept"), SECRETS_MASKED)
def test_masking_masked_text_changes_nothing(said: str, kept: str) -> None:
    secrets = mask_caller_words(said, POLICY).secrets
    assert mask_caller_words(kept, POLICY).text == kept
    assert mask_caller_words(kept, POLICY).secrets == frozenset()
    assert mask_text(kept, POLICY, secrets) == kept


@pytest.mark.parametrize(
    "said",
    [
        "my code is 123456, card 4111 1111 1111 1111, ssn 123-45-6789",
        "password is hunter2 and pin 1234, call +1 415 555 0100",
        "born 15 01 1990",
    ],
)
def test_masking_at_authentication_is_idempotent(said: str) -> None:
    once = mask_caller_words(said, POLICY, authentication=True)
    twice = mask_caller_words(once.text, POLICY, authentication=True)
    assert twice.text == once.text
    assert mask_text(once.text, POLICY, once.secrets) == once.text


@pytest.mark.parametrize(("said", "kept"), SECRETS_MASKED)
def test_mask_json_finds_personal_data_in_any_string_without_secrets(said: str, kept: str) -> None:
    answer = {"text": "ok", "data": [{"note": said}], "kind": "message"}

    assert mask_json(answer, POLICY) == {"text": "ok", "data": [{"note": kept}], "kind": "message"}


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("my code is ١٢٣٤٥٦", "my code is ******"),  # Arabic-Indic digits are digits too
        # a long s, which re.I reads as an s
        ("my pa\u017fsword is hunter2", "my pa\u017fsword is [password]"),
    ],
)
def test_quick_check_lets_through_whatever_a_detector_would_mask(said: str, kept: str) -> None:
    assert mask_caller_words(said, POLICY).text == kept
    assert mask_json({"text": said}, POLICY) == {"text": kept}


def test_quick_check_never_skips_text_the_detectors_would_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pieces = ["4111", " ", "-", "1", "23", "@", "a.b", ".com", "pass", "PASS", "word is ", "\u017f",
              "code is ", "pin ", "ssn ", "cvv ", "+", "(415) ", "٤", "x", "ß", ": "]  # fmt: skip
    rng = random.Random(7)
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 12))) for _ in range(3000)]
    quick = [mask_caller_words(text, POLICY).text for text in texts]

    monkeypatch.setattr(masking, "_maybe_personal", lambda text: True)

    assert quick == [mask_caller_words(text, POLICY).text for text in texts]
