"""The realtime hub on a 3-master cluster: owners of partitions on different nodes each get their
own events through the partitions' live streams (one slot each), and a sessions revocation (a
key of its own slot) reaches the hub."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest

from api.realtime.hub import FeedHub
from api.realtime.subscription import SESSION_REVOKED
from api.sessions import Session, revoke_sessions
from engine.log.ids import new_id
from engine.runtime import Runtime
from projections.projector import Projector
from tests.golden import scenarios
from tests.integration.test_feed_hub import seqs, take
from tests.integration.test_projector import make

pytestmark = pytest.mark.anyio


async def test_owners_on_every_node_get_their_own_events_and_revocations_arrive(
    runtime: Runtime,
) -> None:
    keys = runtime.store.keys
    owners: dict[int, str] = {}
    while len(owners) < min(4, keys.partitions):
        owner = new_id("acc")
        owners.setdefault(keys.partition(owner), owner)
    hub = FeedHub(runtime, block_ms=200)
    session = {owner: Session(owner, issued_ms=0, expires_ms=2**50) for owner in owners.values()}
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        tg.start_soon(hub.run)
        subs = {
            owner: await stack.enter_async_context(hub.subscribe(owner, "0-0", session[owner]))
            for owner in owners.values()
        }
        made = {owner: await make(runtime.store, owner, scenarios.cancelled) for owner in subs}
        await Projector(runtime).run_until_idle()
        for owner, sub in subs.items():
            got = await take(sub, len(made[owner].events))
            assert seqs(got) == [(made[owner].execution_id, e.seq) for e in made[owner].events]
        victim = next(iter(subs))
        await runtime.redis.hset(keys.account(victim), "name", "v")
        await revoke_sessions(runtime, victim)
        with anyio.fail_after(20):
            async for _ in subs[victim]:  # until the hub ends it
                pass
        assert subs[victim].reason == SESSION_REVOKED
        tg.cancel_scope.cancel()
