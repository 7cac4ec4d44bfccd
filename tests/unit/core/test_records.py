"""A call's stored records: written in the current version, older ones upgraded as read, and
any this release cannot read refused with a 503 that names the call, the record and why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from orchestrator_flows.core.errors import StoredRecordUnreadable
from orchestrator_flows.core.models import StoredAnswer
from orchestrator_flows.core.records import ANSWER, STATE, STEP, VERSION_FIELD, RecordFormat
from tests.support.leaks import shows_test_card
from tests.support.records import call_state, call_state_v1, step_record, step_record_v1

CALL = "CALL-1"
ANSWERED = StoredAnswer(fingerprint="f" * 64, status_code=200, body='{"step_seq": 1}')
EACH_KIND = [(STATE, call_state()), (STEP, step_record(1)), (ANSWER, ANSWERED)]
KINDS = ["state", "step", "answer"]
# Each kind as version 1 wrote it, and as it reads now.
EACH_KIND_AT_1 = [
    (STATE, call_state_v1(), call_state()),
    (STEP, step_record_v1(1), step_record(1)),
    (ANSWER, ANSWERED, ANSWERED),
]


def refusal(stored_as: RecordFormat[Any], raw: bytes) -> StoredRecordUnreadable:
    with pytest.raises(StoredRecordUnreadable) as caught:
        stored_as.read(raw, CALL)
    return caught.value


@pytest.mark.parametrize(("stored_as", "record"), EACH_KIND, ids=KINDS)
def test_a_record_is_written_with_its_version_first_and_read_back_without_it(
    stored_as: RecordFormat[Any], record: dict[str, Any]
) -> None:
    raw = stored_as.write(record)

    assert raw.startswith(b'{"v":%d,' % stored_as.version)
    assert stored_as.read(raw, CALL) == record


@pytest.mark.parametrize(("stored_as", "old", "current"), EACH_KIND_AT_1, ids=KINDS)
def test_a_record_from_before_versions_is_read_as_the_current_version(
    stored_as: RecordFormat[Any], old: dict[str, Any], current: dict[str, Any]
) -> None:
    unversioned = orjson.dumps(old)  # as the release before versions wrote it

    assert stored_as.read(unversioned, CALL) == current


@pytest.mark.parametrize(("stored_as", "old", "current"), EACH_KIND_AT_1, ids=KINDS)
def test_a_version_1_record_reads_as_one_whose_intent_the_client_chose(
    stored_as: RecordFormat[Any], old: dict[str, Any], current: dict[str, Any]
) -> None:
    written_by_the_last_release = orjson.dumps({VERSION_FIELD: 1, **old})

    assert stored_as.read(written_by_the_last_release, CALL) == current


def test_version_2_counts_no_matches_and_records_who_chose_the_intent() -> None:
    state = STATE.read(orjson.dumps({VERSION_FIELD: 1, **call_state_v1()}), CALL)
    step = STEP.read(orjson.dumps({VERSION_FIELD: 1, **step_record_v1(1)}), CALL)

    assert (state["no_match_streak"], state["escalation"]) == (0, None)
    assert step["intent_source"] == "client"
    assert (step["intent_confidence"], step["intent_alternatives"]) == (None, [])


def test_each_older_version_is_upgraded_one_step_at_a_time() -> None:
    # A format at version 2 whose version 1 called the field "said" and version 0 "text".
    def rename(old: str, new: str) -> Any:
        return lambda record: {new if key == old else key: value for key, value in record.items()}

    stored_as = RecordFormat[Any](
        "note", frozenset({"words"}), (rename("text", "said"), rename("said", "words"))
    )

    assert stored_as.read(b'{"text": "hi"}', CALL) == {"words": "hi"}
    assert stored_as.read(b'{"v": 1, "said": "hi"}', CALL) == {"words": "hi"}
    assert stored_as.read(b'{"v": 2, "words": "hi"}', CALL) == {"words": "hi"}


@pytest.mark.parametrize(("stored_as", "record"), EACH_KIND, ids=KINDS)
def test_a_record_from_a_newer_release_is_refused_for_a_retry_later(
    stored_as: RecordFormat[Any], record: dict[str, Any]
) -> None:
    newer_version = stored_as.version + 1
    newer = orjson.dumps({VERSION_FIELD: newer_version, **record})

    refused = refusal(stored_as, newer)

    assert (refused.status_code, refused.code) == (503, "store_record_unreadable")
    assert refused.details == {
        "call_identify_id": CALL,
        "record": stored_as.kind,
        "version": newer_version,
        "reason": "newer_version",
    }
    assert refused.headers == {"Retry-After": "5"}
    assert f"version {newer_version}" in refused.message
    assert "nothing was changed" in refused.message


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'["a", "list"]',
        b'{"v": "1", "step_count": 0}',
        b'{"v": -1, "step_count": 0}',
        b'{"v": true, "step_count": 0}',
        b'{"v": 1.0, "step_count": 0}',
    ],
    ids=["not-json", "not-an-object", "version-text", "version-negative", "version-bool", "float"],
)
def test_a_record_that_is_not_a_versioned_object_is_refused_as_malformed(raw: bytes) -> None:
    refused = refusal(STATE, raw)

    assert refused.code == "store_record_unreadable"
    assert refused.details == {
        "call_identify_id": CALL,
        "record": "state",
        "version": None,
        "reason": "malformed",
    }
    assert "Retry-After" not in refused.headers  # a retry would read the same record


@pytest.mark.parametrize(
    "change",
    [
        lambda state: state | {"current_stage": state.pop("current_flow_id")},  # renamed
        lambda state: state | {"extra": 1},
        lambda state: {key: value for key, value in state.items() if key != "eci"},
    ],
    ids=["renamed", "added", "missing"],
)
@pytest.mark.parametrize("version", [0, 1, 2])
def test_a_record_whose_fields_are_not_its_versions_is_refused_as_malformed(
    change: Any, version: int
) -> None:
    state = change(dict(call_state() if version == STATE.version else call_state_v1()))
    raw = orjson.dumps({VERSION_FIELD: version, **state} if version else state)

    refused = refusal(STATE, raw)

    assert refused.details["reason"] == "malformed"
    assert refused.details["version"] == version


def test_a_refusal_names_no_value_of_the_record() -> None:
    # What the caller said is in the step: the refusal (logged, answered) carries none of it.
    step = step_record(1, input_message="my card is 4111 1111 1111 1111")
    raw = orjson.dumps({VERSION_FIELD: 9, **step})

    refused = refusal(STEP, raw)

    assert not shows_test_card(refused.message + str(refused.details))
