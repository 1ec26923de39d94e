"""The projector and queries on both backends: folding what the store appended, indexes,
checkpoints, duplicates, read-your-writes, replay parity, version switch, two projectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import msgspec
import pytest

from engine.commands import request_transcript
from engine.errors import InvalidRequest
from engine.log import codec
from engine.log.entries import Entry, RawEntry
from engine.log.events import AnyEvent, ExecutionRequested
from engine.log.ids import new_execution_id, new_id
from engine.log.store import EventStore
from engine.money import billing
from engine.money.accounts import create_account
from engine.resources.items import create_item
from engine.runtime import Runtime
from projections import replay
from projections.namespace import Namespace, current_version
from projections.projector import Projector
from projections.queries import Queries
from projections.views import decode_view, encode_view
from tests.golden import scenarios
from tests.helpers import eventually
from tests.rendered import RenderedQueries

pytestmark = pytest.mark.anyio

Scenario = Callable[[str, str], list[AnyEvent]]


@dataclass
class Made:
    execution_id: str
    owner: str
    events: list[AnyEvent]


async def make(store: EventStore, owner: str, scenario: Scenario, upto: int | None = None) -> Made:
    """Run ``scenario`` through the store as the API and the worker would: request, then appends."""
    if not await store.redis.exists(store.keys.balance(owner)):
        await store.redis.set(store.keys.balance(owner), 10_000_000)
    xid = new_execution_id(store.keys.partition(owner))
    events = scenario(xid, owner)[:upto]
    first = events[0]
    assert isinstance(first, ExecutionRequested)
    await store.admission.request(first)
    if len(events) > 1:
        await store.log.append(xid, 1, events[1:], owner=owner, moves=billing.moves_of(events[1:]))
    return Made(xid, owner, events)


async def views_of(runtime: Runtime, version: int) -> dict[str, bytes]:
    """Every stored view of ``version``, by execution id."""
    out: dict[str, bytes] = {}
    store = runtime.store
    for p in store.partitions:
        ns = Namespace(store.keys, p, version)
        for raw in await runtime.redis.zrange(ns.all, 0, -1):
            xid = raw.decode()
            out[xid] = await runtime.redis.get(ns.view(xid))
    return out


async def test_projector_folds_what_the_store_appended(runtime: Runtime) -> None:
    owner = new_id("acc")
    done = await make(runtime.store, owner, scenarios.three_steps)
    running = await make(runtime.store, owner, scenarios.three_steps, upto=4)
    pending = await make(runtime.store, owner, scenarios.three_steps, upto=1)
    await Projector(runtime).run_until_idle()

    queries = RenderedQueries(runtime)
    body = await queries.get_execution(owner, done.execution_id)
    assert body is not None
    assert body["execution"]["status"] == "done"
    assert body["execution"]["steps_done"] == 3
    assert [s["status"] for s in body["steps"]] == ["done"] * 3
    running_view = await queries.get_view(owner, running.execution_id)
    assert running_view is not None
    assert running_view.status == "running"
    assert running_view.seq == 4

    everything, cursor = await queries.list_executions(owner, active=False, limit=10, cursor=None)
    assert cursor is None
    assert {e["execution_id"] for e in everything} == {
        done.execution_id,
        running.execution_id,
        pending.execution_id,
    }
    active, _ = await queries.list_executions(owner, active=True, limit=10, cursor=None)
    assert {e["execution_id"]: e["status"] for e in active} == {
        running.execution_id: "running",
        pending.execution_id: "pending",
    }

    # The running one finishes: it leaves the active index.
    await runtime.store.log.append(
        running.execution_id, 4, scenarios.three_steps(running.execution_id, owner)[4:]
    )
    await Projector(runtime).run_until_idle()
    active, _ = await queries.list_executions(owner, active=True, limit=10, cursor=None)
    assert [e["execution_id"] for e in active] == [pending.execution_id]


async def test_checkpoint_resumes_where_the_last_projector_stopped(runtime: Runtime) -> None:
    owner = new_id("acc")
    await make(runtime.store, owner, scenarios.three_steps)
    first = Projector(runtime)
    await first.run_until_idle()
    assert first.stats.events == 9
    second_exec = await make(runtime.store, owner, scenarios.retried_then_done)
    second = Projector(runtime)
    await second.run_until_idle()
    assert second.stats.events == len(second_exec.events)  # only what is new
    third = Projector(runtime)
    await third.run_until_idle()
    assert third.stats.events == 0


async def test_duplicate_delivery_changes_nothing(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.cancelled)
    await Projector(runtime).run_until_idle()
    before = await views_of(runtime, 1)
    # The same events land in the log again (a writer retried after a lost reply).
    log = runtime.store.keys.log(runtime.store.keys.partition(owner))
    for event in made.events:
        await runtime.redis.xadd(log, {"e": codec.encode(event)})
    projector = Projector(runtime)
    await projector.run_until_idle()
    assert projector.stats.events == len(made.events)
    assert await views_of(runtime, 1) == before


async def test_undecodable_entries_are_skipped_and_counted(runtime: Runtime) -> None:
    owner = new_id("acc")
    p = runtime.store.keys.partition(owner)
    await runtime.redis.xadd(runtime.store.keys.log(p), {"e": b"{not json"})
    await runtime.redis.xadd(runtime.store.keys.log(p), {"e": b'{"type":"NoSuchEvent"}'})
    made = await make(runtime.store, owner, scenarios.transcript_done)
    projector = Projector(runtime)
    await projector.run_until_idle()
    assert projector.stats.skipped == 2
    assert int(await runtime.redis.get(Namespace(runtime.store.keys, p, 1).skipped)) == 2
    body = await RenderedQueries(runtime).get_execution(owner, made.execution_id)
    assert body is not None
    assert body["execution"]["status"] == "done"


async def test_a_gap_in_the_log_is_repaired_from_the_execution_stream(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.three_steps)
    p = runtime.store.keys.partition(owner)
    log = runtime.store.keys.log(p)
    # Lose the first four log entries (as if trimmed): the stream still has every event.
    for entry_id, _ in await runtime.redis.xrange(log, "-", "+", count=4):
        await runtime.redis.xdel(log, entry_id)
    await Projector(runtime).run_until_idle()
    view = await RenderedQueries(runtime).get_view(owner, made.execution_id)
    assert view is not None
    assert (view.status, view.seq) == ("done", 9)


async def test_read_your_writes_before_the_projector_runs(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.transcript_done, upto=1)
    queries = RenderedQueries(runtime)
    body = await queries.get_execution(owner, made.execution_id)
    assert body is not None
    assert body["execution"]["status"] == "pending"
    assert body["execution"]["execution_id"] == made.execution_id
    history = await queries.history(owner, made.execution_id)
    assert history is not None
    assert [e["type"] for e in history] == ["ExecutionRequested"]


async def test_another_owner_and_bad_ids_see_nothing(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.transcript_done)
    await Projector(runtime).run_until_idle()
    queries = RenderedQueries(runtime)
    stranger = new_id("acc")
    # a stranger in the same partition, so the partition check alone cannot be what refuses
    while runtime.store.keys.partition(stranger) != runtime.store.keys.partition(owner):
        stranger = new_id("acc")
    assert await queries.get_execution(stranger, made.execution_id) is None
    assert await queries.history(stranger, made.execution_id) is None
    assert await queries.get_transcript(stranger, "itm_00000000000000000001", "en") is None
    assert await queries.list_executions(stranger, active=False, limit=5, cursor=None) == ([], None)
    for bad in ("", "exc_nope", "exc_p1_../../x", made.execution_id + "x"):
        assert await queries.get_execution(owner, bad) is None
    unknown = new_execution_id(runtime.store.keys.partition(owner))
    assert await queries.get_execution(owner, unknown) is None


async def test_list_pages_newest_first_with_a_stable_cursor(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = [await make(runtime.store, owner, scenarios.transcript_done, upto=1) for _ in range(5)]
    await Projector(runtime).run_until_idle()
    queries = RenderedQueries(runtime)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await queries.list_executions(owner, active=True, limit=2, cursor=cursor)
        seen += [e["execution_id"] for e in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(m.execution_id for m in made)
    assert len(set(seen)) == 5
    created = [
        e["created_at"]
        for e in (await queries.list_executions(owner, active=False, limit=5, cursor=None))[0]
    ]
    assert created == sorted(created, reverse=True)
    with pytest.raises(InvalidRequest, match="cursor"):
        await queries.list_executions(owner, active=False, limit=2, cursor="garbage")


async def test_transcript_query_reads_the_newest_blob(runtime: Runtime) -> None:
    owner = new_id("acc")
    p = runtime.store.keys.partition(owner)
    await runtime.store.blobs.put(
        p,
        "a" * 64,
        b'{"lang":"en","text":"hello","segments":[{"start_ms":0,"end_ms":9,"text":"hello"}]}',
    )
    made = await make(runtime.store, owner, scenarios.transcript_done)
    await Projector(runtime).run_until_idle()
    queries = RenderedQueries(runtime)
    item = "itm_00000000000000000001"
    got = await queries.get_transcript(owner, item, "en")
    assert got is not None
    assert got["text"] == "hello"
    # Stored in milliseconds (as every transcript so far), shown in seconds.
    assert got["segments"] == [{"start": 0.0, "end": 0.009, "text": "hello"}]
    assert got["execution_id"] == made.execution_id
    assert await queries.get_transcript(owner, item, None) == got
    assert await queries.get_transcript(owner, item, "de") is None


async def test_replay_is_identical_to_the_live_views_and_switch_moves_everyone(
    runtime: Runtime,
) -> None:
    owners = [new_id("acc") for _ in range(3)]
    for i, owner in enumerate(owners):
        for name, scenario in scenarios.SCENARIOS.items():
            await make(runtime.store, owner, scenario, upto=None if i else 3 + len(name) % 3)
    await Projector(runtime).run_until_idle()

    progress: list[tuple[int, int]] = []
    report = await replay.rebuild(runtime, progress=lambda d, t: progress.append((d, t)))
    assert (report.previous_version, report.version) == (1, 2)
    assert report.executions == 3 * len(scenarios.SCENARIOS)
    assert progress[-1][0] == progress[-1][1] == report.events
    parity = await replay.compare(runtime, 1, 2)
    assert parity.identical, parity.describe()
    assert parity.count_a == parity.count_b == report.executions

    # A live projector started before the switch follows it.
    projector = Projector(runtime)
    await projector.run_until_idle()
    await replay.switch(runtime, 2)
    assert await current_version(runtime.redis, runtime.store.keys) == 2
    late = await make(runtime.store, owners[0], scenarios.transcript_done)
    await projector.run_until_idle()
    assert projector.version == 2
    await replay.drop(runtime, 1)
    assert await views_of(runtime, 1) == {}
    queries = RenderedQueries(runtime)
    page, _ = await queries.list_executions(owners[0], active=False, limit=100, cursor=None)
    assert late.execution_id in {e["execution_id"] for e in page}
    assert len(page) == len(scenarios.SCENARIOS) + 1
    with pytest.raises(InvalidRequest, match="live"):
        await replay.drop(runtime, 2)


async def test_a_changed_view_shows_up_in_the_parity_report(runtime: Runtime) -> None:
    owner = new_id("acc")
    made = await make(runtime.store, owner, scenarios.three_steps)
    kept = await make(runtime.store, owner, scenarios.transcript_done)
    gone = await make(runtime.store, owner, scenarios.transcript_done)
    await Projector(runtime).run_until_idle()
    report = await replay.rebuild(runtime)
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(owner), report.version)
    view = decode_view(await runtime.redis.get(ns.view(made.execution_id)))
    await runtime.redis.set(
        ns.view(made.execution_id), encode_view(msgspec.structs.replace(view, cost=1))
    )
    await runtime.redis.zrem(ns.all, gone.execution_id)
    parity = await replay.compare(runtime, 1, report.version)
    assert parity.differing == [made.execution_id]
    assert (parity.missing_in_a, parity.missing_in_b) == ([], [gone.execution_id])
    assert (parity.count_a, parity.count_b) == (3, 2)
    assert kept.execution_id not in parity.differing
    assert not parity.identical


async def test_two_projectors_at_once_give_the_same_views(runtime: Runtime) -> None:
    owners = [new_id("acc") for _ in range(6)]
    for owner in owners:
        for scenario in scenarios.SCENARIOS.values():
            await make(runtime.store, owner, scenario)
    a, b = Projector(runtime), Projector(runtime)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run_until_idle)
        tg.start_soon(b.run_until_idle)
    assert a.stats.events + b.stats.events == 6 * sum(
        len(s("x", "y")) for s in scenarios.SCENARIOS.values()
    )
    report = await replay.rebuild(runtime)
    parity = await replay.compare(runtime, 1, report.version)
    assert parity.identical, parity.describe()


async def test_running_projector_follows_appends_and_a_switch_then_stops(runtime: Runtime) -> None:
    owner = new_id("acc")
    queries = RenderedQueries(runtime)
    ns = Namespace(runtime.store.keys, runtime.store.keys.partition(owner), 1)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        projector = Projector(runtime)
        tg.start_soon(projector.run, stop)
        first = await make(runtime.store, owner, scenarios.transcript_done)
        await eventually(lambda: runtime.redis.exists(ns.view(first.execution_id)))
        report = await replay.rebuild(runtime)
        await replay.switch(runtime, report.version)
        second = await make(runtime.store, owner, scenarios.transcript_done)
        new_ns = Namespace(ns.keys, ns.partition, report.version)
        await eventually(lambda: runtime.redis.exists(new_ns.view(second.execution_id)))
        page, _ = await queries.list_executions(owner, active=False, limit=10, cursor=None)
        assert {e["execution_id"] for e in page} == {first.execution_id, second.execution_id}
        stop.set()
    assert not await runtime.redis.exists(new_ns.lease)  # leases given back on a clean stop


async def test_reporter_index_and_newest_transcript_language(runtime: Runtime) -> None:
    owner = new_id("acc")
    p = runtime.store.keys.partition(owner)
    await runtime.store.blobs.put(p, "a" * 64, b'{"text": "english", "segments": []}')
    xid_en = new_execution_id(p)
    xid_pt = new_execution_id(p)
    en = scenarios.transcript_done(xid_en, owner, t0=scenarios.T0, lang="en")
    pt = scenarios.transcript_done(xid_pt, owner, t0=scenarios.T0 + 10_000, lang="pt")
    # Written as recorded (the store would restamp the times): the newer one first, so the
    # index must not depend on the order the executions are folded in.
    for event in (*pt, *en):
        await runtime.redis.xadd(runtime.store.keys.log(p), {"e": codec.encode(event)})
    retried = await make(runtime.store, owner, scenarios.retried_then_done)
    await Projector(runtime).run_until_idle()
    queries = RenderedQueries(runtime)
    item = "itm_00000000000000000001"
    newest = await queries.get_transcript(owner, item, None)
    assert newest is not None
    assert (newest["lang"], newest["execution_id"]) == ("pt", xid_pt)
    english = await queries.get_transcript(owner, item, "en")
    assert english is not None
    assert (english["text"], english["execution_id"]) == ("english", xid_en)
    page, cursor = await queries.list_reporter_executions(
        owner, "rep_00000000000000000001", limit=10, cursor=None
    )
    assert [e["execution_id"] for e in page] == [retried.execution_id]
    assert cursor is None


async def test_the_lists_pass_over_another_owners_unfolded_requests_undecoded(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-your-writes scans the partition log past the checkpoint: another owner's requests
    there are skipped without being decoded, and the owner's own still show."""
    keys = runtime.store.keys
    owner, _ = await create_account(runtime, name="owner", coins_micro=10**9)
    other, _ = await create_account(runtime, name="other", coins_micro=10**9)
    while keys.partition(other.account_id) != keys.partition(owner.account_id):
        other, _ = await create_account(runtime, name="other", coins_micro=10**9)
    mine = await create_item(runtime, owner.account_id, "https://youtu.be/dQw4w9WgXcQ")
    theirs = await create_item(runtime, other.account_id, "https://youtu.be/dQw4w9WgXcQ")
    for n in range(5):
        await request_transcript(runtime, other.account_id, theirs.item_id, lang="en",
                                 embed=False, text=None, request_id=f"r{n}")  # fmt: skip
    made = await request_transcript(runtime, owner.account_id, mine.item_id, lang="en",
                                    embed=False, text=None, request_id="mine")  # fmt: skip
    decoded: list[str] = []
    real_decode = RawEntry.decode

    def counting(self: RawEntry) -> Entry:
        decoded.append(self.entry_id)
        return real_decode(self)

    monkeypatch.setattr(RawEntry, "decode", counting)
    page = await Queries(runtime).list_executions(
        owner.account_id, active=False, limit=10, cursor=None
    )
    assert [v.execution_id for v in page.views] == [made.execution_id]
    assert len(decoded) == 1  # the owner's request alone
