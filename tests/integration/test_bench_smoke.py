"""The benchmark (bench/run.py) runs end to end in its tiny --smoke mode. No timing is checked:
a benchmark never runs as a timed test; this only proves the harness works."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.integration.conftest import SERVICE_DIR, clean_environment

pytestmark = pytest.mark.integration

TABLE_ROWS = [
    "steps/s",
    "calls/s",
    "step p50 ms",
    "step p90 ms",
    "step p99 ms",
    "call p50 ms",
    "call p99 ms",
    "CPU ms/step (server)",
    "Redis bytes/call",
    "errors",
]


def run_script(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One of bench/'s scripts, as a user runs it from the repository."""
    return subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=SERVICE_DIR,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def smoke_run() -> subprocess.CompletedProcess[str]:
    return run_script("run.py", "--smoke", timeout=120)


def test_smoke_run_exits_cleanly(smoke_run: subprocess.CompletedProcess[str]) -> None:
    assert smoke_run.returncode == 0, smoke_run.stdout + smoke_run.stderr


def test_smoke_run_prints_the_whole_table(smoke_run: subprocess.CompletedProcess[str]) -> None:
    lines = smoke_run.stdout.splitlines()
    for row in TABLE_ROWS:
        assert any(line.startswith(row) for line in lines), f"no {row!r} row:\n{smoke_run.stdout}"
    assert "load generator straight at the stub agent" in smoke_run.stdout
    assert "GET /session/{id}/steps" in smoke_run.stdout
    assert "service/floor" in smoke_run.stdout


def test_smoke_run_has_no_errors_and_every_trail_checks_out(
    smoke_run: subprocess.CompletedProcess[str],
) -> None:
    errors = re.search(r"^errors\s+(\d+)\s+(\d+)$", smoke_run.stdout, re.MULTILINE)
    assert errors is not None, smoke_run.stdout
    assert errors.groups() == ("0", "0")
    growth = re.findall(r"^  (?:turn latency|GET /session).* errors (\d+)", smoke_run.stdout, re.M)
    assert growth == ["0"] * 4, smoke_run.stdout  # every round of the cost-growth checks too
    assert re.search(r"^trail check: PASS: [\d,]+ of [\d,]+", smoke_run.stdout, re.MULTILINE)
    assert "error:" not in smoke_run.stdout


def test_replica_wait_benchmark_runs_and_counts_the_steps_no_replica_confirmed() -> None:
    run = run_script("replica_wait.py", "--calls", "5", "--rounds", "1")

    assert run.returncode == 0, run.stdout + run.stderr
    # How many is a measurement (a loaded machine's replica may miss the 100 ms wait); that
    # a running replica confirms steps is tests/integration/test_sentinel.py's.
    assert re.search(r"^steps no replica confirmed in time: \d+$", run.stdout, re.MULTILINE)
    for row in ("no wait", "WAIT 1 replica", "WAIT adds"):
        assert any(line.startswith(row) for line in run.stdout.splitlines()), run.stdout


@pytest.mark.parametrize("which", ["service", "floor"])
def test_in_process_driver_runs_whole_calls_without_errors(which: str) -> None:
    floor = ["--floor"] if which == "floor" else []
    run = run_script("inprocess.py", "--turns", "25", "--warm", "5", *floor)

    assert run.returncode == 0, run.stdout + run.stderr
    name, _, figures = run.stdout.strip().partition(" ")
    printed = json.loads(figures)
    assert name == which
    assert printed["turns"] >= 25 and printed["errors"] == 0
    assert printed["cpu_us_per_turn"] > 0
