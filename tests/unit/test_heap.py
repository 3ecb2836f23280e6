"""dialerd/heap.py: the heap frozen while any daemon of the process runs, released by the last one."""

from __future__ import annotations

import gc

import pytest

from dialerd import heap


def test_frozen_until_the_last_holder_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_holders", 0)  # whatever an earlier test's daemon left
    gc.unfreeze()
    try:
        heap.freeze()
        assert gc.get_freeze_count() > 0  # this test's own objects are out of the full passes now
        heap.freeze()  # a second in-process daemon
        heap.release()
        assert gc.get_freeze_count() > 0  # the other one still runs
        heap.release()
        assert gc.get_freeze_count() == 0
        heap.release()  # an extra release (a daemon stopped twice) does not go negative
        heap.freeze()
        assert gc.get_freeze_count() > 0
        heap.release()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
