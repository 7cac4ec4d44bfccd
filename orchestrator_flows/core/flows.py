"""The flow configuration: which agent (role) serves which intent at which stage, and its URL.

Loaded once from `flows.toml` at start-up; a bad file stops start-up naming the problem.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.intents import NO_MATCH, Thresholds

ROLE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
INTENT_PATTERN = re.compile(r"^[a-z0-9_]{1,64}$")


class Stage(IntEnum):
    GREETING = 1
    AUTHENTICATION = 2
    INTENT_CAPTURE = 3
    FULFILLMENT = 4
    CLOSING = 5

    # From tables made once: a turn asks these several times, and the enum's own `name`,
    # `value` and `Stage(n)` run Python code each time (`int(stage)` is the value, in C).
    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def next(self) -> Stage | None:
        return _NEXT[self]

    @classmethod
    def of(cls, flow_id: int) -> Stage:
        """The stage numbered `flow_id`, like `Stage(flow_id)`."""
        return _BY_ID[flow_id]


_BY_ID = {stage.value: stage for stage in Stage}
_LABELS = {stage: stage.name for stage in Stage}
_NEXT = {stage: _BY_ID.get(stage.value + 1) for stage in Stage}


CLASSIFIER_ROLE = "classifier"  # a role by this name in [agents] is the classifier agent
# The built-in model's operating point (bench/RESULTS.md, "Intent classification").
DEFAULT_THRESHOLDS = Thresholds(confidence=0.2, margin=0.05)
MAX_EXAMPLES = 100_000
OnNoMatch = Literal["closing", "stay"]


@dataclass(frozen=True)
class ClassifierRules:
    """How a turn without an intent is classified, and what repeated no-matches do."""

    thresholds: MappingProxyType[Stage, Thresholds]  # every stage has its own
    no_match_limit: int = 3  # consecutive no-matches at a stage before `on_no_match` applies
    # "closing": the call moves to CLOSING (at CLOSING, it ends), its outcome `no_match`;
    # "stay": the call stays, and the fallback agent keeps answering.
    on_no_match: OnNoMatch = "closing"
    agent_role: str | None = None  # the classifier agent's role, when one is configured


DEFAULT_CLASSIFIER = ClassifierRules(MappingProxyType(dict.fromkeys(Stage, DEFAULT_THRESHOLDS)))


@dataclass(frozen=True)
class FlowConfig:
    agents: MappingProxyType[str, str]  # role -> A2A JSON-RPC URL
    stages: MappingProxyType[Stage, MappingProxyType[str, str]]  # stage -> {intent: role}
    fallback_role: str | None = None
    # Agents that deduplicate by messageId: a call to them may be retried even after it was sent.
    idempotent_roles: frozenset[str] = frozenset()
    # intent -> what callers say for it, in any language: the built-in classifier learns them.
    examples: MappingProxyType[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    classifier: ClassifierRules = DEFAULT_CLASSIFIER
    stage_of_intent: MappingProxyType[str, Stage] = field(init=False)

    def __post_init__(self) -> None:
        index = {intent: stage for stage, table in self.stages.items() for intent in table}
        object.__setattr__(self, "stage_of_intent", MappingProxyType(index))

    def allowed_intents(self, stage: Stage) -> list[str]:
        return sorted(self.stages[stage])

    def classifiable(self, stage: Stage) -> bool:
        """Whether a turn at `stage` may come without an intent: an agent classifies, or some
        intent of the stage has examples."""
        if self.classifier.agent_role is not None:
            return True
        return any(intent in self.examples for intent in self.stages[stage])


def load_flows(path: Path, url_overrides: dict[str, str] | None = None) -> FlowConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"flows file not found: {path}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"flows file {path} is not valid TOML: {exc}") from exc
    try:
        return parse_flows(raw, url_overrides or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_flows(raw: dict[str, Any], url_overrides: dict[str, str]) -> FlowConfig:
    unknown = set(raw) - {"agents", "stages", "fallback_agent", "examples", "classifier"}
    if unknown:
        raise ConfigError(f"unknown top-level keys: {sorted(unknown)}")
    table = raw.get("agents", {})
    agents = _parse_agents(table, url_overrides)
    stages = _parse_stages(raw.get("stages", {}), agents)
    fallback = raw.get("fallback_agent")
    if fallback is not None and (not isinstance(fallback, str) or fallback not in agents):
        raise ConfigError(f"fallback_agent {fallback!r} is not a role in [agents]")
    return FlowConfig(
        agents=MappingProxyType(agents),
        stages=stages,
        fallback_role=fallback,
        idempotent_roles=frozenset(_idempotent_roles(table)),
        examples=_parse_examples(raw.get("examples", {}), stages),
        classifier=_parse_classifier(raw.get("classifier", {}), agents),
    )


def _parse_agents(table: Any, url_overrides: dict[str, str]) -> dict[str, str]:
    if not isinstance(table, dict) or not table:
        raise ConfigError("[agents] must map each role to its A2A URL")
    agents = {str(role): _url_of(role, entry) for role, entry in table.items()}
    for role in url_overrides:
        if role not in agents:
            raise ConfigError(f"AGENT_URL_{role.upper()} names role {role!r}, not in [agents]")
    agents.update(url_overrides)
    for role, url in agents.items():
        if not ROLE_PATTERN.match(role):
            raise ConfigError(f"role {role!r} must match {ROLE_PATTERN.pattern}")
        _check_url(role, url)
    return agents


def _url_of(role: str, entry: Any) -> Any:
    """An agent is `role = "url"` or `role = { url = "...", idempotent = true }`."""
    if not isinstance(entry, dict):
        return entry
    unknown = set(entry) - {"url", "idempotent"}
    if unknown:
        raise ConfigError(f"agent {role!r} has unknown keys {sorted(unknown)}")
    if not isinstance(entry.get("idempotent", False), bool):
        raise ConfigError(f"agent {role!r}: idempotent must be true or false")
    return entry.get("url")


def _idempotent_roles(table: dict[str, Any]) -> list[str]:
    return [role for role, e in table.items() if isinstance(e, dict) and e.get("idempotent")]


def _check_url(role: str, url: Any) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"agent {role!r} URL {url!r} is not an http(s) URL")


def _parse_stages(table: Any, agents: dict[str, str]) -> MappingProxyType:
    if not isinstance(table, dict):
        raise ConfigError("[stages] must map stage numbers to {intent = role} tables")
    expected = {str(stage.value) for stage in Stage}
    if set(table) != expected:
        missing, extra = sorted(expected - set(table)), sorted(set(table) - expected)
        raise ConfigError(f"[stages] must define exactly 1..5 (missing {missing}, unknown {extra})")
    seen: dict[str, Stage] = {}
    stages: dict[Stage, MappingProxyType[str, str]] = {}
    for stage in Stage:
        intents = table[str(stage.value)]
        if not isinstance(intents, dict) or not intents:
            raise ConfigError(f"stage {stage.value} ({stage.label}) needs at least one intent")
        for intent, role in intents.items():
            _check_intent(stage, intent, role, agents, seen)
            seen[intent] = stage
        stages[stage] = MappingProxyType(dict(intents))
    return MappingProxyType(stages)


def _check_intent(
    stage: Stage, intent: str, role: Any, agents: dict[str, str], seen: dict[str, Stage]
) -> None:
    if not INTENT_PATTERN.match(intent):
        raise ConfigError(f"intent {intent!r} must match {INTENT_PATTERN.pattern}")
    if intent == NO_MATCH:
        raise ConfigError(f"intent {NO_MATCH!r} is reserved: it records a turn no intent fits")
    if intent in seen:
        raise ConfigError(f"intent {intent!r} is at stage {seen[intent].value} and {stage.value}")
    if not isinstance(role, str) or role not in agents:
        raise ConfigError(f"stage {stage.value} intent {intent!r} names unknown role {role!r}")


def _parse_examples(table: Any, stages: MappingProxyType) -> MappingProxyType:
    if not isinstance(table, dict):
        raise ConfigError("[examples] must map intents to lists of what callers say")
    known = {intent for intents in stages.values() for intent in intents}
    examples: dict[str, tuple[str, ...]] = {}
    for intent, said in table.items():
        where = f"[examples] {intent!r}"
        if intent not in known:
            raise ConfigError(f"{where} is not an intent of any stage")
        if not isinstance(said, list) or not said:
            raise ConfigError(f"{where} must be a non-empty list of strings")
        for n, text in enumerate(said, 1):
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where} example {n} must be a non-blank string")
        examples[intent] = tuple(said)
    if len(examples) == 1:
        raise ConfigError("[examples] needs examples for at least two intents to tell apart")
    if sum(map(len, examples.values())) > MAX_EXAMPLES:
        raise ConfigError(f"[examples] holds more than {MAX_EXAMPLES} examples")
    return MappingProxyType(examples)


def _parse_classifier(table: Any, agents: dict[str, str]) -> ClassifierRules:
    if not isinstance(table, dict):
        raise ConfigError("[classifier] must be a table")
    unknown = set(table) - {"confidence", "margin", "no_match_limit", "on_no_match", "stages"}
    if unknown:
        raise ConfigError(f"[classifier] has unknown keys {sorted(unknown)}")
    base = _thresholds("[classifier]", table, DEFAULT_THRESHOLDS)
    per_stage = table.get("stages", {})
    if not isinstance(per_stage, dict):
        raise ConfigError("[classifier.stages] must map stage numbers to thresholds")
    stage_numbers = {str(stage.value): stage for stage in Stage}
    for key, override in per_stage.items():
        if key not in stage_numbers:
            raise ConfigError(f"[classifier.stages] {key!r} is not a stage (1..5)")
        if not isinstance(override, dict) or set(override) - {"confidence", "margin"}:
            raise ConfigError(f"[classifier.stages] {key!r} may set only confidence and margin")
    thresholds = {
        stage: _thresholds(f"[classifier.stages] {key!r}", per_stage.get(key, {}), base)
        for key, stage in stage_numbers.items()
    }
    limit = table.get("no_match_limit", 3)
    if type(limit) is not int or limit < 1:
        raise ConfigError("[classifier] no_match_limit must be a whole number, at least 1")
    on_no_match = table.get("on_no_match", "closing")
    if on_no_match not in ("closing", "stay"):
        raise ConfigError('[classifier] on_no_match must be "closing" or "stay"')
    return ClassifierRules(
        MappingProxyType(thresholds),
        no_match_limit=limit,
        on_no_match=on_no_match,
        agent_role=CLASSIFIER_ROLE if CLASSIFIER_ROLE in agents else None,
    )


def _thresholds(where: str, table: dict[str, Any], base: Thresholds) -> Thresholds:
    values = {}
    for name in Thresholds._fields:
        value = table.get(name, getattr(base, name))
        if type(value) not in (int, float) or not 0 <= value <= 1:
            raise ConfigError(f"{where} {name} must be a number from 0 to 1")
        values[name] = float(value)
    return Thresholds(**values)
