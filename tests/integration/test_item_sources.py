"""Items by source: `process` reuses the owner's oldest item of a source, and concurrent
requests for one new source make exactly one item."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from engine.money.accounts import create_account
from engine.resources.items import create_item, delete_item, list_items, resolve_source
from engine.runtime import Runtime

pytestmark = pytest.mark.anyio

VIDEO = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
SAME_VIDEO = "https://youtu.be/dQw4w9WgXcQ"


async def _owner(runtime: Runtime) -> str:
    account, _ = await create_account(runtime, name="sources", coins_micro=0)
    return account.account_id


class _Yielding:
    """A Redis client that lets other tasks run after every read, so concurrent requests all read
    before any of them writes (fakeredis never yields by itself, and a small connection pool can
    serialise requests on a real server)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._redis, name)
        if name not in ("get", "zrange", "zrevrangebylex", "mget"):
            return attr

        async def read(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            return result

        return read


async def test_concurrent_resolves_of_a_new_source_make_one_item(runtime: Runtime) -> None:
    owner = await _owner(runtime)
    racing = dataclasses.replace(runtime, redis=_Yielding(runtime.redis))
    found: list[str] = []

    async def resolve(source: str) -> None:
        found.append((await resolve_source(racing, owner, source)).item_id)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(resolve, VIDEO if i % 2 else SAME_VIDEO)

    page, _ = await list_items(runtime, owner, limit=100, cursor=None)
    assert len(page) == 1
    assert set(found) == {page[0].item_id}


async def test_resolve_reuses_an_item_created_over_the_api(runtime: Runtime) -> None:
    owner = await _owner(runtime)
    created = await create_item(runtime, owner, VIDEO)
    assert (await resolve_source(runtime, owner, SAME_VIDEO)).item_id == created.item_id


async def test_the_oldest_item_of_a_source_is_reused(runtime: Runtime) -> None:
    owner = await _owner(runtime)
    first = await create_item(runtime, owner, VIDEO)
    second = await create_item(runtime, owner, SAME_VIDEO)
    assert second.item_id != first.item_id
    assert (await resolve_source(runtime, owner, VIDEO)).item_id == first.item_id

    # Once the oldest is gone, the next one of the source is reused.
    await delete_item(runtime, owner, first.item_id)
    claimed = await resolve_source(runtime, owner, VIDEO)
    assert claimed.item_id == second.item_id


async def test_deleting_a_newer_item_keeps_the_oldest(runtime: Runtime) -> None:
    owner = await _owner(runtime)
    first = await create_item(runtime, owner, VIDEO)
    second = await create_item(runtime, owner, VIDEO)
    await delete_item(runtime, owner, second.item_id)
    assert (await resolve_source(runtime, owner, VIDEO)).item_id == first.item_id


async def test_sources_are_per_owner(runtime: Runtime) -> None:
    alice, bob = await _owner(runtime), await _owner(runtime)
    mine = await resolve_source(runtime, alice, VIDEO)
    theirs = await resolve_source(runtime, bob, VIDEO)
    assert mine.item_id != theirs.item_id
    assert theirs.owner == bob
