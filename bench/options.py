"""What every benchmark script shares: its round options and the lines a result starts with."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from processes import REPO, describe_machine


def add_round_options(parser: argparse.ArgumentParser, *, rounds: int, rounds_help: str) -> None:
    """--seconds, --warmup, --rounds, --concurrency, --service-dir and --smoke."""
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per round")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument(
        "--service-dir",
        type=Path,
        default=REPO,
        help="where to run `uvicorn main:app` (e.g. an export of another commit)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks it works")


def print_run_lines(service_dir: Path) -> None:
    """The command as typed, the machine, and which service was measured."""
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(describe_machine())
    print(f"service: `uvicorn main:app` in {service_dir}")
