"""The flow table: the shipped flows.toml loads, and every broken file stops start-up by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.flows import Stage, load_flows
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
