"""api.loop_probe: the collector's pauses, the full ones told apart (the realtime tail's cause)."""

from __future__ import annotations

import gc

import anyio
import anyio.lowlevel
import pytest

from api.loop_probe import LoopProbe

pytestmark = pytest.mark.anyio


async def test_every_collection_is_a_pause_and_only_full_ones_are_full_pauses() -> None:
    probe = LoopProbe(interval_s=60)
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe.run)
        await anyio.lowlevel.checkpoint()  # the probe is listening
        gc.collect(0)
        gc.collect(1)
        assert probe.gc_full_pauses.count == 0
        gc.collect(2)
        tg.cancel_scope.cancel()
    assert probe.gc_pauses.count >= 3
    assert probe.gc_full_pauses.count >= 1
    assert probe.gc_full_pauses.max_ms <= probe.gc_pauses.max_ms
