"""runtime.py: the garbage collector is tuned once per process, after start-up."""

from __future__ import annotations

import gc

from orchestrator_flows.ops import runtime


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    runtime.tune_garbage_collector()  # a no-op if an app's start-up already did it

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == runtime.GEN0_THRESHOLD


def test_second_call_freezes_nothing_more() -> None:
    runtime.tune_garbage_collector()
    frozen = gc.get_freeze_count()
    leftovers = [[index] for index in range(1000)]  # new container objects, tracked by gc

    runtime.tune_garbage_collector()

    assert gc.get_freeze_count() == frozen
    assert leftovers and gc.is_tracked(leftovers)
