"""A serving process tunes the collector once its app is built (``server.tune_gc``)."""

from __future__ import annotations

import gc

from gateway.serve.server import GC_THRESHOLD, tune_gc


def test_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLD
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
