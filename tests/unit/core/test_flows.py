"""The flow table: the shipped flows.toml loads, and every broken file stops start-up by name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.flows import Stage, load_flows, parse_flows
from orchestrator_flows.infra.settings import DEFAULT_FLOWS_FILE

SMALL_FLOWS = """\
fallback_agent = "fallback"

[agents]
greeting = "http://agents.test/greeting/"
auth = "http://agents.test/auth/"
refund = "https://agents.test/refund/"
closing = "http://agents.test/closing/"
fallback = "http://agents.test/fallback/"

[stages]
"1" = { greeting = "greeting" }
"2" = { verify_identity = "auth" }
"3" = { refund_request = "refund" }
"4" = { process_refund = "refund" }
"5" = { closing = "closing" }
"""


@pytest.fixture
def write_flows(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "flows.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_shipped_flows_file_loads_five_stages_and_a_fallback() -> None:
    flows = load_flows(DEFAULT_FLOWS_FILE)

    assert list(flows.stages) == list(Stage)
    assert flows.fallback_role == "fallback"
    assert flows.fallback_role in flows.agents
    assert flows.allowed_intents(Stage.GREETING) == ["greeting", "welcome"]


def test_every_shipped_intent_names_a_configured_agent() -> None:
    flows = load_flows(DEFAULT_FLOWS_FILE)

    for stage, table in flows.stages.items():
        for intent, role in table.items():
            assert role in flows.agents, f"{intent} at stage {stage} names {role}"
            assert flows.stage_of_intent[intent] == stage


def test_small_flows_file_loads_as_written(write_flows) -> None:
    flows = load_flows(write_flows(SMALL_FLOWS))

    assert flows.agents["refund"] == "https://agents.test/refund/"
    assert dict(flows.stages[Stage.FULFILLMENT]) == {"process_refund": "refund"}
    assert flows.stage_of_intent["closing"] == Stage.CLOSING


def test_flows_file_without_fallback_has_no_fallback_role(write_flows) -> None:
    flows = load_flows(write_flows(SMALL_FLOWS.replace('fallback_agent = "fallback"\n', "")))

    assert flows.fallback_role is None


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param(
            '{ refund_request = "refund" }',
            '{ refund_request = "refunds" }',
            "stage 3 intent 'refund_request' names unknown role 'refunds'",
            id="unknown-role",
        ),
        pytest.param(
            '"4" = { process_refund = "refund" }',
            '"4" = { process_refund = "refund", greeting = "greeting" }',
            "intent 'greeting' is at stage 1 and 4",
            id="intent-at-two-stages",
        ),
        pytest.param(
            '"5" = { closing = "closing" }\n',
            "",
            "missing ['5']",
            id="stage-missing",
        ),
        pytest.param(
            '"5" = { closing = "closing" }\n',
            '"5" = { closing = "closing" }\n"6" = { extra = "closing" }\n',
            "unknown ['6']",
            id="stage-unknown",
        ),
        pytest.param(
            '"3" = { refund_request = "refund" }',
            '"3" = {}',
            "stage 3 (INTENT_CAPTURE) needs at least one intent",
            id="stage-empty",
        ),
        pytest.param(
            '"https://agents.test/refund/"',
            '"ftp://x"',
            "agent 'refund' URL 'ftp://x' is not an http(s) URL",
            id="ftp-url",
        ),
        pytest.param(
            '"https://agents.test/refund/"',
            '"not a url"',
            "agent 'refund' URL 'not a url' is not an http(s) URL",
            id="not-a-url",
        ),
        pytest.param(
            '"https://agents.test/refund/"',
            '"http://"',
            "agent 'refund' URL 'http://' is not an http(s) URL",
            id="url-without-host",
        ),
        pytest.param(
            'fallback_agent = "fallback"',
            'fallback_agent = "nobody"',
            "fallback_agent 'nobody' is not a role in [agents]",
            id="fallback-not-an-agent",
        ),
        pytest.param(
            'fallback_agent = "fallback"',
            'fallback_agent = "fallback"\nfalback_agent = "fallback"',
            "unknown top-level keys: ['falback_agent']",
            id="misspelt-top-level-key",
        ),
        pytest.param(
            '"1" = { greeting = "greeting" }',
            '"1" = { Greeting = "greeting" }',
            "intent 'Greeting' must match",
            id="bad-intent-name",
        ),
        pytest.param(
            '{ refund_request = "refund" }',
            '{ refund_request = ["refund"] }',
            "stage 3 intent 'refund_request' names unknown role",
            id="role-written-as-a-list",
        ),
        pytest.param(
            'fallback_agent = "fallback"',
            'fallback_agent = ["fallback"]',
            "is not a role in [agents]",
            id="fallback-written-as-a-list",
        ),
    ],
)
def test_bad_flows_file_stops_with_the_problem_named(
    write_flows, old: str, new: str, problem: str
) -> None:
    assert old in SMALL_FLOWS
    path = write_flows(SMALL_FLOWS.replace(old, new))

    with pytest.raises(ConfigError) as caught:
        load_flows(path)

    assert problem in str(caught.value)
    assert str(path) in str(caught.value)


def test_flows_file_without_agents_is_refused(write_flows) -> None:
    text = SMALL_FLOWS.split("[agents]")[0] + "[stages]" + SMALL_FLOWS.split("[stages]")[1]

    with pytest.raises(ConfigError, match=r"\[agents\] must map each role to its A2A URL"):
        load_flows(write_flows(text))


def test_invalid_toml_is_refused_as_not_valid_toml(write_flows) -> None:
    path = write_flows(SMALL_FLOWS + "[stages\n")

    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_flows(path)


def test_missing_flows_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError, match="flows file not found") as caught:
        load_flows(path)

    assert str(path) in str(caught.value)


def test_agent_url_override_replaces_one_url_only(write_flows) -> None:
    flows = load_flows(write_flows(SMALL_FLOWS), {"refund": "http://10.0.0.7:9000/a2a"})

    assert flows.agents["refund"] == "http://10.0.0.7:9000/a2a"
    assert flows.agents["auth"] == "http://agents.test/auth/"
    assert flows.stages[Stage.INTENT_CAPTURE]["refund_request"] == "refund"


def test_agent_url_override_for_an_unknown_role_is_refused(write_flows) -> None:
    with pytest.raises(ConfigError, match=r"AGENT_URL_GHOST names role 'ghost', not in \[agents\]"):
        load_flows(write_flows(SMALL_FLOWS), {"ghost": "http://ghost.test/"})


def test_agent_url_override_must_be_an_http_url(write_flows) -> None:
    with pytest.raises(ConfigError, match="agent 'refund' URL 'ftp://x' is not an http"):
        load_flows(write_flows(SMALL_FLOWS), {"refund": "ftp://x"})


def test_agent_written_as_a_table_can_be_marked_idempotent(write_flows) -> None:
    text = SMALL_FLOWS.replace(
        'refund = "https://agents.test/refund/"',
        'refund = { url = "https://agents.test/refund/", idempotent = true }',
    )

    flows = load_flows(write_flows(text), {"refund": "http://other.test/refund/"})

    assert flows.agents["refund"] == "http://other.test/refund/"
    assert flows.idempotent_roles == frozenset({"refund"})


@pytest.mark.parametrize(
    "entry, problem",
    [
        ('{ url = "http://a.test/", retries = 3 }', "unknown keys"),
        ('{ url = "http://a.test/", idempotent = "yes" }', "idempotent must be true or false"),
        ("{ idempotent = true }", "is not an http(s) URL"),
    ],
)
def test_bad_agent_table_is_refused(write_flows, entry: str, problem: str) -> None:
    text = SMALL_FLOWS.replace('refund = "https://agents.test/refund/"', f"refund = {entry}")

    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_flows(write_flows(text))


# Intent classification: [examples] and [classifier].

EXAMPLES = """
[examples]
refund_request = ["I want my money back", "quiero un reembolso"]
process_refund = ["go ahead with the refund"]
"""


def test_flows_file_without_examples_or_classifier_loads_and_no_stage_classifies() -> None:
    raw = tomllib.loads(DEFAULT_FLOWS_FILE.read_text(encoding="utf-8"))
    raw.pop("examples", None)
    raw.pop("classifier", None)
    raw["agents"].pop("classifier", None)

    flows = parse_flows(raw, {})

    assert flows.examples == {}
    assert flows.classifier.agent_role is None
    assert [flows.classifiable(stage) for stage in Stage] == [False] * 5


def test_examples_are_kept_per_intent_and_make_their_stages_classifiable(write_flows) -> None:
    flows = load_flows(write_flows(SMALL_FLOWS + EXAMPLES))

    assert flows.examples["refund_request"] == ("I want my money back", "quiero un reembolso")
    assert flows.examples["process_refund"] == ("go ahead with the refund",)
    assert [flows.classifiable(stage) for stage in Stage] == [False, False, True, True, False]


def test_classifier_defaults_without_a_classifier_table(write_flows) -> None:
    flows = load_flows(write_flows(SMALL_FLOWS + EXAMPLES))

    rules = flows.classifier
    assert rules.no_match_limit == 3
    assert rules.on_no_match == "closing"
    assert rules.agent_role is None
    assert set(rules.thresholds) == set(Stage)
    assert len(set(rules.thresholds.values())) == 1


def test_classifier_table_sets_thresholds_and_a_stage_overrides_them(write_flows) -> None:
    text = (
        SMALL_FLOWS
        + EXAMPLES
        + """
[classifier]
confidence = 0.6
margin = 0.1
no_match_limit = 2
on_no_match = "stay"

[classifier.stages."3"]
confidence = 0.8

[classifier.stages."4"]
margin = 0
"""
    )
    flows = load_flows(write_flows(text))

    rules = flows.classifier
    assert rules.thresholds[Stage.GREETING] == (0.6, 0.1)
    assert rules.thresholds[Stage.INTENT_CAPTURE] == (0.8, 0.1)
    assert rules.thresholds[Stage.FULFILLMENT] == (0.6, 0.0)
    assert rules.thresholds[Stage.CLOSING] == (0.6, 0.1)
    assert rules.no_match_limit == 2
    assert rules.on_no_match == "stay"


def test_role_named_classifier_is_the_classifier_agent_and_every_stage_classifies(
    write_flows,
) -> None:
    text = SMALL_FLOWS.replace(
        "[stages]", 'classifier = "http://agents.test/classifier/"\n\n[stages]'
    )

    flows = load_flows(write_flows(text))

    assert flows.classifier.agent_role == "classifier"
    assert flows.agents["classifier"] == "http://agents.test/classifier/"
    assert flows.examples == {}
    assert all(flows.classifiable(stage) for stage in Stage)


@pytest.mark.parametrize(
    ("added", "problem"),
    [
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\nweather_chat = ["sunny?"]\n',
            "[examples] 'weather_chat' is not an intent of any stage",
            id="examples-of-an-unknown-intent",
        ),
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\nclosing = []\n',
            "[examples] 'closing' must be a non-empty list of strings",
            id="empty-list",
        ),
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\nclosing = "bye"\n',
            "[examples] 'closing' must be a non-empty list of strings",
            id="string-not-list",
        ),
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\nclosing = ["bye", "  "]\n',
            "[examples] 'closing' example 2 must be a non-blank string",
            id="blank-example",
        ),
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\nclosing = ["bye", 7]\n',
            "[examples] 'closing' example 2 must be a non-blank string",
            id="number-example",
        ),
        pytest.param(
            '[examples]\nrefund_request = ["money back"]\n',
            "[examples] needs examples for at least two intents",
            id="one-intent-only",
        ),
        pytest.param(
            'examples = ["money back"]\n',
            "[examples] must map intents to lists",
            id="examples-not-a-table",
        ),
        pytest.param(
            "classifier = 0.5\n",
            "[classifier] must be a table",
            id="classifier-not-a-table",
        ),
        pytest.param(
            "[classifier]\nthreshold = 0.5\n",
            "[classifier] has unknown keys ['threshold']",
            id="classifier-unknown-key",
        ),
        pytest.param(
            "[classifier]\nconfidence = 1.5\n",
            "[classifier] confidence must be a number from 0 to 1",
            id="confidence-above-1",
        ),
        pytest.param(
            "[classifier]\nmargin = -0.1\n",
            "[classifier] margin must be a number from 0 to 1",
            id="margin-below-0",
        ),
        pytest.param(
            '[classifier]\nconfidence = "high"\n',
            "[classifier] confidence must be a number from 0 to 1",
            id="confidence-a-string",
        ),
        pytest.param(
            "[classifier]\nconfidence = true\n",
            "[classifier] confidence must be a number from 0 to 1",
            id="confidence-a-bool",
        ),
        pytest.param(
            "[classifier]\nconfidence = nan\n",
            "[classifier] confidence must be a number from 0 to 1",
            id="confidence-nan",
        ),
        pytest.param(
            "[classifier]\nno_match_limit = 0\n",
            "[classifier] no_match_limit must be a whole number, at least 1",
            id="limit-zero",
        ),
        pytest.param(
            "[classifier]\nno_match_limit = 2.0\n",
            "[classifier] no_match_limit must be a whole number, at least 1",
            id="limit-a-float",
        ),
        pytest.param(
            "[classifier]\nno_match_limit = true\n",
            "[classifier] no_match_limit must be a whole number, at least 1",
            id="limit-a-bool",
        ),
        pytest.param(
            '[classifier]\non_no_match = "hang_up"\n',
            '[classifier] on_no_match must be "closing" or "stay"',
            id="unknown-escalation",
        ),
        pytest.param(
            "[classifier]\nstages = 3\n",
            "[classifier.stages] must map stage numbers to thresholds",
            id="stages-not-a-table",
        ),
        pytest.param(
            '[classifier.stages."6"]\nconfidence = 0.5\n',
            "[classifier.stages] '6' is not a stage (1..5)",
            id="stage-unknown",
        ),
        pytest.param(
            '[classifier.stages."3"]\nno_match_limit = 2\n',
            "[classifier.stages] '3' may set only confidence and margin",
            id="stage-sets-a-limit",
        ),
        pytest.param(
            '[classifier.stages."3"]\nmargin = 2\n',
            "[classifier.stages] '3' margin must be a number from 0 to 1",
            id="stage-margin-above-1",
        ),
    ],
)
def test_bad_classification_table_stops_start_up_naming_the_table_and_key(
    write_flows, added: str, problem: str
) -> None:
    # A top-level key goes before the first table; a table after the others.
    text = SMALL_FLOWS + "\n" + added if added.startswith("[") else added + SMALL_FLOWS
    path = write_flows(text)

    with pytest.raises(ConfigError) as caught:
        load_flows(path)

    assert problem in str(caught.value)
    assert str(path) in str(caught.value)


def test_no_match_is_a_reserved_intent_name(write_flows) -> None:
    text = SMALL_FLOWS.replace('{ refund_request = "refund" }', '{ no_match = "refund" }')

    with pytest.raises(ConfigError, match="intent 'no_match' is reserved"):
        load_flows(write_flows(text))
