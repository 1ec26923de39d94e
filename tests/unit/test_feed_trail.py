"""The projector's feed entries from the views its fold recorded equal those from folding the
batch a second time (projections.feed.feed_records with and without the fold's trail)."""

from __future__ import annotations

from bench.common import synthetic_events
from engine.log import codec
from engine.log.entries import Entry
from engine.log.ids import new_execution_id
from projections.batch import fold_entries
from projections.feed import feed_records
from projections.fold import fold
from projections.views import ExecutionView


def test_the_trail_gives_the_entries_a_second_fold_gives() -> None:
    first, second, gapped = (new_execution_id(3) for _ in range(3))
    a = synthetic_events(first, "acc_a", 1)
    b = synthetic_events(second, "acc_b", 2)
    c = synthetic_events(gapped, "acc_c", 3)
    loaded: dict[str, ExecutionView] = {first: fold(a[:2])}  # the batch starts mid-execution
    events = [a[1], a[2], b[0], a[3], None, b[1], b[1], c[2], a[4], b[2], c[3], b[3], b[4]]
    entries = [
        Entry(f"{i}-0", e, codec.encode(e) if e is not None else b"?") for i, e in enumerate(events)
    ]
    refolded = dict(loaded)
    fold_entries(refolded, entries)
    trailed = dict(loaded)
    trail: list[ExecutionView | None] = []
    fold_entries(trailed, entries, trail)
    assert trailed == refolded
    assert len(trail) == len(entries)
    plain = feed_records(loaded, entries, refolded)
    assert feed_records(loaded, entries, trailed, trail) == plain
    # a[1] was folded already and b[1] came twice; the gapped execution has no view to report.
    assert [(r.execution_id, r.seq) for r in plain] == [
        (first, 3),
        (second, 1),
        (first, 4),
        (second, 2),
        (first, 5),
        (second, 3),
        (second, 4),
        (second, 5),
    ]
