"""Per-call cost of masking one turn, as turns.py masks it: mask_caller_words on the caller's
words, then mask_text on the agent's answer with the secrets found. Medians of timeit repeats.

    python bench/masking_cost.py                             # this checkout's core/masking/mask.py
    python bench/masking_cost.py --before /tmp/old/masking.py  # and another, interleaved

With --before, the two are timed in alternate repeats, so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import timeit
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator_flows.core.masking import mask as masking

SHORT = (
    "I want a refund for order 4417",
    'I understand you want a refund: "I want a refund for order 4417" (reference numbers I '
    "heard: 4417). Shall I go ahead for ACC-1?",
)
PARAGRAPH = (
    "Hi, I was charged $1,250.00 twice on 2024-01-15 at 10:30 for order 77812 and again for "
    "ORD-2024-00042. My card is 4111 1111 1111 1111, the cvv is 123 and you can reach me on "
    "(415) 555-0100 or jane.doe@example.com. The code you sent was 482913. Thanks!"
)
ECHO = "I heard: " + PARAGRAPH.replace("4111 1111 1111 1111", "4111, 1111, 1111, 1111")
FILLER = "We looked at your account and everything seems in order for this month. "
LONGEST = (FILLER * 60)[:3700] + PARAGRAPH[:300]  # the service takes 4,000 characters at most
TURNS = {
    "short": ((SHORT[0], SHORT[1]), 2000),
    "paragraph": ((PARAGRAPH, ECHO), 200),
    "4,000 chars": ((LONGEST, LONGEST), 50),
}


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("masking_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_turn(module: ModuleType, said: str, answer: str) -> None:
    policy = module.MaskingPolicy()
    found = module.mask_caller_words(said, policy)
    module.mask_text(answer, policy, found.secrets)


def medians(modules: list[ModuleType], turn: tuple[str, str], number: int) -> list[float]:
    runs: list[list[float]] = [[] for _ in modules]
    for _ in range(15):
        for index, module in enumerate(modules):
            seconds = timeit.timeit(lambda m=module: one_turn(m, *turn), number=number)
            runs[index].append(seconds / number * 1e6)
    return [statistics.median(r) for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="another masking.py to time against this one")
    args = parser.parse_args()
    modules = [load(args.before), masking] if args.before else [masking]
    for module in modules:
        for turn, _ in TURNS.values():
            one_turn(module, *turn)  # compile and warm every pattern first
    print("turn          chars (said + answer)  " + "  ".join(
        ["before µs", "after µs", "ratio"] if args.before else ["µs"]
    ))  # fmt: skip
    for name, (turn, number) in TURNS.items():
        figures = medians(modules, turn, number)
        row = "  ".join(f"{f:9.1f}" for f in figures)
        if args.before:
            row += f"  {figures[1] / figures[0]:5.2f}x"
        print(f"{name:12} {len(turn[0]):5} + {len(turn[1]):5}          {row}")


if __name__ == "__main__":
    main()
