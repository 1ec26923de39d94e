"""An archived log segment decoded at once (engine.archive.reader.decode_segment, what replay reads
from the archive): the same ids and events, in the same places, as reading its lines one by one
and decoding each entry on its own, whatever the segment holds."""

from __future__ import annotations

from engine.archive.reader import decode_segment
from engine.archive.segments import decompress, encode_log, log_rows
from engine.log import codec
from engine.log.entries import entry_from_row
from engine.log.events import ExecutionCancelRequested


def _event(seq: int) -> ExecutionCancelRequested:
    return ExecutionCancelRequested(execution_id="exc_p1_x", requested_by="acc_a", seq=seq, at=5)


def _segment(rows: list[tuple[str, dict[bytes, bytes]]]) -> bytes:
    return decompress(encode_log(rows).data)


def _one_by_one(raw: bytes) -> tuple[list[str], list[object]]:
    rows = list(log_rows(raw))
    return [i for i, _ in rows], [entry_from_row(i, f).event for i, f in rows]


def test_a_segment_of_events_decodes_to_its_ids_and_events_in_order() -> None:
    raw = _segment([(f"{n}-0", {b"e": codec.encode(_event(n))}) for n in range(1, 6)])
    ids, events = decode_segment(raw)
    assert ids == [f"{n}-0" for n in range(1, 6)]
    assert events == [_event(n) for n in range(1, 6)]
    assert (ids, events) == _one_by_one(raw)


def test_a_line_of_another_shape_or_a_bad_event_decodes_as_line_by_line() -> None:
    good = codec.encode(_event(1))
    for odd in (
        {b"e": b"not json"},  # kept as text under "fields"
        {b"e": b"null"},
        {b"e": b'{"type":"NoSuchEvent"}'},
        {b"e": good + b"," + good},  # two values: not one line's JSON, kept under "fields"
        {b"e": good, b"o": b"acc_a"},  # another field beside the event
        {b"o": b"\xff\xfe"},  # not UTF-8: base64
    ):
        raw = _segment([("1-0", {b"e": good}), ("2-0", odd), ("3-0", {b"e": good})])
        ids, events = decode_segment(raw)
        assert (ids, events) == _one_by_one(raw), odd
        assert ids == ["1-0", "2-0", "3-0"]
        assert events[0] == events[2] == _event(1), odd


def test_an_empty_segment_holds_nothing() -> None:
    assert decode_segment(b"") == ([], [])
