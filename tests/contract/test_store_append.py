"""Expected-version append and the reads over it (``store.log``): ``append``, ``append_many``,
``history``, ``histories``, ``read_log`` and ``log_length``, on every backend."""

from __future__ import annotations

import pytest

from engine.errors import ConcurrencyConflict
from engine.log.event_log import AppendOp, Record
from engine.log.events import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionStarted,
    StepCompleted,
    StepStarted,
)
from engine.log.keys import WORKER_GROUP
from engine.log.store import EventStore
from tests.contract.builders import owner_in, started_execution

pytestmark = pytest.mark.anyio


def _step(execution_id: str) -> list[AnyEvent]:
    return [
        ExecutionStarted(execution_id=execution_id, worker_id="w1", epoch=1),
        StepStarted(execution_id=execution_id, step_index=0, attempt=1, epoch=1, worker_id="w1"),
        StepCompleted(execution_id=execution_id, step_index=0, attempt=1, output={"text": "hi"}),
    ]


def _completed(execution_id: str) -> AnyEvent:
    return ExecutionCompleted(execution_id=execution_id, cost=10_000)


async def test_append_stamps_consecutive_seqs(store: EventStore) -> None:
    req = await started_execution(store)
    stamped = await store.log.append(req.execution_id, 1, _step(req.execution_id))
    assert [e.seq for e in stamped] == [2, 3, 4]
    assert all(e.at > 0 for e in stamped)
    history = await store.log.history(req.execution_id)
    assert history[0].seq == 1
    assert history[1:] == stamped
    [done] = await store.log.append(req.execution_id, 4, [_completed(req.execution_id)])
    assert done.seq == 5


async def test_append_of_nothing_is_a_no_op(store: EventStore) -> None:
    req = await started_execution(store)
    assert await store.log.append(req.execution_id, 7, []) == []
    assert len(await store.log.history(req.execution_id)) == 1


async def test_a_stale_batch_appends_none_of_its_events(store: EventStore) -> None:
    req = await started_execution(store)
    p = store.keys.partition(req.owner)
    await store.log.append(req.execution_id, 1, _step(req.execution_id)[:1])
    for expected in (0, 1, 3):
        with pytest.raises(ConcurrencyConflict) as info:
            await store.log.append(req.execution_id, expected, _step(req.execution_id))
        assert (info.value.expected, info.value.actual) == (expected, 2)
    assert [e.seq for e in await store.log.history(req.execution_id)] == [1, 2]
    assert await store.log.log_length(p) == 2


async def test_a_batch_lands_in_the_log_in_order_and_together(store: EventStore) -> None:
    a = await started_execution(store, partition=1)
    b = await started_execution(store, partition=1)
    await store.log.append(a.execution_id, 1, _step(a.execution_id))
    await store.log.append(b.execution_id, 1, _step(b.execution_id)[:1])
    log = await store.log.read_log(1, "0-0", 100)
    assert [(e.event.execution_id, e.event.seq) for e in log if e.event] == [
        (a.execution_id, 1),
        (b.execution_id, 1),
        (a.execution_id, 2),
        (a.execution_id, 3),
        (a.execution_id, 4),
        (b.execution_id, 2),
    ]
    # Each log entry carries the same bytes as the execution stream's event.
    assert [e.event for e in log if e.event and e.event.execution_id == a.execution_id] == (
        await store.log.history(a.execution_id)
    )


async def test_append_sets_the_retention_only_when_asked(store: EventStore) -> None:
    req = await started_execution(store)
    key = store.keys.execution(req.execution_id)
    await store.log.append(req.execution_id, 1, _step(req.execution_id))
    assert await store.redis.pttl(key) == -1
    await store.log.append(req.execution_id, 4, [_completed(req.execution_id)], expire_ms=60_000)
    assert 0 < await store.redis.pttl(key) <= 60_000


async def test_history_after_a_seq(store: EventStore) -> None:
    req = await started_execution(store)
    await store.log.append(req.execution_id, 1, _step(req.execution_id))
    assert [e.seq for e in await store.log.history(req.execution_id, after_seq=2)] == [3, 4]
    assert await store.log.history(req.execution_id, after_seq=4) == []
    assert await store.log.history("exc_p0_0000000000aaaaaaaaaa") == []


async def test_histories_reads_several_partitions_at_once(store: EventStore) -> None:
    reqs = [await started_execution(store, partition=p) for p in store.partitions]
    await store.log.append(reqs[0].execution_id, 1, _step(reqs[0].execution_id))
    unknown = "exc_p2_0000000000aaaaaaaaaa"
    got = await store.log.histories([r.execution_id for r in reqs] + [unknown])
    assert got[unknown] == []
    assert [len(got[r.execution_id]) for r in reqs] == [4] + [1] * (len(reqs) - 1)
    for r in reqs:
        assert got[r.execution_id] == await store.log.history(r.execution_id)
    assert await store.log.histories([]) == {}


async def test_read_log_pages_are_exclusive_and_complete(store: EventStore) -> None:
    reqs = [await started_execution(store, partition=2) for _ in range(3)]
    for r in reqs:
        await store.log.append(r.execution_id, 1, _step(r.execution_id))
    assert await store.log.log_length(2) == 12
    seen: list[str] = []
    after = "0-0"
    while page := await store.log.read_log(2, after, 5):
        assert len(page) <= 5
        seen += [e.entry_id for e in page]
        after = page[-1].entry_id
    assert len(seen) == len(set(seen)) == 12
    assert seen == [e.entry_id for e in await store.log.read_log(2, "0", 100)]
    assert await store.log.read_log(2, seen[-1], 5) == []
    assert [e.entry_id for e in await store.log.read_log(2, seen[4], 2)] == seen[5:7]


async def test_read_log_of_other_partitions_is_empty(store: EventStore) -> None:
    await started_execution(store, partition=0)
    assert await store.log.read_log(1, "0-0", 10) == []
    assert await store.log.log_length(1) == 0


async def test_an_undecodable_log_entry_is_read_with_no_event(store: EventStore) -> None:
    await store.redis.xadd(store.keys.log(3), {"e": b"not an event"})
    [entry] = await store.log.read_log(3, "0-0", 10)
    assert (entry.event, entry.raw) == (None, b"not an event")


# -- append_many: many executions' appends in one round trip -------------------------------------


async def test_append_many_answers_each_op_on_its_own(store: EventStore) -> None:
    a = await started_execution(store, partition=1)
    b = await started_execution(store, partition=2)
    c = await started_execution(store, partition=1)
    got = await store.log.append_many(
        [
            AppendOp(a.execution_id, 1, _step(a.execution_id)),
            AppendOp(b.execution_id, 3, _step(b.execution_id)),  # stale: b is at seq 1
            AppendOp(c.execution_id, 1, _step(c.execution_id)[:1]),
        ]
    )
    ok_a, conflict_b, ok_c = got
    assert isinstance(ok_a, list)
    assert [e.seq for e in ok_a] == [2, 3, 4]
    assert ok_a == (await store.log.history(a.execution_id))[1:]
    assert isinstance(conflict_b, ConcurrencyConflict)
    assert (conflict_b.expected, conflict_b.actual) == (3, 1)
    assert [e.seq for e in await store.log.history(b.execution_id)] == [1]
    assert isinstance(ok_c, list)
    assert [e.seq for e in ok_c] == [2]
    assert await store.log.append_many([]) == []


async def test_append_many_is_the_same_append_as_append(store: EventStore) -> None:
    a = await started_execution(store, partition=0)
    [first] = await store.log.append_many([AppendOp(a.execution_id, 1, _step(a.execution_id))])
    assert isinstance(first, list)
    # The single-op append sees exactly what append_many wrote, and vice versa.
    with pytest.raises(ConcurrencyConflict):
        await store.log.append(a.execution_id, 1, [_completed(a.execution_id)])
    await store.log.append(a.execution_id, 4, [_completed(a.execution_id)])
    [late] = await store.log.append_many(
        [AppendOp(a.execution_id, 4, [_completed(a.execution_id)])]
    )
    assert isinstance(late, ConcurrencyConflict)
    assert late.actual == 5
    log = await store.log.read_log(0, "0-0", 100)
    assert [e.event for e in log] == await store.log.history(a.execution_id)


async def test_append_many_stores_blobs_only_with_a_successful_append(store: EventStore) -> None:
    a = await started_execution(store, partition=3)
    b = await started_execution(store, partition=3)
    blob_a, blob_b = b"a" * 10_000, b"b" * 10
    await store.log.append_many(
        [
            AppendOp(a.execution_id, 1, _step(a.execution_id), blobs=[("sha-a", blob_a)]),
            AppendOp(b.execution_id, 9, _step(b.execution_id), blobs=[("sha-b", blob_b)]),
        ]
    )
    assert await store.blobs.get(3, "sha-a") == blob_a
    assert await store.blobs.get(3, "sha-b") is None  # its append conflicted: nothing written
    # A blob is stored once: a second op naming the same hash keeps the first bytes.
    await store.log.append_many(
        [AppendOp(a.execution_id, 4, [_completed(a.execution_id)], blobs=[("sha-a", b"x")])]
    )
    assert await store.blobs.get(3, "sha-a") == blob_a


async def test_append_many_acknowledges_the_entry_only_with_the_append(store: EventStore) -> None:
    a = await started_execution(store, partition=2)
    b = await started_execution(store, partition=2)
    entries = {
        lease.entry.event.execution_id: lease.entry.entry_id
        for lease in (await store.leases.dispatch({2: 10}, "w1"))[2]
        if lease.entry.event
    }
    key = store.keys.execution(a.execution_id)
    await store.log.append_many(
        [
            AppendOp(
                a.execution_id, 1, [_completed(a.execution_id)], 60_000, (), entries[a.execution_id]
            ),
            AppendOp(
                b.execution_id, 5, [_completed(b.execution_id)], 60_000, (), entries[b.execution_id]
            ),
        ]
    )
    pending = await store.redis.xpending_range(store.keys.work(2), WORKER_GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [entries[b.execution_id]]
    assert await store.leases.leased(2) == {b.owner: 1}  # a's cap slot went with its lease
    assert 0 < await store.redis.pttl(key) <= 60_000
    assert await store.redis.pttl(store.keys.execution(b.execution_id)) == -1


async def test_append_many_survives_a_script_flush(store: EventStore) -> None:
    a = await started_execution(store, partition=1)
    await store.redis.script_flush()
    [got] = await store.log.append_many([AppendOp(a.execution_id, 1, _step(a.execution_id))])
    assert isinstance(got, list)
    assert [e.seq for e in got] == [2, 3, 4]


# -- records: what an append publishes with its events (a step's document) ------------------------


def _record(store: EventStore, owner: str, doc_id: str, value: bytes) -> Record:
    keys = store.keys
    return Record(
        keys.resource(owner, "document", doc_id),
        value,
        doc_id,
        (keys.resource_index(owner, "document"), keys.resource(owner, "repdocs", "rep_1")),
    )


async def test_an_append_publishes_its_records_once_however_often_it_is_retried(
    store: EventStore,
) -> None:
    req = await started_execution(store)
    record = _record(store, req.owner, "doc_1", b'{"first":1}')
    op = AppendOp(req.execution_id, 1, _step(req.execution_id), owner=req.owner, records=[record])
    [written] = await store.log.append_many([op])
    assert isinstance(written, list)
    assert await store.redis.get(record.key) == b'{"first":1}'
    for index in record.indexes:
        assert await store.redis.zrange(index, 0, -1) == [b"doc_1"]
    # The same append again (its answer was lost): refused by its seq, nothing written twice.
    [again] = await store.log.append_many([op._replace(records=[record._replace(value=b"2")])])
    assert isinstance(again, ConcurrencyConflict)
    # A later append carrying the same record (a takeover re-publishing it) keeps the first.
    later = AppendOp(
        req.execution_id,
        4,
        [_completed(req.execution_id)],
        owner=req.owner,
        records=[record._replace(value=b"3")],
    )
    [done] = await store.log.append_many([later])
    assert isinstance(done, list)
    assert await store.redis.get(record.key) == b'{"first":1}'
    for index in record.indexes:
        assert await store.redis.zcard(index) == 1


async def test_a_refused_append_publishes_none_of_its_records(store: EventStore) -> None:
    req = await started_execution(store)
    record = _record(store, req.owner, "doc_2", b"{}")
    stale = AppendOp(
        req.execution_id, 0, _step(req.execution_id), owner=req.owner, records=[record]
    )
    fresh = AppendOp(req.execution_id, 1, _step(req.execution_id)[:1], owner=req.owner)
    other = await started_execution(store, store.keys.partition(req.owner))
    other_record = _record(store, other.owner, "doc_3", b"{}")
    third = AppendOp(
        other.execution_id, 1, _step(other.execution_id), owner=other.owner, records=[other_record]
    )
    got = await store.log.append_many([stale, fresh, third])
    assert isinstance(got[0], ConcurrencyConflict)
    assert isinstance(got[1], list)
    assert isinstance(got[2], list)
    assert await store.redis.exists(record.key) == 0
    assert await store.redis.zcard(record.indexes[0]) == 0
    # The ops after a refused one in the same call still find their own records' keys.
    assert await store.redis.get(other_record.key) == b"{}"
    assert await store.redis.zrange(other_record.indexes[0], 0, -1) == [b"doc_3"]


async def test_a_record_outside_the_partition_of_the_append_is_refused(store: EventStore) -> None:
    req = await started_execution(store)
    p = store.keys.partition(req.owner)
    elsewhere = owner_in(store, (p + 1) % store.keys.partitions)
    record = _record(store, elsewhere, "doc_4", b"{}")
    op = AppendOp(req.execution_id, 1, _step(req.execution_id), owner=req.owner, records=[record])
    with pytest.raises(ValueError, match="outside partition"):
        await store.log.append_many([op])
    assert len(await store.log.history(req.execution_id)) == 1


async def test_a_record_member_with_a_space_is_refused_before_anything_is_sent(
    store: EventStore,
) -> None:
    # An op travels as one argument whose header words are separated by spaces.
    req = await started_execution(store)
    record = _record(store, req.owner, "doc 5", b"{}")
    op = AppendOp(req.execution_id, 1, _step(req.execution_id), owner=req.owner, records=[record])
    with pytest.raises(ValueError, match="space"):
        await store.log.append_many([op])
    assert len(await store.log.history(req.execution_id)) == 1
    assert await store.redis.exists(record.key) == 0


async def test_payloads_keep_every_byte(store: EventStore) -> None:
    # Blobs, events and record values are cut out of one argument by their lengths: newlines,
    # spaces and bytes that are not UTF-8 come back exactly.
    req = await started_execution(store)
    p = store.keys.partition(req.owner)
    data = b"line one\nline two \xff\x00 \n\n"
    record = _record(store, req.owner, "doc_6", b" \n{}\n ")
    events = _step(req.execution_id)
    events[-1] = StepCompleted(
        execution_id=req.execution_id, step_index=0, attempt=1, output={"text": "a\nb c"}
    )
    op = AppendOp(
        req.execution_id, 1, events, owner=req.owner, blobs=[("ab" * 32, data)], records=[record]
    )
    [written] = await store.log.append_many([op])
    assert isinstance(written, list)
    assert await store.redis.get(store.keys.blob(p, "ab" * 32)) == data
    assert await store.redis.get(record.key) == b" \n{}\n "
    assert (await store.log.history(req.execution_id))[1:] == written
