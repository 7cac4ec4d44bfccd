"""A call's records as Redis holds them, each carrying the version of its format in `v`.

Three kinds: the call's state, each step of its audit trail, and the answer kept for an
Idempotency-Key (models.py types them; `v` is storage only, never in an API answer). Written
always in the current version. Read: an older version is upgraded here, one step at a time; a
record without `v` is version 0, the format written before records carried versions. A record
this code cannot read is refused with StoredRecordUnreadable: one written by a newer release (a
rolling deploy; any change to a record's fields must raise its version) or a damaged one. Pure:
no I/O; the store logs the refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import orjson

from orchestrator_flows.core.errors import StoredRecordUnreadable
from orchestrator_flows.core.models import CallState, StepRecord, StoredAnswer

VERSION_FIELD = "v"
# What an upgrade takes and gives: the record of one version, without `v`, as the next one.
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
Record = TypeVar("Record", CallState, StepRecord, StoredAnswer)


def _unversioned(record: dict[str, Any]) -> dict[str, Any]:
    """Version 0 to 1: version 1 added only `v` itself."""
    return record


def _state_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Version 2 counts the classifier's no-matches and says why a call was sent to CLOSING."""
    return record | {"no_match_streak": 0, "escalation": None}


def _step_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Version 2 says who chose the intent; before, only the client could."""
    return record | {
        "intent_source": "client",
        "intent_confidence": None,
        "intent_alternatives": [],
        "no_match_reason": None,
        "intent_classifier": None,
    }


@dataclass(frozen=True)
class RecordFormat(Generic[Record]):
    kind: str  # as logs and error answers name it
    fields: frozenset[str]  # the current version's, every one required
    upgrades: tuple[Upgrade, ...]  # upgrades[n] turns version n into n + 1
    version: int = field(init=False)
    _opening: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", len(self.upgrades))
        object.__setattr__(self, "_opening", b'{"%s":%d,' % (VERSION_FIELD.encode(), self.version))

    def write(self, record: Record) -> bytes:
        # `v` first, spliced in rather than copied into the dict: a record always has fields,
        # so its JSON opens with `{"`.
        return self._opening + orjson.dumps(record)[1:]

    def read(self, raw: bytes, call_id: str) -> Record:
        """The record in the current version, or StoredRecordUnreadable."""
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._malformed(call_id, None, "it is not JSON") from None
        if not isinstance(record, dict):
            raise self._malformed(call_id, None, "it is not a JSON object")
        version = record.pop(VERSION_FIELD, 0)
        if type(version) is not int or version < 0:
            raise self._malformed(call_id, None, f"its {VERSION_FIELD!r} is not a version")
        if version > self.version:
            raise self._newer(call_id, version)
        for upgrade in self.upgrades[version:]:
            record = upgrade(record)
        if record.keys() != self.fields:
            raise self._malformed(call_id, version, "its fields are not its version's")
        return cast(Record, record)

    def _newer(self, call_id: str, version: int) -> StoredRecordUnreadable:
        return StoredRecordUnreadable(
            f"call {call_id}'s {self.kind} record is in format version {version}, newer than this"
            f" release reads (up to {self.version}); nothing was changed; retry shortly",
            headers={"Retry-After": "5"},
            call_identify_id=call_id,
            record=self.kind,
            version=version,
            reason="newer_version",
        )

    def _malformed(self, call_id: str, version: int | None, why: str) -> StoredRecordUnreadable:
        return StoredRecordUnreadable(
            f"call {call_id}'s {self.kind} record cannot be read ({why}); nothing was changed",
            call_identify_id=call_id,
            record=self.kind,
            version=version,
            reason="malformed",
        )


def _fields(record: type[Mapping[str, Any]]) -> frozenset[str]:
    return frozenset(record.__required_keys__ | record.__optional_keys__)  # type: ignore[attr-defined]


STATE = RecordFormat[CallState]("state", _fields(CallState), (_unversioned, _state_1_to_2))
STEP = RecordFormat[StepRecord]("step", _fields(StepRecord), (_unversioned, _step_1_to_2))
ANSWER = RecordFormat[StoredAnswer]("answer", _fields(StoredAnswer), (_unversioned,))
