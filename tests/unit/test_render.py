"""api.render: the one ISO-8601 format (exact to the millisecond, the same strings both former
formatters gave), coin amounts, and the feed's execution rendered from view data, with entries
written before the API rendered them passed on as stored."""

from __future__ import annotations

import datetime as dt

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import render
from engine.money.accounts import LedgerEntry
from projections.feed import FeedEntry, feed_summary, position, read_entries
from projections.fold import fold
from tests.golden import scenarios

XID = "exc_p1_00000000000000000009"
OWNER = "acc_00000000000000000009"
YEAR_2100 = 4_102_444_800_000
YEAR_9999 = 253_402_300_799_999


def former_views_iso(ms: int) -> str:
    """projections.views.iso_ms as it was."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def former_schemas_iso(ms: int) -> str:
    """api.schemas.iso as it was."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.integers(min_value=0, max_value=YEAR_2100))
def test_iso_is_what_both_former_formatters_gave(ms: int) -> None:
    assert render.iso(ms) == former_views_iso(ms) == former_schemas_iso(ms)


@given(st.integers(min_value=0, max_value=YEAR_9999))
def test_iso_is_exact_to_the_millisecond_however_far_out(ms: int) -> None:
    # Float seconds lose the millisecond centuries out (api.schemas.iso did, by the year 2400).
    assert render.iso(ms) == former_views_iso(ms)
    assert render.iso(ms).endswith(f".{ms % 1000:03d}Z")


def test_iso_has_milliseconds_and_z_and_keeps_none() -> None:
    assert render.iso(0) == "1970-01-01T00:00:00.000Z"
    assert render.iso(1_764_892_345_678) == "2025-12-04T23:52:25.678Z"
    assert render.iso(1_764_892_345_009) == "2025-12-04T23:52:25.009Z"
    assert render.iso(None) is None


def test_coins_are_json_numbers_of_micro_coins() -> None:
    entry = LedgerEntry(
        entry_id="1-0",
        charge_id="c",
        kind="fee",
        amount=-10_000,
        balance=1,
        execution_id=None,
        at=0,
    )
    body = orjson.loads(render.encode(render.ledger_entry(entry)))
    assert body == {
        "charge_id": "c",
        "kind": "fee",
        "amount_coins": -0.01,
        "balance_coins": 0.000001,
        "execution_id": None,
        "at": "1970-01-01T00:00:00.000Z",
    }


def fields(summary: bytes, *, v: bytes | None) -> dict[bytes, bytes]:
    """A feed entry's fields as XRANGE gives them."""
    out = {b"execution_id": XID.encode(), b"seq": b"7", b"type": b"ExecutionFailed"}
    out[b"summary"] = summary
    if v is not None:
        out[b"v"] = v
    return out


def test_a_feed_entry_is_view_data_rendered_as_clients_always_saw_it() -> None:
    view = fold(scenarios.insufficient_balance(XID, OWNER))
    stored = msgspec.json.encode(feed_summary(view))
    assert b'"cost":' in stored  # micro-coins in the stream, not coins
    assert b'"created_at":1' in stored  # ms, not a string
    message = render.feed_event(read_entries("5-0", fields(stored, v=b"2"))[0])
    assert message == {
        "type": "event",
        "cursor": "5-0",
        "execution_id": XID,
        "seq": 7,
        "event": "ExecutionFailed",
        "execution": {
            "execution_id": XID,
            "kind": view.kind,
            "status": "error",
            "current_step": view.current_step,
            "steps_done": 0,
            "steps_total": len(view.steps),
            "cost_coins": view.cost / 1_000_000,
            "error": {"code": "insufficient_balance", "message": view.error.message}
            if view.error
            else None,
            "cancel_requested": False,
            "created_at": former_views_iso(view.created_at),
            "updated_at": former_views_iso(view.updated_at),
            "finished_at": former_views_iso(view.finished_at or 0),
        },
    }


@pytest.mark.parametrize(
    "summary",
    [
        # as the previous version wrote it (ISO times), and as the one before (ms numbers)
        {"execution_id": XID, "status": "done", "created_at": "2026-01-02T03:04:05.678Z"},
        {"execution_id": XID, "status": "done", "created_at": 1_700_000_000_000},
    ],
)
def test_a_feed_entry_written_before_is_sent_on_as_it_was_stored(
    summary: dict[str, object],
) -> None:
    (entry,) = read_entries("5-0", fields(orjson.dumps(summary), v=None))
    assert entry.summary == summary
    assert render.feed_event(entry)["execution"] == summary


def test_an_entry_of_the_current_version_reads_as_its_view() -> None:
    view = fold(scenarios.three_steps(XID, OWNER))
    entries = read_entries("5-0", fields(msgspec.json.encode(feed_summary(view)), v=b"2"))
    assert entries == [
        FeedEntry("5-0", XID, 7, "ExecutionFailed", feed_summary(view), position("5-0"))
    ]
