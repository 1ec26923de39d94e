"""The projector's feed writes on both backends: every folded event, the execution as it was after
that event, one entry per execution per batch, in the owner's feed only, never twice for the same
batch, and none from replay."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest

from engine.log import codec
from engine.log.ids import new_id
from engine.runtime import Runtime
from projections import replay
from projections.feed import before, live_feeds, live_key, owner_feed_key, read_entries
from projections.namespace import Namespace
from projections.projector import Projector
from projections.scripts import COMMIT, commit_args
from tests.golden import scenarios
from tests.integration.test_projector import make

pytestmark = pytest.mark.anyio


async def feed_of(runtime: Runtime, owner: str) -> list[dict[str, Any]]:
    """Every event of ``owner``'s feed, in feed order: its entry's id, its cursor, and the event
    with the execution after it."""
    rows = await runtime.redis.xrange(owner_feed_key(runtime.store.keys, owner), "-", "+")
    return [
        {
            "entry": entry_id.decode(),
            "cursor": event.cursor,
            "execution_id": event.execution_id,
            "seq": event.seq,
            "type": event.type,
            "summary": msgspec.to_builtins(
                event.summary
                if isinstance(event.summary, dict)
                else msgspec.structs.asdict(event.summary)
            ),
        }
        for entry_id, fields in rows
        for event in read_entries(entry_id.decode(), fields)
    ]


async def test_each_folded_event_is_in_the_feed_with_the_execution_after_it(
    runtime: Runtime,
) -> None:
    owner, other = new_id("acc"), new_id("acc")
    made = await make(runtime.store, owner, scenarios.three_steps)
    theirs = await make(runtime.store, other, scenarios.cancelled)
    await Projector(runtime).run_until_idle()

    feed = await feed_of(runtime, owner)
    assert [(e["execution_id"], e["seq"]) for e in feed] == [
        (made.execution_id, ev.seq) for ev in made.events
    ]
    assert [e["type"] for e in feed] == [type(ev).__struct_config__.tag for ev in made.events]
    # One batch folded the whole execution: one entry, whose last event carries its id.
    (entry,) = {e["entry"] for e in feed}
    assert [e["cursor"] for e in feed] == [before(entry)] * (len(feed) - 1) + [entry]
    first, last = feed[0]["summary"], feed[-1]["summary"]
    assert (first["status"], first["steps_done"], first["steps_total"]) == ("pending", 0, 3)
    assert (last["status"], last["steps_done"]) == ("done", 3)
    # The progress moves monotonically through the run: each entry is its own moment.
    done_counts = [e["summary"]["steps_done"] for e in feed]
    assert done_counts == sorted(done_counts)
    assert len(set(done_counts)) == 4
    assert all(e["execution_id"] == theirs.execution_id for e in await feed_of(runtime, other))


async def test_an_execution_folded_over_several_batches_gets_an_entry_in_each(
    runtime: Runtime,
) -> None:
    """Batches of 4 entries over a 9-event execution: entries of 4, 4 and 1 events, and a cursor
    taken halfway through one resumes at that entry, so a client sees every event."""
    runtime.settings = replace(runtime.settings, batch=4)
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.three_steps)
    await Projector(runtime).run_until_idle()
    feed = await feed_of(runtime, owner)
    assert [e["seq"] for e in feed] == [ev.seq for ev in made.events]
    entries = list(dict.fromkeys(e["entry"] for e in feed))
    assert [sum(e["entry"] == entry for e in feed) for entry in entries] == [4, 4, 1]
    halfway = feed[5]["cursor"]  # the second event of the second entry
    assert halfway == before(entries[1])
    key = owner_feed_key(runtime.store.keys, owner)
    resumed = await runtime.redis.xrange(key, f"({halfway}", "+")
    assert [r[0].decode() for r in resumed] == entries[1:]


async def test_a_duplicate_in_the_log_and_a_second_projector_append_nothing(
    runtime: Runtime,
) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.cancelled)
    await Projector(runtime).run_until_idle()
    log = runtime.store.keys.log(runtime.store.keys.partition(owner))
    for event in made.events:
        await runtime.redis.xadd(log, {"e": codec.encode(event)})
    await Projector(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()
    assert len(await feed_of(runtime, owner)) == len(made.events)


async def test_a_retried_batch_commit_does_not_append_twice(runtime: Runtime) -> None:
    """The feed entries ride the checkpoint's compare-and-set: replaying the same commit (a
    projector that lost the reply and tries again, or a paused one) is refused as a whole."""
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.three_steps, upto=3)
    projector = Projector(runtime)
    p = runtime.store.keys.partition(owner)
    projector.version = 1
    projector._held[p] = "0-0"
    entries = await runtime.store.log.read_log(p, "0-0", 100)
    commits: list[tuple[list[str], list[Any]]] = []
    real_commit = projector._commit

    async def recording(keys: list[str], args: list[Any]) -> Any:
        commits.append((keys, args))
        return await real_commit(keys=keys, args=args)

    projector._commit = recording
    assert await projector.step(p) == len(entries)
    assert len(await feed_of(runtime, owner)) == len(made.events)
    keys, args = commits[0]
    again = await runtime.redis.register_script(COMMIT)(keys=keys, args=args)
    assert int(again[0]) == 0  # the checkpoint moved: nothing written
    assert len(await feed_of(runtime, owner)) == len(made.events)


async def test_replay_writes_no_feed_entries(runtime: Runtime) -> None:
    owner = new_id("acc")
    await make(runtime.store, owner, scenarios.retried_then_done)
    report = await replay.rebuild(runtime)
    assert report.executions == 1
    assert await feed_of(runtime, owner) == []
    # and the replay's commit arguments name no feed key at all
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(owner), 9)
    keys, _ = commit_args(ns, [], "0-0", "1-0", 0)
    assert not any(":feed:" in k for k in keys)


async def test_the_feed_is_trimmed_to_its_maximum(runtime: Runtime, monkeypatch: Any) -> None:
    import projections.scripts as commit_module  # where the commit's arguments are packed

    monkeypatch.setattr(commit_module, "FEED_MAXLEN", 5)
    owner = new_id("acc")
    for _ in range(300):  # an entry each (one batch folds each whole)
        await make(runtime.store, owner, scenarios.cancelled)
    await Projector(runtime).run_until_idle()
    length = await runtime.redis.xlen(owner_feed_key(runtime.store.keys, owner))
    assert length < 300  # approximate trimming: whole nodes (100 entries) go, but it is bounded


async def test_each_commit_with_feed_entries_notifies_the_partition_once_naming_its_feeds(
    runtime: Runtime,
) -> None:
    """The live stream the API hubs block on: one entry per commit that appended feed entries,
    naming each feed it appended to once; a replay (no feed entries) notifies nothing."""
    keys = runtime.store.keys
    owner = new_id("acc")
    other = new_id("acc")
    while keys.partition(other) != keys.partition(owner):
        other = new_id("acc")
    await make(runtime.store, owner, scenarios.three_steps)
    await make(runtime.store, other, scenarios.cancelled)
    await Projector(runtime).run_until_idle()
    live = live_key(keys, keys.partition(owner))
    entries = await runtime.redis.xrange(live)
    named = [live_feeds(fields) for _, fields in entries]
    assert len(entries) >= 1
    assert all(len(feeds) == len(set(feeds)) for feeds in named)
    assert {f for feeds in named for f in feeds} == {
        owner_feed_key(keys, owner),
        owner_feed_key(keys, other),
    }
    before = len(entries)
    await replay.rebuild(runtime)
    assert len(await runtime.redis.xrange(live)) == before
