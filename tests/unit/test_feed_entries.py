"""The feed's entries (projections.feed): a batch's events grouped into one entry per execution,
read back as one event each, with cursors that never skip an event of an entry a client stopped
halfway through."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import render
from projections.feed import (
    SUMMARY_VERSION,
    THROUGH,
    FeedRecord,
    FeedRow,
    before,
    feed_groups,
    feed_summary,
    position,
    read_entries,
)
from projections.fold import fold
from projections.views import FeedSummary
from tests.golden import scenarios

XID, OTHER, OWNER = "exe_a", "exe_b", "acc_1"


def summary_of(status: str) -> FeedSummary:
    view = fold(scenarios.three_steps(XID, OWNER))
    return msgspec.structs.replace(feed_summary(view, FeedRow), status=status)


def record(xid: str, seq: int, kind: str, status: str = "running") -> FeedRecord:
    return FeedRecord(OWNER, xid, seq, kind, summary_of(status))


def stored(records: list[FeedRecord]) -> list[dict[bytes, bytes]]:
    """The fields of the entries the COMMIT script appends for ``records``."""
    return [
        {
            b"execution_id": g.execution_id.encode(),
            b"seq": g.seqs.encode(),
            b"type": g.types.encode(),
            b"summary": g.summaries,
            b"v": SUMMARY_VERSION,
        }
        for g in feed_groups(records)
    ]


def test_a_batch_appends_one_entry_per_execution_in_the_order_of_its_first_event() -> None:
    records = [
        record(XID, 2, "StepStarted"),
        record(OTHER, 1, "ExecutionRequested"),
        record(XID, 3, "StepCompleted"),
        record(XID, 4, "ExecutionCompleted", "done"),
    ]
    groups = feed_groups(records)
    assert [(g.execution_id, g.seqs, g.types) for g in groups] == [
        (XID, "2,3,4", "StepStarted,StepCompleted,ExecutionCompleted"),
        (OTHER, "1", "ExecutionRequested"),
    ]
    assert msgspec.json.decode(groups[0].summaries)[2][2] == "done"  # values only, in order


def test_each_event_of_an_entry_reads_back_with_the_execution_after_it() -> None:
    records = [
        record(XID, 2, "StepStarted"),
        record(XID, 3, "StepCompleted"),
        record(XID, 4, "ExecutionCompleted", "done"),
    ]
    (fields,) = stored(records)
    events = read_entries("17-3", fields)
    assert [(e.execution_id, e.seq, e.type) for e in events] == [
        (XID, 2, "StepStarted"),
        (XID, 3, "StepCompleted"),
        (XID, 4, "ExecutionCompleted"),
    ]
    assert [e.summary.status for e in events if isinstance(e.summary, FeedSummary)] == [
        "running",
        "running",
        "done",
    ]


def test_only_an_entrys_last_event_carries_its_id_the_others_resume_before_it() -> None:
    (fields,) = stored([record(XID, s, "StepStarted") for s in (2, 3, 4)])
    events = read_entries("17-3", fields)
    # A client that stops after the first or second event resumes from 17-2: 17-3 comes again
    # whole (duplicates by execution id and seq), never a gap.
    assert [e.cursor for e in events] == ["17-2", "17-2", "17-3"]
    assert [e.order for e in events] == [(17, 3, 0), (17, 3, 1), (17, 3, THROUGH)]
    assert events[-1].order == position("17-3")
    assert position("17-2") < events[0].order  # a resume from 17-2 dedups none of them


def test_an_entry_whose_lists_disagree_is_refused() -> None:
    (fields,) = stored([record(XID, 2, "StepStarted"), record(XID, 3, "StepCompleted")])
    fields[b"type"] = b"StepStarted"
    with pytest.raises(ValueError, match="2 seqs, 1 types"):
        read_entries("17-3", fields)


def test_before_steps_back_over_a_millisecond() -> None:
    assert before("17-3") == "17-2"
    assert before("17-0") == f"16-{2**64 - 1}"


@given(st.integers(1, 2**48), st.integers(0, 2**64 - 1))
def test_nothing_lies_between_before_and_the_id(ms: int, seq: int) -> None:
    entry_id = f"{ms}-{seq}"
    ms_b, seq_b, _ = position(before(entry_id))
    assert (ms_b, seq_b) < (ms, seq)
    # the next id after the one before is the id itself
    assert (ms_b, seq_b + 1) == (ms, seq) or (seq_b == 2**64 - 1 and (ms_b + 1, 0) == (ms, seq))


def test_a_client_sees_the_same_execution_from_an_entry_of_either_version() -> None:
    done = record(XID, 4, "ExecutionCompleted", "done")
    (grouped,) = stored([done])
    single = {
        b"execution_id": XID.encode(),
        b"seq": b"4",
        b"type": b"ExecutionCompleted",
        b"summary": msgspec.json.encode(msgspec.structs.asdict(done.summary)),
        b"v": b"2",
    }
    (new,) = read_entries("17-3", grouped)
    (old,) = read_entries("17-3", single)
    assert render.feed_event(new) == render.feed_event(old)
    assert len(grouped[b"summary"]) < len(single[b"summary"]) / 2 + 2  # values only
