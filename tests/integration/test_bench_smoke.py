"""The benchmark (bench/run.py) runs end to end in its tiny --smoke mode. No timing is checked:
a benchmark never runs as a timed test; this only proves the harness works."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
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
    """One of bench/'s scripts, as a user runs it from the repository. In a session of its own:
    a script that failed and left a server of its own behind (holding its output open), or that
    hangs, is killed with everything it started, and the test shows what it printed."""
    with subprocess.Popen(
        [sys.executable, f"bench/{script}", *args],
        cwd=SERVICE_DIR,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"bench/{script} (exit status {process.returncode}) did not finish or left a"
                f" process holding its output after {timeout:g} s:\n{stdout}\n{stderr}"
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what it left behind, if anything
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


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


def test_slow_agent_run_reports_memory_per_turn_and_errors_by_answer() -> None:
    run = run_script("run.py", "--smoke", "--agent-delay-ms", "20", "--skip-scaling", timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for row in ("RSS MiB, idle", "RSS MiB, in rounds", "RSS KiB/turn in flight"):
        assert any(line.startswith(row) for line in lines), f"no {row!r} row:\n{run.stdout}"
    assert re.search(r"^errors\s+0\s+0$", run.stdout, re.MULTILINE), run.stdout
    assert "  service errors by answer: none" in lines, run.stdout
    assert "  floor errors by answer: none" in lines, run.stdout
    assert "stub agent (20 ms)" in run.stdout
    assert "targets (issue 22, slow agent" in run.stdout
    assert re.search(r"^trail check: PASS: [\d,]+ of [\d,]+", run.stdout, re.MULTILINE)


def test_burst_counts_every_answer_and_checks_each_first_step() -> None:
    run = run_script("burst.py", "--smoke", timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    # --smoke releases 20 turns at once, on 20 connections opened beforehand.
    assert re.search(r"^connections open at release\s+20\s+20$", run.stdout, re.M), run.stdout
    assert re.search(r"^  200 success\s+20\s+20$", run.stdout, re.MULTILINE), run.stdout
    assert re.search(r"^service 503 store_unavailable: 0$", run.stdout, re.MULTILINE)
    assert re.search(r"^trail check: PASS: 20 of 20 ", run.stdout, re.MULTILINE), run.stdout


def test_overload_run_reports_shed_turns_next_to_an_unloaded_run() -> None:
    run = run_script("overload.py", "--smoke", timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "MAX_TURNS_IN_FLIGHT=4" in run.stdout
    lines = run.stdout.splitlines()
    for row in ("admitted step p99 ms", "503 overloaded p99 ms", "503 overloaded, all rounds"):
        assert any(line.startswith(row) for line in lines), f"no {row!r} row:\n{run.stdout}"
    # How many turns are shed depends on the service measured; other errors never happen.
    assert re.search(r"^other errors\s+0\s+0$", run.stdout, re.MULTILINE), run.stdout
    assert "admitted p99, overloaded / unloaded:" in run.stdout
    assert re.search(r"^trail check: PASS: [\d,]+ of [\d,]+", run.stdout, re.MULTILINE)


def test_streaming_run_times_the_first_chunk_and_the_end_through_the_service_and_alone() -> None:
    run = run_script("stream.py", "--smoke", timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    number = r"\d+\.\d"
    for row in ("first chunk p50 ms", "first chunk p99 ms", "end p50 ms", "end p99 ms"):
        # floor, service, and what the service added (signed): every figure measured.
        figures = rf"^{row}\s+{number}\s+{number}\s+[+-]{number}$"
        assert re.search(figures, run.stdout, re.MULTILINE), f"no {row!r} row:\n{run.stdout}"
    assert re.search(r"^errors \(all rounds\)\s+0\s+0$", run.stdout, re.MULTILINE), run.stdout
    assert re.search(r"^requests measured/round\s+[1-9][\d,]*\s+[1-9][\d,]*$", run.stdout, re.M)
    assert re.search(r"^trail check: PASS: [\d,]+ of [\d,]+", run.stdout, re.MULTILINE)
    # Whether the targets are met is a measurement; that each is judged is the harness's job.
    verdicts = re.findall(
        r"^  (?:first chunk|end) p(?:50|99): [+-]\S+ ms <= \d+ ms: (met|MISSED)$", run.stdout, re.M
    )
    assert len(verdicts) == 4, run.stdout


def test_call_search_run_times_each_search_against_its_floor_and_finds_the_calls() -> None:
    run = run_script("call_search.py", "--calls", "60", "--runs", "1")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "60 calls (" in run.stdout
    for name in ("no filter, page 1", "account filter", "call id"):
        row = (
            rf"^  {name}\s+[\d.]+ ms\s+floor\s+[\d.]+ ms\s+[\d.]+x\s+"
            r"loop held\s+[\d.]+ ms at most\s+\(([1-9]\d*) found"
        )
        assert re.search(row, run.stdout, re.MULTILINE), f"no {name!r} row:\n{run.stdout}"
    assert "(60 found, 50 on the page)" in run.stdout
