"""Process-level settings of long-running processes."""

from __future__ import annotations

import gc

from hongyan.runtime import settle_heap


def test_settle_heap_freezes_the_start_up_heap_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0  # what was alive is out of the collector's way
        assert gc.get_threshold()[0] == 20_000
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # new cycles are still found and freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
