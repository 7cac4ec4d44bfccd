"""The scale-out benchmark (bench/cluster.py) runs end to end in its tiny --smoke mode: a real
3-primary Redis Cluster, three service processes sharing each call's turns, and a single Redis
for reference. No timing is checked; this proves the harness works and the trails are exact."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.conftest import SERVICE_DIR, clean_environment

pytestmark = pytest.mark.integration

TABLE_ROWS = [
    "steps/s (median)",
    "steps/s (min-max)",
    "step p50 ms",
    "step p99 ms",
    "CPU ms/step: service",
    "CPU ms/step: Redis",
    "cores busy: other work",
    "calls on 2+ processes %",
    "errors",
    "trails exact",
]


@pytest.fixture(scope="module")
def smoke_run() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench/cluster.py", "--smoke"],
        cwd=SERVICE_DIR,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _row(output: str, label: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(label))
    return line.removeprefix(label).split()


def test_smoke_run_exits_cleanly(smoke_run: subprocess.CompletedProcess[str]) -> None:
    assert smoke_run.returncode == 0, smoke_run.stdout + smoke_run.stderr


def test_smoke_run_prints_a_column_per_configuration(
    smoke_run: subprocess.CompletedProcess[str],
) -> None:
    lines = smoke_run.stdout.splitlines()
    for row in TABLE_ROWS:
        assert any(line.startswith(row) for line in lines), f"no {row!r} row:\n{smoke_run.stdout}"
        assert len(_row(smoke_run.stdout, row)) == 4, f"{row!r}: not 4 columns"
    headings = " ".join(lines)
    for heading in ("single Redis", "1 process", "2 processes", "3 processes"):
        assert heading in headings
    assert "Note: this machine has" in smoke_run.stdout


def test_smoke_run_has_no_errors_and_every_trail_checks_out(
    smoke_run: subprocess.CompletedProcess[str],
) -> None:
    assert _row(smoke_run.stdout, "errors") == ["0", "0", "0", "0"], smoke_run.stdout
    for cell in _row(smoke_run.stdout, "trails exact"):
        passed, calls = cell.split("/")
        assert passed == calls and int(calls.replace(",", "")) > 0, smoke_run.stdout
    assert re.search(r"^trail check: PASS: [\d,]+ of [\d,]+", smoke_run.stdout, re.MULTILINE)
    assert "error:" not in smoke_run.stdout


def test_turns_of_one_call_go_to_several_processes(
    smoke_run: subprocess.CompletedProcess[str],
) -> None:
    # Five turns each to one of N processes at random: all on one process is rare (1/16, 1/81).
    single, one, two, three = _row(smoke_run.stdout, "calls on 2+ processes %")
    assert single == one == "0"
    assert int(two) > 50 and int(three) > 50, smoke_run.stdout
