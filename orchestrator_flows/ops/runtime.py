"""Process-level tuning for a long-running server: the cyclic garbage collector.

With CPython's defaults a collection starts every 700 net allocations of container objects,
which a busy worker reaches within a few turns, and every full collection walks the whole heap
(FastAPI, pydantic's schemas, the a2a-sdk), pausing every turn in flight. Almost everything a
turn allocates is freed by reference counting as soon as the turn ends, so collecting far less
often loses nothing; and the objects made at start-up live as long as the process, so they are
moved out of the collector's sight (`gc.freeze`). What this was worth: bench/RESULTS.md, "What
step 2 changed, and what each was worth".
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000  # net container allocations between young collections (default 700)
_frozen = False


def tune_garbage_collector() -> None:
    """Once per process, when start-up is done: freeze what exists, collect less often."""
    global _frozen
    if _frozen:
        return  # tests build many apps in one process; their leftovers are not start-up state
    _frozen = True
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
