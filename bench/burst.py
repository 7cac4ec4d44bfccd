"""A burst: N turns released at once against the service, then against the floor, with an agent
that answers after --agent-delay-ms: `python bench/burst.py` prints their answers by status and
error code.

Each turn is the first turn of a new call, sent over a connection the load generator opened
beforehand, so all N reach the server together. The figure that matters is the service's
`503 store_unavailable`: a healthy Redis must never be the reason a turn of a burst fails. Every
call answered 200 has its one step checked in Redis. Exit status 1 if a turn failed or a trail
is wrong.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from options import add_slow_agent_options, print_run_lines
from processes import REPO, BenchError, run_loadgen
from redis_view import TrailCheck, check_trails
from report import print_trail_check
from stack import Stack, running_stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000, help="turns released at once")
    parser.add_argument("--bursts", type=int, default=3, help="bursts each of service and floor")
    parser.add_argument("--service-dir", type=Path, default=REPO, help="where to run main:app")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks it works")
    add_slow_agent_options(parser)
    parser.set_defaults(agent_delay_ms=200)
    args = parser.parse_args(argv)
    if args.smoke:
        args.turns, args.bursts, args.agent_delay_ms = 20, 1, 50
    return args


def burst(stack: Stack, url: str, turns: int, tag: str) -> dict:
    stack.redis.flushall()
    return run_loadgen(
        "burst", url + "/orchestrate", timeout=180, turns=turns, tag=tag, api_key=stack.client_key
    )


def run_bursts(stack: Stack, args: argparse.Namespace) -> tuple[dict[str, list[dict]], TrailCheck]:
    outs: dict[str, list[dict]] = {"service": [], "floor": []}
    trails = TrailCheck()
    for number in range(1, args.bursts + 1):
        for name, url in (("service", stack.service_url), ("floor", stack.floor_url)):
            out = burst(stack, url, args.turns, f"B{name[0].upper()}{number}")
            if name == "service":
                check_trails(stack.redis, out["completed_calls"], trails, turns=1)
            outs[name].append(out)
            kinds = ", ".join(f"{kind}: {count}" for kind, count in out["answers"].items())
            print(f"burst {number}/{args.bursts}, {name}: {kinds}", flush=True)
    return outs, trails


def print_bursts(outs: dict[str, list[dict]], turns: int) -> None:
    print(f"{'':48}{'service':>12}{'floor':>12}   (each figure: the median over bursts)")
    rows = [
        ("connections open at release", lambda o: o["connections_open"], 0),
        ("answer p50 ms", lambda o: o["ms"]["p50"], 1),
        ("answer p90 ms", lambda o: o["ms"]["p90"], 1),
        ("answer p99 ms", lambda o: o["ms"]["p99"], 1),
        ("all answered after ms", lambda o: o["all_answered_ms"], 1),
    ]
    for label, of, digits in rows:
        cells = [_median_cell([of(o) for o in outs[name]], digits) for name in outs]
        print(f"{label:48}{cells[0]:>12}{cells[1]:>12}")
    print(f"answers to {turns:,} x {len(outs['service'])} turns, by status and error code:")
    totals = {name: Counter() for name in outs}
    for name, each in outs.items():
        for out in each:
            totals[name].update(out["answers"])
    for kind in sorted(totals["service"].keys() | totals["floor"].keys()):
        print(f"  {kind:46}{totals['service'][kind]:>12,}{totals['floor'][kind]:>12,}")
    store = sum(n for kind, n in totals["service"].items() if "store_unavailable" in kind)
    print(f"service 503 store_unavailable: {store}")
    for sample in [s for name in outs for o in outs[name] for s in o["error_samples"]][:5]:
        print(f"  error: {sample}")


def _median_cell(values: list[float | None], digits: int) -> str:
    present = sorted(v for v in values if v is not None)
    return f"{present[len(present) // 2]:,.{digits}f}" if present else "-"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_run_lines(args.service_dir, args.service_env)
    print(
        f"setup: service {args.workers} worker(s), floor 1 worker; {args.bursts} bursts of"
        f" {args.turns:,} first turns each, released at once; agent answers after"
        f" {args.agent_delay_ms} ms"
    )
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orch-burst-") as tmp,
            running_stack(args, Path(tmp), args.turns) as stack,
        ):
            outs, trails = run_bursts(stack, args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print()
    print_bursts(outs, args.turns)
    print()
    print_trail_check(trails.calls, trails.passed, trails.failures, turns=1)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    answers = Counter()
    for out in [o for each in outs.values() for o in each]:
        answers.update(out["answers"])
    failed = answers.total() - answers["200 success"]
    return 0 if failed == 0 and trails.ok else 1


if __name__ == "__main__":
    sys.exit(main())
