"""Schedule runs end to end on both backends: a run syncs each channel, applies the seen, too-old
and cap rules, starts one execution per picked video, and records every decision; one run at a
time per schedule; a failing channel does not stop the others. Verdicts come from the log, the
ledger and the projected views."""

from __future__ import annotations

import pytest

from engine import commands
from engine.errors import InvalidRequest
from engine.log.events import ExecutionCompleted, StepFailed
from engine.log.ids import new_id
from engine.resources import reporters, schedules
from engine.resources.items import get_item
from engine.runtime import Runtime
from engine.schedules.runs import RunTriggered, trigger_run
from projections import replay
from tests.rendered import RenderedQueries
from tests.schedules import World, children, install, items_of, settle, world

pytestmark = pytest.mark.anyio


async def run_now(w: World, key: str | None = None) -> RunTriggered:
    return await trigger_run(
        w.runtime,
        w.owner,
        w.schedule_id,
        reporter_id=w.reporter_id,
        request_id=new_id("req"),
        idempotency_key=key,
    )


async def fee_entries(runtime: Runtime, owner: str) -> list[str]:
    """Execution ids of the owner's flat-fee ledger entries, oldest first."""
    rows = await runtime.redis.xrange(runtime.store.keys.ledger(owner))
    return [fields[b"execution_id"].decode() for _, fields in rows if fields.get(b"kind") == b"fee"]


async def test_a_run_applies_the_rules_and_starts_one_execution_per_picked_video(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha"]], max_videos_per_channel=2, max_age_hours=48)
    yt.upload("@alpha", "old00000000", hours_old=100)  # too old
    for n, age in ((3, 3), (2, 2), (1, 1)):  # newest last: v1 is the newest
        yt.upload("@alpha", f"v{n}000000000", hours_old=age)

    first = await run_now(w)
    assert first.status == "dispatched"
    assert first.run_id == "run_" + first.execution_id.rsplit("_", 1)[1]
    await settle(runtime)

    history = await runtime.store.log.history(first.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    assert items_of(history) == [
        ("v1000000000", "processed"),
        ("v2000000000", "processed"),
        ("v3000000000", "capped"),
        ("old00000000", "skipped_too_old"),
    ]
    started = await children(runtime, w.owner, first.execution_id)
    assert sorted(c.target.external_id or "" for c in started) == ["v1000000000", "v2000000000"]
    for child in started:
        assert (child.kind, child.fee, child.schedule_id) == ("process", 0, w.schedule_id)
        assert child.reporter_id == w.reporter_id
        assert [s.tool_id for s in child.workflow.steps] == ["transcribe"]
        done = await runtime.store.log.history(child.execution_id)
        assert isinstance(done[-1], ExecutionCompleted), child.execution_id
        # Each video is one of the owner's items, holding the transcript the execution made.
        assert child.target.item_id is not None
        item = await get_item(runtime, w.owner, child.target.item_id)
        assert (item.type, item.external_id) == ("youtube_video", child.target.external_id)
        transcript = await RenderedQueries(runtime).get_transcript(w.owner, item.item_id, None)
        assert transcript is not None
        assert transcript["execution_id"] == child.execution_id

    # The next run: what the first processed is seen, the capped one is picked now.
    yt.upload("@alpha", "v0000000000", hours_old=0.5)
    second = await run_now(w)
    assert second.status == "dispatched"
    assert second.execution_id != first.execution_id
    await settle(runtime)
    assert items_of(await runtime.store.log.history(second.execution_id)) == [
        ("v0000000000", "processed"),
        ("v1000000000", "skipped_seen"),
        ("v2000000000", "skipped_seen"),
        ("v3000000000", "processed"),
        ("old00000000", "skipped_too_old"),
    ]
    again = await children(runtime, w.owner, second.execution_id)
    assert sorted(c.target.external_id or "" for c in again) == ["v0000000000", "v3000000000"]
    # One flat fee per run; the executions a run starts pay none.
    assert await fee_entries(runtime, w.owner) == [first.execution_id, second.execution_id]

    run = await RenderedQueries(runtime).get_run(w.owner, w.reporter_id, second.run_id)
    assert run is not None
    assert (run["status"], run["schedule_id"], run["execution_id"]) == (
        "done",
        w.schedule_id,
        second.execution_id,
    )
    assert run["counts"] == {
        "processed": 2,
        "skipped_seen": 2,
        "skipped_too_old": 1,
        "capped": 0,
        "failed": 0,
    }
    seen = {i["video_id"]: i["execution_id"] for i in run["items"] if i["outcome"] != "processed"}
    first_children = {c.target.external_id: c.execution_id for c in started}
    assert seen["v1000000000"] == first_children["v1000000000"]  # who processed it before
    listed, _ = await RenderedQueries(runtime).list_runs(
        w.owner, w.reporter_id, limit=10, cursor=None
    )
    assert [r["run_id"] for r in listed] == [second.run_id, first.run_id]
    executions, _ = await RenderedQueries(runtime).list_reporter_executions(
        w.owner, w.reporter_id, limit=100, cursor=None
    )
    ids = {e["execution_id"] for e in executions}
    assert {first.execution_id, second.execution_id} | {
        c.execution_id for c in [*started, *again]
    } <= ids
    child_summary = next(e for e in executions if e["execution_id"] == again[0].execution_id)
    assert (child_summary["schedule_id"], child_summary["run_id"]) == (w.schedule_id, second.run_id)


async def test_a_trigger_while_a_run_is_in_flight_starts_nothing_and_charges_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha"]])
    yt.upload("@alpha", "v1000000000", hours_old=1)
    first = await run_now(w)
    balance = int(await runtime.redis.get(runtime.store.keys.balance(w.owner)) or 0)

    # No worker yet: the run is pending, so it is in flight.
    for _ in range(2):
        again = await run_now(w)
        assert (again.status, again.execution_id) == ("already_running", first.execution_id)
    assert int(await runtime.redis.get(runtime.store.keys.balance(w.owner)) or 0) == balance
    # An Idempotency-Key answers for the run it started, running or not.
    keyed = await run_now(w, key="k1")
    assert keyed.status == "already_running"
    # While a run is in flight the answer needs nothing of the schedule's current shape: with
    # its collections gone (a new run could not start), a fresh key is still already_running.
    await schedules.update_schedule(
        runtime, w.owner, w.reporter_id, w.schedule_id, {"collection_ids": []}
    )
    assert (await run_now(w, key="k2")).status == "already_running"
    await schedules.update_schedule(
        runtime, w.owner, w.reporter_id, w.schedule_id, {"collection_ids": [w.collection_ids[0]]}
    )

    await settle(runtime)
    after = await run_now(w)
    assert after.status == "dispatched"
    assert after.execution_id != first.execution_id
    assert await run_now(w) == RunTriggered("already_running", w.schedule_id, after.execution_id)
    assert await fee_entries(runtime, w.owner) == [first.execution_id, after.execution_id]


async def test_an_idempotency_key_gives_back_its_run(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch)
    w = await world(runtime, [["@alpha"]])
    first = await run_now(w, key="same")
    assert await run_now(w, key="same") == first  # while it runs
    await settle(runtime)
    assert await run_now(w, key="same") == first  # and after it ended
    assert await fee_entries(runtime, w.owner) == [first.execution_id]


async def test_a_channel_whose_sync_fails_is_recorded_and_the_others_go_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha", "@broken"], ["@gamma"]])
    yt.failing.add("@broken")
    yt.upload("@alpha", "a1000000000", hours_old=1)
    yt.upload("@gamma", "g1000000000", hours_old=2)
    run = await run_now(w)
    await settle(runtime)

    history = await runtime.store.log.history(run.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    assert sorted(items_of(history)) == [
        ("a1000000000", "processed"),
        ("g1000000000", "processed"),
    ]
    failed = [e for e in history if isinstance(e, StepFailed)]
    assert [(f.code, f.retryable) for f in failed] == [("provider_rejected", False)]
    view = await RenderedQueries(runtime).get_run(w.owner, w.reporter_id, run.run_id)
    assert view is not None
    assert (view["status"], view["channels_total"], view["channels_failed"]) == ("done", 3, 1)
    assert view["counts"]["processed"] == 2
    assert view["counts"]["failed"] == 1
    [broken] = [i for i in view["items"] if i["outcome"] == "failed"]
    assert broken["item_id"] == w.channels["@broken"]
    assert broken["collection_id"] == w.collection_ids[0]
    assert "channel @broken is gone" in broken["reason"]


async def test_a_run_whose_every_channel_fails_ends_in_error(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@broken"]])
    yt.failing.add("@broken")
    run = await run_now(w)
    await settle(runtime)
    view = await RenderedQueries(runtime).get_run(w.owner, w.reporter_id, run.run_id)
    assert view is not None
    assert view["status"] == "error"
    assert view["error"]["code"] == "provider_failed"
    assert [i["outcome"] for i in view["items"]] == ["failed"]


async def test_a_channel_in_two_collections_is_synced_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha"], ["@alpha"]])
    yt.upload("@alpha", "a1000000000", hours_old=1)
    run = await run_now(w)
    await settle(runtime)
    assert yt.calls["@alpha"] == 1
    assert items_of(await runtime.store.log.history(run.execution_id)) == [
        ("a1000000000", "processed")
    ]


async def test_a_schedule_with_no_channel_or_a_workflow_not_on_videos_is_refused(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch)
    w = await world(runtime, [[]])
    with pytest.raises(InvalidRequest, match="no YouTube channel"):
        await run_now(w)
    assert await fee_entries(runtime, w.owner) == []
    other = await world(runtime, [["@alpha"]])
    await reporters.update_workflow(
        runtime, other.owner, other.reporter_id, other.workflow_id, {"target_kind": "collection"}
    )
    with pytest.raises(InvalidRequest, match="runs its workflow on each new video"):
        await run_now(other)


async def test_deleting_a_schedule_forgets_its_runs_state(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha"]])
    yt.upload("@alpha", "a1000000000", hours_old=1)
    await run_now(w)
    await settle(runtime)
    keys = runtime.store.keys
    state = [keys.schedule_run(w.owner, w.schedule_id), keys.schedule_seen(w.owner, w.schedule_id)]
    due = keys.schedule_due(keys.partition(w.owner))
    assert await runtime.redis.exists(*state) == 2
    assert await runtime.redis.zcard(due) == 1
    await schedules.delete_schedule(runtime, w.owner, w.reporter_id, w.schedule_id)
    assert await runtime.redis.exists(*state) == 0
    assert await runtime.redis.zcard(due) == 0


async def test_replay_rebuilds_the_runs_views_and_their_index(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    yt = install(monkeypatch)
    w = await world(runtime, [["@alpha", "@broken"]], max_videos_per_channel=1)
    yt.failing.add("@broken")
    yt.upload("@alpha", "a2000000000", hours_old=2)
    yt.upload("@alpha", "a1000000000", hours_old=1)
    for _ in range(2):
        await run_now(w)
        await settle(runtime)
    queries = RenderedQueries(runtime)

    async def runs_now() -> list[dict[str, object]]:
        listed, _ = await queries.list_runs(w.owner, w.reporter_id, limit=10, cursor=None)
        return [
            {**r, "detail": await queries.get_run(w.owner, w.reporter_id, str(r["run_id"]))}
            for r in listed
        ]

    before = await runs_now()
    assert [r["counts"] for r in before] == [  # newest first
        {"processed": 1, "skipped_seen": 1, "skipped_too_old": 0, "capped": 0, "failed": 1},
        {"processed": 1, "skipped_seen": 0, "skipped_too_old": 0, "capped": 1, "failed": 1},
    ]
    report = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, report.previous_version, report.version)
    assert parity.identical, parity.describe()
    await replay.switch(runtime, report.version)
    await replay.drop(runtime, report.previous_version)
    assert await runs_now() == before


async def test_a_cancelled_run_frees_its_schedule(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch)
    w = await world(runtime, [["@alpha"]])
    first = await run_now(w)
    await commands.cancel(runtime, w.owner, first.execution_id)
    assert (await run_now(w)).status == "already_running"  # until the cancel is carried out
    await settle(runtime)
    view = await RenderedQueries(runtime).get_run(w.owner, w.reporter_id, first.run_id)
    assert view is not None
    assert (view["status"], view["error"]["code"]) == ("error", "cancelled")
    assert (await run_now(w)).status == "dispatched"
