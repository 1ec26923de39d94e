"""Stream rows as the store hands them out (engine.log.entries): no Redis, just the shapes a reply
can take."""

from __future__ import annotations

from engine.log import codec
from engine.log.entries import Entry, RawEntry, entry_from_row, raw_entry_from_row
from engine.log.events import ExecutionCancelRequested

EVENT = ExecutionCancelRequested(execution_id="exc_p1_x", requested_by="acc_a", seq=2, at=5)


def test_a_row_as_redis_answers_it_keeps_its_bytes_and_reads_its_type() -> None:
    raw = raw_entry_from_row(b"1-0", {codec.FIELD: codec.encode(EVENT)}, 3)
    assert raw == RawEntry("1-0", codec.encode(EVENT), 3)
    assert raw.event_type == "ExecutionCancelRequested"
    assert raw.decode() == Entry("1-0", EVENT, codec.encode(EVENT), 3)


def test_a_row_with_text_fields_is_read_as_bytes() -> None:
    # A client that decodes responses answers str keys and values.
    raw = raw_entry_from_row("2-0", {"e": codec.encode(EVENT).decode()})
    assert raw.raw == codec.encode(EVENT)
    assert raw.deliveries == 1


def test_an_undecodable_or_empty_row_is_an_entry_without_event() -> None:
    assert entry_from_row("3-0", {codec.FIELD: b"not json"}) == Entry("3-0", None, b"not json")
    empty = raw_entry_from_row("4-0", {b"o": b"acc_a"})
    assert empty.raw == b""
    assert empty.event_type is None
    assert empty.decode().event is None


def test_the_type_is_read_only_from_the_tag_prefix() -> None:
    assert RawEntry("5-0", b'{"type":"StepStarted","seq":1}').event_type == "StepStarted"
    assert RawEntry("6-0", b'{"seq":1,"type":"StepStarted"}').event_type is None
    assert RawEntry("7-0", b'{"type":"unterminated').event_type is None
