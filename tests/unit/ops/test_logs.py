"""logs.py: our structlog events and standard-library records leave as lines of one shape."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from orchestrator_flows.ops.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_test_logging() -> Iterator[None]:
    yield
    configure_logging("INFO", "json")  # as tests/conftest.py sets it


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_events_and_library_records_render_as_one_json_shape(capsys) -> None:
    configure_logging("INFO", "json")

    structlog.get_logger("orchestrator.turns").info("turn", seq=3, error=None)
    logging.getLogger("aiohttp.client").warning("server %s", "busy")

    event, record = lines_of(capsys)
    assert event["event"] == "turn" and (event["seq"], event["error"]) == (3, None)
    assert record["event"] == "server busy"
    for line, logger, level in ((event, "orchestrator.turns", "info"),
                                (record, "aiohttp.client", "warning")):  # fmt: skip
        assert (line["logger"], line["level"]) == (logger, level)
        assert line["timestamp"].endswith("Z")


def test_an_event_that_brings_its_moment_keeps_it_and_others_are_stamped_now(capsys) -> None:
    configure_logging("INFO", "json")

    structlog.get_logger("orchestrator.turns").info("turn", timestamp="2026-12-02T01:02:03Z")
    structlog.get_logger("orchestrator.turns").info("turn")

    brought, stamped = lines_of(capsys)
    assert brought["timestamp"] == "2026-12-02T01:02:03Z"
    assert stamped["timestamp"] > brought["timestamp"] and stamped["timestamp"].endswith("Z")


def test_level_filters_our_events_and_library_records_alike(capsys) -> None:
    configure_logging("WARNING", "json")

    structlog.get_logger("orchestrator.turns").info("turn")
    logging.getLogger("orchestrator").info("hidden")
    structlog.get_logger("orchestrator.turns").warning("lease release failed")

    assert [line["event"] for line in lines_of(capsys)] == ["lease release failed"]


def test_exception_is_one_string_field_on_one_line(capsys) -> None:
    configure_logging("INFO", "json")

    try:
        raise ValueError("broken")
    except ValueError:
        structlog.get_logger("orchestrator").exception("failed")
        logging.getLogger("orchestrator").exception("failed too")

    for line in lines_of(capsys):
        assert "ValueError: broken" in line["exception"]
        assert line["level"] == "error"


def test_console_format_is_for_people(capsys) -> None:
    configure_logging("DEBUG", "console")

    structlog.get_logger("orchestrator.turns").debug("turn", seq=1)

    logged = capsys.readouterr().err
    assert "turn" in logged and "seq=1" in logged and "[orchestrator.turns]" in logged
    assert not logged.startswith("{")
