"""What the benchmark measured, as results and as the table it prints. No I/O but print."""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

THROUGHPUT_TARGET = 0.7  # service steps/s >= 0.7 x the floor's
P99_TARGET = 1.5  # service step p99 <= 1.5 x the floor's
GROWTH_TARGET = 1.25  # a step may cost at most this much more when Redis or the call is bigger
# Issue 22, with a slow agent: service steps/s >= 0.9 x the floor's, p99 <= 1.2 x the floor's.
SLOW_THROUGHPUT_TARGET = 0.9
SLOW_P99_TARGET = 1.2


@dataclass(frozen=True)
class RoundResult:
    """One round of the closed loop against one server, from the load generator's JSON."""

    steps_per_sec: float
    calls_per_sec: float
    step_ms: dict[str, float | None]
    call_ms: dict[str, float | None]
    cpu_ms_per_step: float | None  # the server's (all the processes given as --cpu-pids)
    bytes_per_call: float | None
    errors: int
    error_samples: list[str]
    # Each other --cpu-group (Redis, the stub, ...) and the load generator's own.
    other_cpu_ms_per_step: dict[str, float | None]
    bench_cores_busy: float  # CPU seconds per second of the server and every group together
    machine_cores_busy: float  # the same for every process on the machine, ours or not
    spread_share: float | None  # completed calls whose turns went to more than one URL
    error_kinds: dict[str, int] = field(default_factory=dict)  # "503 store_unavailable": 12
    rss_bytes: int | None = None  # the server's, the median over the measured window

    @property
    def other_cores_busy(self) -> float:
        """What the rest of the machine (other people's work on a shared one) kept busy."""
        return max(0.0, self.machine_cores_busy - self.bench_cores_busy)

    @classmethod
    def from_loadgen(cls, out: dict[str, Any], memory_growth: int | None = None) -> RoundResult:
        completed, steps, window = len(out["completed_calls"]), out["steps"], out["window_sec"]
        others = out["cpu_sec_by_group"]
        if memory_growth is None or not completed:
            bytes_per_call = None
        else:
            bytes_per_call = memory_growth / completed
        return cls(
            steps_per_sec=steps / window,
            calls_per_sec=out["calls"] / window,
            step_ms=out["step_ms"],
            call_ms=out["call_ms"],
            cpu_ms_per_step=_ms_per_step(out["cpu_sec"], steps),
            bytes_per_call=bytes_per_call,
            errors=out["errors"],
            error_samples=out["error_samples"],
            other_cpu_ms_per_step={name: _ms_per_step(s, steps) for name, s in others.items()},
            bench_cores_busy=(out["cpu_sec"] + sum(others.values())) / window,
            machine_cores_busy=out["machine_busy_sec"] / window,
            spread_share=out["spread_calls"] / completed if completed else None,
            error_kinds=out.get("error_kinds", {}),
        )


def _ms_per_step(cpu_sec: float, steps: int) -> float | None:
    return cpu_sec * 1000 / steps if steps else None


@dataclass
class Latency:
    p50_ms: float | None
    p99_ms: float | None
    errors: int = 0


@dataclass
class Scaling:
    turn_by_live_calls: dict[int, Latency] = field(default_factory=dict)
    steps_read_by_length: dict[int, Latency] = field(default_factory=dict)


@dataclass
class Results:
    service: list[RoundResult] = field(default_factory=list)
    floor: list[RoundResult] = field(default_factory=list)
    stub_requests_per_sec: float = 0.0
    trail_calls: int = 0
    trail_passed: int = 0
    trail_failures: list[str] = field(default_factory=list)
    scaling: Scaling | None = None
    profile: list[str] = field(default_factory=list)
    call_key_bytes: int = 0  # MEMORY USAGE of one completed call's state and steps keys
    concurrency: int = 0
    agent_delay_ms: int = 0
    service_idle_rss: int = 0  # RSS with nothing in flight, after one call
    floor_idle_rss: int = 0

    @property
    def errors(self) -> int:
        scaling = self.scaling or Scaling()
        later = [*scaling.turn_by_live_calls.values(), *scaling.steps_read_by_length.values()]
        return sum(r.errors for r in self.service + self.floor) + sum(x.errors for x in later)

    @property
    def trail_ok(self) -> bool:
        return self.trail_calls > 0 and self.trail_passed == self.trail_calls


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratios(
    service: list[RoundResult], floor: list[RoundResult], of: Callable[[RoundResult], Any]
) -> list[float]:
    """service/floor for each pair of rounds run back to back."""
    return [of(s) / of(f) for s, f in zip(service, floor, strict=False) if of(s) and of(f)]


def _spread(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


ROWS: list[tuple[str, Callable[[RoundResult], float | None], int]] = [
    ("steps/s", lambda r: r.steps_per_sec, 0),
    ("calls/s", lambda r: r.calls_per_sec, 0),
    ("step p50 ms", lambda r: r.step_ms["p50"], 1),
    ("step p90 ms", lambda r: r.step_ms["p90"], 1),
    ("step p99 ms", lambda r: r.step_ms["p99"], 1),
    ("call p50 ms", lambda r: r.call_ms["p50"], 1),
    ("call p90 ms", lambda r: r.call_ms["p90"], 1),
    ("call p99 ms", lambda r: r.call_ms["p99"], 1),
    ("CPU ms/step (server)", lambda r: r.cpu_ms_per_step, 2),
    ("Redis bytes/call", lambda r: r.bytes_per_call, 0),
]
RATIO_ROWS = {
    "steps/s",
    "calls/s",
    "step p50 ms",
    "step p99 ms",
    "call p99 ms",
    "CPU ms/step (server)",
}


def print_table(results: Results) -> None:
    service, floor = results.service, results.floor
    print(f"{'':24}{'service':>12}{'floor':>12}   service/floor: median (min-max of rounds)")
    for label, of, digits in ROWS:
        ratio = _spread(_ratios(service, floor, of)) if label in RATIO_ROWS else ""
        cells = [_number(_median([of(r) for r in rounds]), digits) for rounds in (service, floor)]
        print(f"{label:24}{cells[0]:>12}{cells[1]:>12}   {ratio}")
    if results.call_key_bytes:
        print(
            f"{'':24}(one completed service call: {results.call_key_bytes:,} bytes by MEMORY USAGE)"
        )
    print_memory(results)
    errors = [sum(r.errors for r in rounds) for rounds in (service, floor)]
    print(f"{'errors':24}{errors[0]:>12}{errors[1]:>12}")
    for name, rounds in (("service", service), ("floor", floor)):
        kinds = sum_kinds(r.error_kinds for r in rounds)
        listed = ", ".join(f"{kind}: {count:,}" for kind, count in kinds.most_common())
        print(f"  {name} errors by answer: {listed or 'none'}")
    print("(each figure: the median over rounds; latencies are per round, then the median)")
    for name, rounds in (("service", service), ("floor", floor)):
        per_round = " ".join(f"{r.steps_per_sec:.0f}" for r in rounds)
        print(f"steps/s per round, {name}: {per_round}")
    for sample in [s for r in service + floor for s in r.error_samples][:5]:
        print(f"  error: {sample}")


def sum_kinds(each: Iterable[dict[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for kinds in each:
        total.update(kinds)
    return total


def print_memory(results: Results) -> None:
    """RSS of each server during its rounds, and what each turn in flight adds to it."""
    mib = 1024 * 1024
    cells, per_turn = [], []
    for rounds, before in (
        (results.service, results.service_idle_rss),
        (results.floor, results.floor_idle_rss),
    ):
        rss = _median([r.rss_bytes for r in rounds])
        cells.append(_number(None if rss is None else rss / mib, 1))
        grown = None if rss is None or not before else (rss - before) / results.concurrency / 1024
        per_turn.append(_number(grown, 1))
    idle_rss = (results.service_idle_rss, results.floor_idle_rss)
    idle = [_number(b / mib if b else None, 1) for b in idle_rss]
    print(f"{'RSS MiB, idle':24}{idle[0]:>12}{idle[1]:>12}")
    print(f"{'RSS MiB, in rounds':24}{cells[0]:>12}{cells[1]:>12}")
    note = "(in rounds - idle) / calls in flight"
    print(f"{'RSS KiB/turn in flight':24}{per_turn[0]:>12}{per_turn[1]:>12}   {note}")


def print_calibration(results: Results) -> None:
    if results.agent_delay_ms:
        # A closed loop of C requests each taking the agent's delay can do at most C / delay.
        most = results.concurrency * 1000 / results.agent_delay_ms
        share = results.stub_requests_per_sec / most
        print(
            f"load generator straight at the stub agent ({results.agent_delay_ms} ms):"
            f" {results.stub_requests_per_sec:,.0f} req/s = {share:.0%} of the"
            f" {most:,.0f} req/s that {results.concurrency} in flight allow"
        )
        if share < 0.9:
            print("WARNING: the load generator and the stub do not keep the calls in flight busy:")
            print("         the service's and the floor's figures are both lower bounds.")
        return
    service_rate = _median([r.steps_per_sec for r in results.service]) or 0.0
    times = results.stub_requests_per_sec / service_rate if service_rate else float("inf")
    print(
        f"load generator straight at the stub agent: {results.stub_requests_per_sec:,.0f} req/s"
        f" = {times:.1f}x the service's steps/s"
    )
    if times < 3:
        print("WARNING: the load generator is less than 3x faster than the service: it may be")
        print("         the bottleneck, and the service's figures are a lower bound.")


def print_trail(results: Results) -> None:
    print_trail_check(results.trail_calls, results.trail_passed, results.trail_failures)


def print_trail_check(calls: int, passed: int, failures: list[str], turns: int = 5) -> None:
    verdict = "PASS" if calls > 0 and passed == calls else "FAIL"
    what = "calls have steps 1..5 in order, stages 1..5 once each"
    if turns == 1:
        what = "first turns have step 1, stage 1"
    print(
        f"trail check: {verdict}: {passed:,} of {calls:,} completed {what}, TTL on state and steps"
    )
    for failure in failures:
        print(f"  {failure}")


def print_scaling(scaling: Scaling) -> None:
    print("cost growth (service, 4 calls in flight for turns, 1 at a time for reads):")
    for title, table, per_step in (
        ("turn latency with {n:,} live calls in Redis", scaling.turn_by_live_calls, False),
        ("GET /session/{{id}}/steps, call of {n:,} steps", scaling.steps_read_by_length, True),
    ):
        smallest = min(table) if table else None
        for n, latency in table.items():
            growth = ""
            base = table[smallest] if smallest is not None else None
            if n != smallest and base and base.p50_ms and latency.p50_ms:
                growth = f"   p50 x{latency.p50_ms / base.p50_ms:.2f}"
            if per_step and latency.p50_ms:
                growth += f"   {latency.p50_ms * 1000 / n:,.0f} us/step"
            print(
                f"  {title.format(n=n):48} p50 {_number(latency.p50_ms, 2):>7} ms"
                f"  p99 {_number(latency.p99_ms, 2):>7} ms  errors {latency.errors}{growth}"
            )


def target_lines(results: Results) -> list[tuple[str, bool | None]]:
    """Each target of issue 5 (issue 22 with a slow agent) and whether this run met it (None:
    not measured)."""
    service, floor = results.service, results.floor
    throughput = _ratios(service, floor, lambda r: r.steps_per_sec)
    p99 = _ratios(service, floor, lambda r: r.step_ms["p99"])
    slow = results.agent_delay_ms > 0
    most = SLOW_THROUGHPUT_TARGET if slow else THROUGHPUT_TARGET
    worst = SLOW_P99_TARGET if slow else P99_TARGET
    lines: list[tuple[str, bool | None]] = [
        (
            f"service steps/s >= {most}x the floor's (median ratio)",
            statistics.median(throughput) >= most if throughput else None,
        ),
        (
            f"service step p99 <= {worst}x the floor's (median ratio)",
            statistics.median(p99) <= worst if p99 else None,
        ),
    ]
    if results.scaling:
        lines.append(
            (
                f"turn p50 with the most live calls <= {GROWTH_TARGET}x with the fewest",
                _grows_ok(results.scaling.turn_by_live_calls),
            )
        )
    lines.append(("zero errors", results.errors == 0))
    lines.append(("trail check passes", results.trail_ok))
    return lines


def _grows_ok(table: dict[int, Latency]) -> bool | None:
    small, big = table.get(min(table, default=0)), table.get(max(table, default=0))
    if small is None or big is None or small is big or not small.p50_ms or not big.p50_ms:
        return None
    return big.p50_ms <= GROWTH_TARGET * small.p50_ms


def print_targets(results: Results) -> None:
    issue = "issue 22, slow agent" if results.agent_delay_ms else "issue 5"
    print(f"targets ({issue}; one worker, same run):")
    for label, met in target_lines(results):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
        print(f"  {verdict:13} {label}")


@dataclass
class Configuration:
    """The rounds of one column of bench/cluster.py's table (a Redis and N service processes)."""

    heading: tuple[str, str]  # two short lines, e.g. ("cluster", "2 processes")
    rounds: list[RoundResult] = field(default_factory=list)
    trail_calls: int = 0
    trail_passed: int = 0
    trail_failures: list[str] = field(default_factory=list)


CONFIGURATION_ROWS: list[tuple[str, Callable[[RoundResult], float | None], int]] = [
    ("step p50 ms", lambda r: r.step_ms["p50"], 1),
    ("step p99 ms", lambda r: r.step_ms["p99"], 1),
    ("CPU ms/step: service", lambda r: r.cpu_ms_per_step, 2),
    ("CPU ms/step: Redis", lambda r: r.other_cpu_ms_per_step.get("redis"), 2),
    ("CPU ms/step: stub agent", lambda r: r.other_cpu_ms_per_step.get("stub"), 2),
    ("CPU ms/step: load gen.", lambda r: r.other_cpu_ms_per_step.get("load generator"), 2),
    ("cores busy: all above", lambda r: r.bench_cores_busy, 2),
    ("cores busy: other work", lambda r: r.other_cores_busy, 2),
    (
        "calls on 2+ processes %",
        lambda r: None if r.spread_share is None else 100 * r.spread_share,
        0,
    ),
]


def print_configurations(columns: list[Configuration]) -> None:
    """One column per configuration; each cell the median over its rounds (or a total)."""
    for line in (0, 1):
        print(f"{'':26}" + "".join(f"{c.heading[line]:>15}" for c in columns))
    rates = [[r.steps_per_sec for r in c.rounds] for c in columns]
    medians = [_median(list(each)) for each in rates]
    _print_row("steps/s (median)", [_number(m, 0) for m in medians])
    _print_row("steps/s (min-max)", [f"{min(r):.0f}-{max(r):.0f}" if r else "-" for r in rates])
    first = medians[0]
    _print_row(
        "steps/s vs first column", [f"{m / first:.2f}" if m and first else "-" for m in medians]
    )
    for label, of, digits in CONFIGURATION_ROWS:
        _print_row(label, [_number(_median([of(r) for r in c.rounds]), digits) for c in columns])
    _print_row("errors", [str(sum(r.errors for r in c.rounds)) for c in columns])
    _print_row("trails exact", [f"{c.trail_passed:,}/{c.trail_calls:,}" for c in columns])
    for sample in [s for c in columns for r in c.rounds for s in r.error_samples][:5]:
        print(f"  error: {sample}")


def _print_row(label: str, cells: list[str]) -> None:
    print(f"{label:26}" + "".join(f"{cell:>15}" for cell in cells))


def print_cores_note(cores: int | None, columns: list[Configuration]) -> None:
    """What the table can and cannot show on a machine with this few cores."""
    busiest = max((_median([r.bench_cores_busy for r in c.rounds]) or 0.0) for c in columns)
    note = (
        f"Note: this machine has {cores} cores. 2 and 3 service processes, the 3 Redis nodes,"
        " the stub agent and the load generator all compete for them (the processes above"
        f" kept up to {busiest:.2f} cores busy; 'other work' is everything else running on"
        " the machine meanwhile). The figures show that turns spread across processes stay"
        " correct and what a step costs in CPU on each side, not how throughput scales on"
        " real hardware, where each process would have a core of its own."
    )
    print(textwrap.fill(note, width=100))
