"""Ids: shape, partition routing and creation order."""

from __future__ import annotations

import pytest

from engine.log.ids import (
    derived_id,
    execution_partition,
    id_time_ms,
    is_id,
    new_execution_id,
    new_id,
)


def test_ids_made_in_one_millisecond_sort_in_creation_order() -> None:
    made = [new_id("itm", now_ms=1_790_000_000_000) for _ in range(1000)]
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_ids_sort_by_time_across_milliseconds() -> None:
    earlier = new_id("col", now_ms=1_790_000_000_000)
    later = new_id("col", now_ms=1_790_000_000_001)
    assert earlier < later


def test_execution_ids_carry_their_partition() -> None:
    xid = new_execution_id(13)
    assert is_id(xid, "exc")
    assert execution_partition(xid) == 13


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("itm_", "itm"),
        ("itm_0123456789abcdefghjk", "col"),
        ("itm_0123456789ABCDEFGHJK", "itm"),
        ("itm_0123456789abcdefghjk:x", "itm"),
        ("exc_p1_0123456789abcdefghj", "exc"),
        ("exc_px_0123456789abcdefghjk", "exc"),
        ("exc_0123456789abcdefghjk", "exc"),
    ],
)
def test_malformed_ids_are_refused(value: str, kind: str) -> None:
    assert not is_id(value, kind)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown id kind"):
        new_id("zzz")


def test_derived_ids_spell_their_parts_in_crockford_base32() -> None:
    """The two halves are the parts' low 50 bits, five bits a character, most significant first
    (the order id_time_ms reads back)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

    def spelled(value: int) -> str:
        return "".join(alphabet[(value >> shift) & 31] for shift in range(45, -5, -5))

    for ms, low in [(0, 0), (1_790_000_000_123, 12345), (2**50 - 1, 2**50 - 1), (2**49, 2**52 + 7)]:
        made = derived_id("doc", ms, low)
        assert made == f"doc_{spelled(ms)}{spelled(low)}"
        assert is_id(made, "doc")
        assert id_time_ms(made) == ms & (2**50 - 1)
