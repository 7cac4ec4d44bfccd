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


def add_slow_agent_options(parser: argparse.ArgumentParser) -> None:
    """--agent-delay-ms, --service-env and --workers: the stub agent's pace, the service's
    settings."""
    parser.add_argument(
        "--agent-delay-ms", type=int, default=0, help="the stub agent answers after this long"
    )
    add_service_options(parser)


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """--service-env and --workers: the service's settings and its uvicorn workers."""
    parser.add_argument(
        "--service-env",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service's environment (repeat), e.g. MAX_TURNS_IN_FLIGHT=300",
    )
    parser.add_argument("--workers", type=int, default=1, help="service uvicorn workers")


def _setting(option: str) -> tuple[str, str]:
    name, equals, value = option.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{option!r} is not NAME=VALUE")
    return name.upper(), value


def print_run_lines(service_dir: Path, service_env: list[tuple[str, str]] = ()) -> None:
    """The command as typed, the machine, and which service was measured (and its settings)."""
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(describe_machine())
    settings = "".join(f" {name}={value}" for name, value in service_env)
    print(f"service: `uvicorn main:app` in {service_dir}{settings}")
