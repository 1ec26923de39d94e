"""Projectors that scale out, on a 3-master cluster: they share the partitions evenly, re-split on
a join, a clean leave and a death, and fold every log entry once (the members' sorted set and the
leases are single-key commands, the commits one slot each)."""

from __future__ import annotations

from dataclasses import replace

import pytest

import tests.integration.test_projector_scaling as scaling
from engine.runtime import Runtime
from engine.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, partitions=12, batch=5, lease_ms=600)


async def test_projectors_share_and_rebalance_on_a_cluster(runtime: Runtime) -> None:
    await scaling.test_projectors_share_evenly_and_rebalance_on_join_leave_and_death(runtime)
