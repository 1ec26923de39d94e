"""A page of log rows decoded at once (engine.archive.reader.decode_page, what replay reads) and
folded (projections.batch.fold_events): the same events, in the same places, as decoding each
entry on its own, whatever the page holds."""

from __future__ import annotations

from typing import Any

from engine.archive.reader import decode_page
from engine.log import codec
from engine.log.entries import entry_from_row
from engine.log.events import ExecutionCancelRequested
from projections.batch import fold_events


def _event(seq: int) -> ExecutionCancelRequested:
    return ExecutionCancelRequested(execution_id="exc_p1_x", requested_by="acc_a", seq=seq, at=5)


def _one_by_one(rows: list[tuple[Any, dict[Any, Any]]]) -> list[object]:
    return [entry_from_row(i, f).event for i, f in rows]


def test_a_page_of_good_entries_decodes_to_its_events_in_order() -> None:
    rows = [(f"{n}-0".encode(), {codec.FIELD: codec.encode(_event(n))}) for n in range(1, 6)]
    assert decode_page(rows) == [_event(n) for n in range(1, 6)]


def test_a_bad_entry_is_none_in_its_place_and_the_others_still_decode() -> None:
    good = codec.encode(_event(1))
    for bad in (b"not json", b"", b"null", b'{"type":"NoSuchEvent"}', good + b"," + good):
        rows = [
            (b"1-0", {codec.FIELD: good}),
            (b"2-0", {codec.FIELD: bad}),
            (b"3-0", {codec.FIELD: good}),
        ]
        page = decode_page(rows)
        assert page == [_event(1), None, _event(1)], bad
        assert page == _one_by_one(rows)


def test_rows_of_another_shape_decode_as_the_entry_reader_does() -> None:
    raw = codec.encode(_event(2))
    rows: list[tuple[Any, dict[Any, Any]]] = [
        ("1-0", {"e": raw.decode()}),  # a client that decodes responses answers text
        (b"2-0", {codec.FIELD: raw, b"o": b"acc_a"}),
        (b"3-0", {b"o": b"acc_a"}),
    ]
    assert decode_page(rows) == _one_by_one(rows)
    assert decode_page(rows)[0] == _event(2)


def test_folding_a_page_skips_undecodable_entries_and_ids_that_name_no_execution() -> None:
    views: dict[str, Any] = {}
    stray = ExecutionCancelRequested(execution_id="acc_x", requested_by="acc_a", seq=1, at=5)
    folded = fold_events(views, [None, stray, stray])
    assert (folded.events, folded.skipped, folded.broken, views) == (0, 3, {}, {})
