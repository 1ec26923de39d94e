"""The feed hub on both backends: history after a cursor then the live tail with no gap, a reset
when the cursor is older than what is kept, slow subscribers closed without holding up others,
one owner's subscriber never seeing another owner's events, entries rendered once each, and
entries an earlier version wrote still delivered."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import anyio
import orjson
import pytest

from api import render
from api.realtime.hub import FeedHub
from api.realtime.subscription import SLOW_CONSUMER, FeedClosed
from api.render import Message
from engine.log.ids import new_id
from engine.runtime import Runtime
from projections.feed import FeedEntry, before, owner_feed_key, read_entries
from projections.projector import Projector
from tests.golden import scenarios
from tests.helpers import eventually
from tests.integration.test_projector import make
from tests.rendered import RenderedQueries

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hub(runtime: Runtime) -> AsyncIterator[FeedHub]:
    hub = FeedHub(runtime, buffer=64, block_ms=200)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        yield hub
        tg.cancel_scope.cancel()


async def take(sub: AsyncIterator[Message], n: int) -> list[Message]:
    """The next ``n`` messages (a broken hub fails on the deadline, never on timing)."""
    out: list[Message] = []
    with anyio.fail_after(20):
        async for message in sub:
            out.append(message)
            if len(out) == n:
                break
    return out


def seqs(messages: list[Message]) -> list[tuple[str, int]]:
    return [(m["execution_id"], m["seq"]) for m in messages if m["type"] == "event"]


async def test_no_cursor_starts_with_a_reset_snapshot_then_live_events(
    runtime: Runtime, hub: FeedHub
) -> None:
    owner = new_id("acc")
    running = await make(runtime.store, owner, scenarios.three_steps, upto=3)
    await Projector(runtime).run_until_idle()
    async with hub.subscribe(owner, None) as sub:
        [reset] = await take(sub, 1)
        assert reset["type"] == "reset"
        assert [e["execution_id"] for e in reset["executions"]] == [running.execution_id]
        later = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        got = await take(sub, len(later.events))
    assert seqs(got) == [(later.execution_id, e.seq) for e in later.events]
    assert got[-1]["execution"]["status"] == "error"
    # An event's execution carries its times as the reset snapshot and the REST views do.
    [listed], _ = await RenderedQueries(runtime).list_executions(
        owner, active=False, limit=1, cursor=None
    )
    assert listed["execution_id"] == later.execution_id
    for field in ("created_at", "updated_at", "finished_at"):
        assert got[-1]["execution"][field] == listed[field]
    assert isinstance(reset["executions"][0]["created_at"], str)


async def test_resume_from_a_cursor_replays_history_then_joins_live_without_a_gap(
    runtime: Runtime, hub: FeedHub
) -> None:
    runtime.settings = replace(runtime.settings, batch=4)  # the first execution in 3 entries
    owner = new_id("acc")
    first = await make(runtime.store, owner, scenarios.three_steps)
    await Projector(runtime).run_until_idle()
    async with hub.subscribe(owner, None) as sub:
        [reset] = await take(sub, 1)
    # Disconnected; events go on; reconnecting with an older cursor misses nothing.
    rows = await runtime.redis.xrange(owner_feed_key(runtime.store.keys, owner), "-", "+")
    cursor = rows[0][0].decode()  # past the first 4 events
    second = await make(runtime.store, owner, scenarios.retried_then_done)
    await Projector(runtime).run_until_idle()
    async with hub.subscribe(owner, cursor) as sub:
        third = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        expected = (
            [(first.execution_id, e.seq) for e in first.events[4:]]
            + [(second.execution_id, e.seq) for e in second.events]
            + [(third.execution_id, e.seq) for e in third.events]
        )
        got = await take(sub, len(expected))
    assert seqs(got) == expected
    assert reset["cursor"] == rows[-1][0].decode()


async def test_a_cursor_older_than_the_kept_feed_gets_a_reset(
    runtime: Runtime, hub: FeedHub
) -> None:
    owner = new_id("acc")
    await make(runtime.store, owner, scenarios.three_steps)
    await make(runtime.store, owner, scenarios.cancelled)
    pending = await make(runtime.store, owner, scenarios.three_steps, upto=1)
    await Projector(runtime).run_until_idle()
    key = owner_feed_key(runtime.store.keys, owner)
    old = (await runtime.redis.xrange(key, "-", "+", count=1))[0][0].decode()
    await runtime.redis.xtrim(key, maxlen=1, approximate=False)  # of an entry per execution
    async with hub.subscribe(owner, old) as sub:
        [reset] = await take(sub, 1)
    assert reset["type"] == "reset"
    assert [e["execution_id"] for e in reset["executions"]] == [pending.execution_id]
    newest = (await runtime.redis.xrevrange(key, "+", "-", count=1))[0][0].decode()
    assert reset["cursor"] == newest
    # a cursor that is not one of ours is no excuse for a silent gap either
    async with hub.subscribe(owner, "garbage") as sub:
        assert (await take(sub, 1))[0]["type"] == "reset"


async def test_a_cursor_halfway_through_the_oldest_entry_kept_lost_nothing_and_resumes(
    runtime: Runtime, hub: FeedHub
) -> None:
    """The cursor of an event halfway through the oldest entry kept names the id just before that
    entry: whatever trimming took, nothing after the cursor is gone, so no reset, the history
    goes on. (A cursor further back gets a reset unless the server says what it deleted: the
    entries between it and the oldest kept may have been trimmed.)"""
    owner = new_id("acc")
    await make(runtime.store, owner, scenarios.three_steps)
    kept = await make(runtime.store, owner, scenarios.cancelled)
    await Projector(runtime).run_until_idle()
    key = owner_feed_key(runtime.store.keys, owner)
    rows = await runtime.redis.xrange(key, "-", "+")
    await runtime.redis.xtrim(key, maxlen=1, approximate=False)
    expected = [(kept.execution_id, e.seq) for e in kept.events]
    async with hub.subscribe(owner, before(rows[1][0].decode())) as sub:
        got = await take(sub, len(expected))
    assert seqs(got) == expected


async def test_a_cursor_into_a_feed_trimmed_to_nothing_gets_a_reset(
    runtime: Runtime, hub: FeedHub
) -> None:
    owner = new_id("acc")
    pending = await make(runtime.store, owner, scenarios.three_steps, upto=1)
    await Projector(runtime).run_until_idle()
    key = owner_feed_key(runtime.store.keys, owner)
    old = (await runtime.redis.xrange(key, "-", "+", count=1))[0][0].decode()
    await make(runtime.store, owner, scenarios.three_steps)
    await Projector(runtime).run_until_idle()
    await runtime.redis.xtrim(key, maxlen=0, approximate=False)
    async with hub.subscribe(owner, old) as sub:
        [reset] = await take(sub, 1)
    assert reset["type"] == "reset"
    assert [e["execution_id"] for e in reset["executions"]] == [pending.execution_id]


async def test_a_slow_subscriber_is_closed_while_another_keeps_receiving(
    runtime: Runtime,
) -> None:
    owner = new_id("acc")
    hub = FeedHub(runtime, buffer=12, block_ms=200)  # one execution fits, two do not
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        async with hub.subscribe(owner, "0-0") as slow, hub.subscribe(owner, "0-0") as fast:
            made = []
            got: list[Message] = []
            for _ in range(3):  # the fast one keeps up, the slow one never reads
                made.append(await make(runtime.store, owner, scenarios.three_steps))
                await Projector(runtime).run_until_idle()
                got += await take(fast, 9)
            assert seqs(got) == [(m.execution_id, e.seq) for m in made for e in m.events]
            with pytest.raises(FeedClosed) as closed:
                await slow.receive()
            assert closed.value.reason == SLOW_CONSUMER
        tg.cancel_scope.cancel()


async def test_another_owners_ten_thousand_events_never_reach_a_subscriber(
    runtime: Runtime, hub: FeedHub
) -> None:
    owner = new_id("acc")
    noisy = new_id("acc")
    while runtime.store.keys.partition(noisy) != runtime.store.keys.partition(owner):
        noisy = new_id("acc")  # the same partition: the same log, the same projector batches
    async with hub.subscribe(owner, "0-0") as sub, hub.subscribe(noisy, "0-0") as _loud:
        await runtime.redis.set(runtime.store.keys.balance(noisy), 10**12)  # fees for them all
        for _ in range(1_112):  # 10,008 events
            await make(runtime.store, noisy, scenarios.three_steps)
        mine = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        got = await take(sub, len(mine.events))
        assert seqs(got) == [(mine.execution_id, e.seq) for e in mine.events]
        rows = await runtime.redis.xrange(owner_feed_key(runtime.store.keys, owner))
        in_feed = [e.execution_id for i, f in rows for e in read_entries(i.decode(), f)]
        assert in_feed == [mine.execution_id] * len(mine.events)


async def test_entries_the_previous_version_wrote_are_sent_as_stored_beside_new_ones(
    runtime: Runtime, hub: FeedHub
) -> None:
    """A feed written across an upgrade: entries whose summary is the client JSON itself (no
    ``v``) are read back and sent on unchanged, in history and live, between rendered ones."""
    owner = new_id("acc")
    key = owner_feed_key(runtime.store.keys, owner)
    xid = "exc_p1_00000000000000000042"
    legacy = {
        "execution_id": xid,
        "kind": "transcript",
        "status": "running",
        "current_step": 0,
        "steps_done": 0,
        "steps_total": 1,
        "cost_coins": 0.01,
        "error": None,
        "cancel_requested": False,
        "created_at": "2026-01-02T03:04:05.678Z",
        "updated_at": "2026-01-02T03:04:05.700Z",
        "finished_at": None,
    }

    async def add_legacy(seq: int) -> None:
        fields = {"execution_id": xid, "seq": seq, "type": "StepStarted"}
        await runtime.redis.xadd(key, {**fields, "summary": orjson.dumps(legacy)})

    await add_legacy(1)
    async with hub.subscribe(owner, "0-0") as sub:
        made = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        await add_legacy(2)
        got = await take(sub, 1 + len(made.events) + 1)
    assert seqs(got) == [(xid, 1), *[(made.execution_id, e.seq) for e in made.events], (xid, 2)]
    assert got[0]["execution"] == legacy == got[-1]["execution"]
    rendered = got[-2]["execution"]
    assert set(rendered) == set(legacy)
    assert isinstance(rendered["created_at"], str)
    assert rendered["created_at"].endswith("Z")


async def test_an_unreadable_entry_is_skipped_and_the_feed_goes_on(
    runtime: Runtime, hub: FeedHub
) -> None:
    """An entry no version here can read (a newer projector's, or damaged) is logged and passed
    over, live and in history: the hub's reader and the other events carry on."""
    owner = new_id("acc")
    key = owner_feed_key(runtime.store.keys, owner)
    async with hub.subscribe(owner, "0-0") as sub:
        first = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        bad = {"execution_id": "exc_x", "seq": "1,2", "type": "StepStarted", "summary": "[]"}
        await runtime.redis.xadd(key, {**bad, "v": "3"})
        second = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        expected = [(m.execution_id, e.seq) for m in (first, second) for e in m.events]
        assert seqs(await take(sub, len(expected))) == expected
    async with hub.subscribe(owner, "0-0") as again:  # the same three entries, from history
        assert seqs(await take(again, len(expected))) == expected


async def test_each_entry_is_rendered_once_whatever_the_number_of_subscribers(
    runtime: Runtime, hub: FeedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real = render.feed_event

    def counting(entry: FeedEntry) -> Message:
        calls.append((entry.execution_id, entry.seq))
        return real(entry)

    monkeypatch.setattr(render, "feed_event", counting)
    owner = new_id("acc")
    async with (
        hub.subscribe(owner, "0-0") as one,
        hub.subscribe(owner, "0-0") as two,
        hub.subscribe(owner, "0-0") as three,
    ):
        made = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        for sub in (one, two, three):
            assert len(await take(sub, len(made.events))) == len(made.events)
    assert len(calls) == len(made.events) == len(set(calls))


async def test_a_read_names_the_feeds_with_news_not_every_subscribed_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thousand idle owners' subscriptions cost nothing per event: the hub blocks on the
    partitions' live streams and reads only the feeds a notification names (and, on its sweep,
    which this test puts out of reach, every subscribed one)."""
    hub = FeedHub(runtime, block_ms=200, sweep_ms=3_600_000)
    reads: list[int] = []
    real = runtime.redis.xread

    async def counting(streams: dict[str, str], **kwargs: Any) -> Any:
        if kwargs.get("block") is None:
            reads.append(len(streams))  # a read of feeds (the live streams' are blocking)
        return await real(streams, **kwargs)

    monkeypatch.setattr(hub.redis, "xread", counting)
    idle = [new_id("acc") for _ in range(1_000)]
    owner = new_id("acc")
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        tg.start_soon(hub.run)
        for someone in idle:
            await stack.enter_async_context(hub.subscribe(someone, "0-0"))
        sub = await stack.enter_async_context(hub.subscribe(owner, "0-0"))
        # Joining reads each new feed once; wait until those reads are done.
        await eventually(lambda: _dirty(hub), until=lambda n: n == 0)
        reads.clear()
        made = await make(runtime.store, owner, scenarios.cancelled)
        await Projector(runtime).run_until_idle()
        got = await take(sub, len(made.events))
        tg.cancel_scope.cancel()
    assert seqs(got) == [(made.execution_id, e.seq) for e in made.events]
    assert reads, "the feed was read"
    assert max(reads) == 1  # the one feed with news, never the thousand idle ones


async def _dirty(hub: FeedHub) -> int:
    return sum(len(p.dirty) for p in hub._partitions)


async def test_the_collector_is_frozen_every_so_many_joins_only_when_asked(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``clipstream api`` freezes the garbage collector's view every 500 subscriptions (what
    connections hold is long-lived; api.cli.roles); a hub left at its default never does (tests,
    embedded uses)."""
    frozen: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    for every, expected in ((0, 0), (2, 2)):
        frozen.clear()
        hub = FeedHub(runtime, block_ms=200)
        hub.freeze_every = every
        async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
            tg.start_soon(hub.run)
            for _ in range(5):
                await stack.enter_async_context(hub.subscribe(new_id("acc"), "0-0"))
            tg.cancel_scope.cancel()
        assert len(frozen) == expected
