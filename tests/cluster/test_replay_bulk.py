"""A rebuild's pipelined writes on a 3-master cluster: every key of the rebuilt namespace (views,
indexes, transcript pointers, checkpoint) equals what the live projector wrote."""

from __future__ import annotations

import pytest

import tests.archive.test_replay_split as split_tests
from engine.runtime import Runtime

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_a_rebuild_writes_every_index_as_the_projector_does_on_a_cluster(
    runtime: Runtime,
) -> None:
    await split_tests.test_a_rebuild_writes_every_index_as_the_projector_does(runtime)
