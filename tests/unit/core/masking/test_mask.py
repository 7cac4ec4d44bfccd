"""masking: personal data never reaches the audit trail in clear, however it is said or repeated,
and look-alikes (orders, amounts, dates, times, references) stay readable."""

from __future__ import annotations

import copy
import random

import pytest

from orchestrator_flows.core.masking import mask as masking
from orchestrator_flows.core.masking.mask import (
    Masked,
    MaskingPolicy,
    mask_caller_words,
    mask_json,
    mask_text,
)

POLICY = MaskingPolicy()
FULLWIDTH = str.maketrans(
    "0123456789-@", "".join(chr(0xFF10 + n) for n in range(10)) + "\uff0d\uff20"
)
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + n) for n in range(10)))


def fullwidth(text: str) -> str:
    return text.translate(FULLWIDTH)


def arabic_indic(text: str) -> str:
    return text.translate(ARABIC_INDIC)


# (what the caller said, what the audit trail may keep)
CARDS = [
    ("card 4111 1111 1111 1111 please", "card [card ****1111] please"),
    ("4111-1111-1111-1111", "[card ****1111]"),
    ("amex 378282246310005.", "amex [card ****0005]."),
    ("5555 5555 5555 4444", "[card ****4444]"),
    ("4111111111111111 123", "[card ****1111] 123"),
    ("card 4111  1111\t1111\n1111", "card [card ****1111]"),
    ("card 4111.1111.1111.1111", "card [card ****1111]"),
    ("card 4111/1111/1111/1111", "card [card ****1111]"),
    ("card 4111, 1111, 1111, 1111", "card [card ****1111]"),
    ("card 4111 \u2013 1111 \u2013 1111 \u2013 1111", "card [card ****1111]"),
    ("card 4111\u20141111\u20141111\u20141111", "card [card ****1111]"),
    ("card 4111\u00a01111\u00a01111\u00a01111", "card [card ****1111]"),
    ("card " + "\u200b".join("4111111111111111"), "card [card ****1111]"),
    ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "card [card ****1111]"),
    ("card " + fullwidth("4111 1111 1111 1111"), "card [card ****1111]"),
    ("card " + arabic_indic("4111 1111 1111 1111"), "card [card ****1111]"),
    ("card \u2074" + "\u00b9" * 15, "card [card ****1111]"),  # superscript digits
    ("card " + "\U0001d7d2" + "\U0001d7cf" * 15, "card [card ****1111]"),  # mathematical bold
    ("four one one one one one one one one one one one one one one one", "[card ****1111]"),
    (
        "my card is four one one one, one one one one, one one one one, one one one one",
        "my card is [card ****1111]",
    ),
    ("card_4111111111111111_exp1226", "card_[card ****1111]_exp1226"),
    ("/pay?card=4111111111111111&exp=1226", "/pay?card=[card ****1111]&exp=1226"),
]
SSNS = [
    ("ssn 123-45-6789", "ssn [ssn ***-**-6789]"),
    ("123 45 6789", "[ssn ***-**-6789]"),
    ("my SSN is 123456789", "my SSN is [ssn ***-**-6789]"),
    ("social security number is 123456789", "social security number is [ssn ***-**-6789]"),
    ("ssn 123.45.6789", "ssn [ssn ***-**-6789]"),
    ("ssn 123/45/6789", "ssn [ssn ***-**-6789]"),
    ("ssn 123\u201445\u20146789", "ssn [ssn ***-**-6789]"),
    ("ssn 123 - 45 - 6789", "ssn [ssn ***-**-6789]"),
    ("S.S.N. 123 456789", "S.S.N. [ssn ***-**-6789]"),
    ("my social is 123 456 789", "my social is [ssn ***-**-6789]"),
    ("my ssn is one two three four five six seven eight nine", "my ssn is [ssn ***-**-6789]"),
    ("ssn " + fullwidth("123-45-6789"), "ssn [ssn ***-**-6789]"),
]
LABELLED = [
    ("cvv is 123", "cvv is [cvv]"),
    ("CVC: 4567", "CVC: [cvv]"),
    ("the security code is 321", "the security code is [cvv]"),
    ("cvv2 123, card verification number: 987", "cvv2 [cvv], card verification number: [cvv]"),
    ("CVV code 123", "CVV code [cvv]"),
    ("cvv=123", "cvv=[cvv]"),
    ("cvv 1 2 3", "cvv [cvv]"),
    ("the three digits on the back are 123", "the three digits on the back are [cvv]"),
    ("cvv one two three", "cvv [cvv]"),
    ("my code is 123456", "my code is ******"),
    ("code: 9876", "code: ****"),
    ("one-time code 1 2 3 4 5 6", "one-time code * * * * * *"),
    ("OTP: 482913", "OTP: ******"),
    ("OTP=482913", "OTP=******"),
    ("my code 482913", "my code ******"),
    ("the code was 482913", "the code was ******"),
    ("onetime code 482913", "onetime code ******"),
    ("one time code: four eight two nine one three", "one time code: * * * * * *"),
    ("the code is 48, 29, 13", "the code is **, **, **"),
    ("verification code 555-123", "verification code ***-***"),
    ("security code is 123456", "security code is ******"),
    ("my code is " + arabic_indic("123456"), "my code is ******"),
    ("pin 1234", "pin ****"),
    ("PIN is 1234", "PIN is ****"),
    ("my pin number is 4321", "my pin number is ****"),
    ("pin=4321", "pin=****"),
    ("my pin\u2019s 4321", "my pin\u2019s ****"),
    ("my password is hunter2.", "my password is [password]."),
    ("Password: s3cr3t!", "Password: [password]!"),
    ("my password's tr0ub4dor, ok", "my password's [password], ok"),
    ('passcode is "998877".', 'passcode is "[password]".'),
    ("pass phrase is correct-horse", "pass phrase is [password]"),
    ("password for the app is Tr0ub4dor&3", "password for the app is [password]"),
    ("password Hunter2!x", "password [password]"),
    ("password = hunter2", "password = [password]"),
    ("pw: hunter2", "pw: [password]"),
    ("pwd=hunter2", "pwd=[password]"),
    ('the password was "correct horse battery staple" ok', 'the password was "[password]" ok'),
    ("my pa\u017fsword is hunter2", "my pa\u017fsword is [password]"),  # a long s: an s
    ("one-time passcode: 482 913", "one-time passcode: [password]"),  # a number, whole
]
CONTACTS = [
    ("write to bob.smith+tag@example.co.uk today", "write to [email] today"),
    ("jos\u00e9.n\u00fa\u00f1ez@ex\u00e4mple.com", "[email]"),
    ("jose\u0301@example.com", "[email]"),  # a combining accent
    ("jane\uff20example.com", "[email]"),  # a fullwidth at sign
    ("mail jane.doe@b\u00fccher.de", "mail [email]"),
    ("mail \u674e@\u4f8b\u5b50.\u4e2d\u56fd ok", "mail [email] ok"),  # CJK, IDN top-level domain
    (
        "\u0909\u0926\u093e\u0939\u0930\u0923@\u0909\u0926\u093e.\u092d\u093e\u0930\u0924",
        "[email]",
    ),  # Devanagari
    ("john dot doe at example dot com", "[email]"),
    ("mine is jane.doe at example.com", "mine is [email]"),
    ("+1 415 555 0100", "[phone]"),
    ("+44 20 7946 0958", "[phone]"),
    ("+44 (0)20 7946 0958", "[phone]"),
    ("0044 20 7946 0958", "[phone]"),
    ("+14155550100", "[phone]"),
    ("(415) 555-0100", "[phone]"),
    ("call 415-555-0100 now", "call [phone] now"),
    ("415.555.0100", "[phone]"),
    ("415 555 0100", "[phone]"),
    ("415 5550100", "[phone]"),
    ("1-415-555-0100", "[phone]"),
    ("4155550100", "[phone]"),
    ("call me at 4155550100", "call me at [phone]"),
    ("my phone number is 4155550100", "my phone number is [phone]"),
    ("cell: 4155550100", "cell: [phone]"),
    ("my number is 4155550100", "my number is [phone]"),
    ("my cell is 555 0199", "my cell is [phone]"),  # not a valid number, but labelled one
    ("four one five five five five oh one oh oh", "[phone]"),
    ("call me on four one five, five five five, oh one hundred", "call me on [phone]"),
]
SECRETS_MASKED = CARDS + SSNS + LABELLED + CONTACTS

# Stays as it was said: what an auditor needs to read.
LOOK_ALIKES = [
    "I want a refund for order 4417",
    "order 10442",
    "order 77812",
    "order #A-77812",
    "ORD-2024-00042",
    "Your refund of $45.00 for order 77812 is on its way, reference RF-2024-00042.",
    "tracking 1Z999AA10123456784",
    "1234 5678 9012 3456",
    "order number 4155550100",
    "invoice 2125550123",
    "2125550123 is my order number",
    "ticket #4417, case 99812",
    "2024-01-15",
    "15/01/2024",
    "15.01.2024",
    "Jan 15, 2024",
    "January 15th",
    "2024-01-15 10:30:00",
    "on 2024-01-15 2024-02-16",
    "I was charged $1,250.00 on 2024-01-15 at 10:30",
    "$1,234.56",
    "1,234,567,890,123",
    "\u20ac 4111 1111 1111 1111",
    "1234.56 EUR",
    "\u20ac 99",
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
    "error code 500",
    "zip code 94103",
    "status code 200",
    "promo code SAVE20",
    "the code for my order is 4417",
    "your pin was changed on 2024-01-15",
    "the code was sent to your phone",
    "password is",
    "password reset",
    "I forgot my password again",
    "my password was reset yesterday",
    "log in at example.com",
    "meet me at the office at 10.30",
    "I have one question and two kids",
    "someone called about one-time codes",
    "I'd like two. One more thing",
    "we open at 9 and close at 5",
    "flight BA 2490 on 2024-03-01",
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


def test_comma_joined_numbers_are_a_card_only_in_a_card_grouping() -> None:
    assert mask_text("orders 4111, 11, 11111111, 1111", POLICY) == (
        "orders 4111, 11, 11111111, 1111"
    )


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("my code is 123456", "my code is ******"),
        ("123456", "******"),
        ("born 15 01 1990, order 10442", "born ** ** ****, order *****"),
        ("born one five oh one nineteen ninety", "born * * * * ** **"),
        ("\u0661\u0662\u0663\u0664\u0665\u0666", "******"),
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
        (
            MaskingPolicy(emails=False),
            "john dot doe at example dot com",
            "john dot doe at example dot com",
        ),
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


@pytest.mark.parametrize(
    ("region", "said", "kept"),
    [
        ("GB", "call me on 020 7946 0958", "call me on [phone]"),
        ("GB", "020 7946 0958", "[phone]"),
        ("US", "020 7946 0958", "020 7946 0958"),  # not a US number
        ("GB", "+1 415 555 0100", "[phone]"),  # international: whatever the region
    ],
)
def test_national_numbers_are_read_for_the_policy_region(region: str, said: str, kept: str) -> None:
    assert mask_caller_words(said, MaskingPolicy(phone_region=region)).text == kept


def test_auth_digits_off_keeps_bare_digits_at_authentication() -> None:
    policy = MaskingPolicy(auth_digits=False)
    said = "born 15 01 1990, code is 123456"
    assert mask_caller_words(said, policy, authentication=True) == Masked(
        "born 15 01 1990, code is ******", frozenset({"123456"})
    )


@pytest.mark.parametrize(
    ("said", "authentication", "secrets"),
    [
        ("4111 1111 1111 1111", False, {"4111111111111111"}),
        ("my code is 123456", False, {"123456"}),
        ("one-time code 1 2 3 4 5 6", False, {"123456"}),
        ("my password is hunter2.", False, {"hunter2"}),
        ("cvv 123, ssn 123-45-6789", False, {"123", "123456789"}),
        ("+1 415 555 0100", False, {"14155550100", "4155550100"}),
        ("bob@example.com", False, {"bob@example.com"}),
        (
            "john dot doe at example dot com",
            False,
            {"john dot doe at example dot com", "john.doe@example.com"},
        ),
        ("password is ab", False, set()),
        ("born 15 01 1990, 42 and 123456", True, {"1501199042", "1990", "123456"}),
        ("it is 4-2", True, set()),
    ],
)
def test_secrets_are_the_masked_values_a_number_as_its_digits(
    said: str, authentication: bool, secrets: set[str]
) -> None:
    assert mask_caller_words(said, POLICY, authentication=authentication).secrets == secrets


# (what the caller said, what the agent answered, what the audit trail keeps of the answer)
REPEATS = [
    ("card 4111 1111 1111 1111", "reference numbers I heard: 4111, 1111, 1111, 1111",
     "reference numbers I heard: ****, ****, ****, ****"),
    ("card 4111 1111 1111 1111", "41 11 11 11 11 11 11 11", "** ** ** ** ** ** ** **"),
    ("card 4111 1111 1111 1111", "four one one one one one one one one one one one one one one one",
     "* * * * * * * * * * * * * * * *"),
    ("my code is 482913", "Code 48, 29, 13 accepted", "Code **, **, ** accepted"),
    ("my code is 482913", "you said four eight two nine one three?", "you said * * * * * *?"),
    ("my code is 482913", "482-913, right?", "***-***, right?"),
    ("my code is 482913", "code\uff14\uff18\uff12\uff19\uff11\uff13", "code******"),
    ("my code is 482913", "order 482913 found", "order ****** found"),
    ("my code is 482913", "1482913 is another number", "1482913 is another number"),
    ("call me at (415) 555-0100", "I will call 415.555.0100", "I will call ***.***.****"),
    ("call me at (415) 555-0100", "+1 415 555 0100 noted", "+1 *** *** **** noted"),
    ("call me at (415) 555-0100", "noted: 415 555 01 00", "noted: *** *** ** **"),
    ("ssn 123-45-6789", "SSN 123 45 6789 on file", "SSN *** ** **** on file"),
    ("ssn 123-45-6789", "ref 123.456.789", "ref ***.***.***"),
    ("cvv 737", "7 3 7 it is", "* * * it is"),
    ("my password is Hunter2!x", "Your password Hunter2!x is set", "Your password [secret] is set"),
    ("my password is Hunter2!x", "so hunter2!x, ok?", "so [secret], ok?"),
    ("my password is Hunter2!x", "Hunter2!xy is another word", "Hunter2!xy is another word"),
    ("jane.doe@example.com", "mail JANE.DOE@EXAMPLE.COM", "mail [secret]"),
    ("my code is 123456, password is hunter2", "Thanks, hunter2 is now your password.",
     "Thanks, [secret] is now your password."),
    ("my code is 123456", "Order 1234567 or 1123456 differ.", "Order 1234567 or 1123456 differ."),
]  # fmt: skip


@pytest.mark.parametrize(("said", "answer", "kept"), REPEATS)
def test_agent_repeating_what_was_masked_is_masked_however_grouped(
    said: str, answer: str, kept: str
) -> None:
    secrets = mask_caller_words(said, POLICY).secrets
    assert mask_text(answer, POLICY, secrets) == kept


def test_caller_repeating_a_value_without_its_label_is_masked_too() -> None:
    assert mask_caller_words("code is 482913, I repeat: 48 29 13", POLICY).text == (
        "code is ******, I repeat: ** ** **"
    )


def test_a_phone_number_judged_alone_is_judged_again_where_it_recurs() -> None:
    answer = "order number 4155550100, that is four one five five five five oh one oh oh"
    assert mask_text(answer, POLICY) == "order number 4155550100, that is [phone]"


def test_a_labelled_value_is_masked_where_it_recurs_in_the_same_text() -> None:
    answer = "order 4155550100? no: call me at 4155550100"
    assert mask_caller_words(answer, POLICY).text == "order **********? no: call me at [phone]"


def test_longest_secret_is_hidden_first() -> None:
    secrets = frozenset({"pass", "pass-word", "123", "123456"})
    assert mask_text("say pass-word 123-456", POLICY, secrets) == "say [secret] ***-***"


def test_secrets_never_break_a_marker() -> None:
    secrets = frozenset({"1111", "card", "phone"})
    answer = "[card ****1111] and [phone], card 1111"
    assert mask_text(answer, POLICY, secrets) == "[card ****1111] and [phone], [secret] ****"


def test_mask_json_masks_every_string_and_nothing_else() -> None:
    secrets = frozenset({"123456", "hunter2"})
    answer = {
        "text": "Code 123456 confirmed",
        "items": ["mail bob@example.com", 42, 4.5, True, None, {"note": "hunter2"}],
        "123456": "key stays",
        "pair": ("pin 9999", 7),
    }
    assert mask_json(answer, POLICY, secrets) == {
        "text": "Code ****** confirmed",
        "items": ["mail [email]", 42, 4.5, True, None, {"note": "[secret]"}],
        "123456": "key stays",
        "pair": ("pin ****", 7),
    }


def test_mask_json_masks_a_repeated_value_sent_as_a_number() -> None:
    assert mask_json({"code": 482913, "order": 4417}, POLICY, frozenset({"482913"})) == {
        "code": "******",
        "order": 4417,
    }


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ({"password": "hunter2"}, {"password": "[password]"}),
        ({"user_pwd": "x"}, {"user_pwd": "x"}),  # not a key of its own
        ({"PIN": 1234}, {"PIN": "****"}),
        ({"one_time_code": "482913"}, {"one_time_code": "******"}),
        ({"cvv": "123"}, {"cvv": "[cvv]"}),
        ({"otp": True, "pin": None}, {"otp": True, "pin": None}),
        ({"pin": ["1234"]}, {"pin": ["1234"]}),
        ({"code": "REFUND_OK"}, {"code": "REFUND_OK"}),
    ],
)
def test_mask_json_masks_values_under_secret_keys(answer: dict, kept: dict) -> None:
    assert mask_json(answer, POLICY) == kept


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
    assert mask_caller_words(kept, POLICY) == Masked(kept, frozenset())
    assert mask_text(kept, POLICY, secrets) == kept


@pytest.mark.parametrize(
    "said",
    [
        "my code is 123456, card 4111 1111 1111 1111, ssn 123-45-6789",
        "password is hunter2 and pin 1234, call +1 415 555 0100",
        "born 15 01 1990",
        "born one five oh one nineteen ninety",
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


# Long hostile inputs: each must be masked as stated (the service takes 4,000 characters).
HOSTILE = [
    ("1 " * 2000, None),  # 2,000 one-digit groups: many windows, none a card (Luhn fails)
    ("4111 1111 1111 1111 " * 200, "[card ****1111] " * 200),
    ("code " * 800, None),
    ("code is " * 499 + "482913", "code is " * 499 + "******"),
    ("password " * 444, None),
    ("a@" * 2000, None),
    ("a" * 3990 + "@example.com", "a" * 3926 + "[email]"),  # 64 characters before the @
    ("x." * 1990 + "@example.com", None),
    ("at dot " * 570, None),
    ("john dot " * 440 + "at example dot com", None),
    ("one " * 1000, "one " * 1000),  # no number any detector takes
    ("oh " * 1333, None),
    (" " * 3999 + "1", None),
    ("-" * 1999 + "1" * 2001, None),
    ("+" + "1 " * 1999, None),
    ("ssn " * 999 + "123456789", None),
    ("\u200b" * 3990 + "482913", None),
    ("(" * 2000 + "415) 555-0100", None),
]


@pytest.mark.parametrize(("said", "kept"), HOSTILE, ids=lambda v: repr(v)[:30])
def test_long_hostile_input_is_masked_as_stated(said: str, kept: str | None) -> None:
    masked = mask_caller_words(said, POLICY)
    if kept is not None:
        assert masked.text == kept
    assert mask_caller_words(masked.text, POLICY).text == masked.text  # and stays as masked


def test_quick_check_never_skips_text_the_detectors_would_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pieces = ["4111", " ", "-", "1", "23", "@", "a.b", ".com", "pass", "PASS", "word is ", "\u017f",
              "code is ", "pin ", "ssn ", "cvv ", "+", "(415) ", "\u0664", "x", "\u00df", ": ",
              "four ", "one ", "oh ", " at ", " dot ", "\uff14", "\u200b", "pw=",
              "\uff20"]  # fmt: skip
    rng = random.Random(7)
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 12))) for _ in range(3000)]
    quick = [mask_caller_words(text, POLICY).text for text in texts]

    monkeypatch.setattr(masking, "_could_hold", lambda text, every_digit: True)

    assert quick == [mask_caller_words(text, POLICY).text for text in texts]
