"""The segment format and the manifest: pure, deterministic, readable back, loud when damaged."""

from __future__ import annotations

import hashlib

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from engine.archive import manifest as mf
from engine.archive.segments import (
    SegmentInfo,
    decompress,
    encode_ledger,
    encode_log,
    id_key,
    ledger_range_of,
    ledger_rows,
    ledger_segment_name,
    log_names_after,
    log_range_of,
    log_rows,
    log_segment_name,
    padded,
    successor,
)
from engine.errors import ArchiveCorrupt

EVENT = b'{"type":"ExecutionStarted","execution_id":"exc_p1_x","seq":2,"at":1,"schema":1}'


def test_a_log_segment_reads_back_exactly_and_is_deterministic() -> None:
    rows = [
        ("1733300000000-0", {b"e": EVENT}),
        ("1733300000000-1", {b"e": b"not json at all"}),
        ("1733300000001-0", {b"e": b"\xff\xfe binary"}),
        ("1733300000002-0", {b"e": EVENT, b"o": b"acc_1"}),
    ]
    one, two = encode_log(rows), encode_log(rows)
    assert one.data == two.data  # a rewrite is byte-identical
    assert one.sha256 == two.sha256
    assert one.sha256 == hashlib.sha256(one.data).hexdigest()
    assert list(log_rows(decompress(one.data, one.sha256))) == rows


def test_a_segment_is_json_lines_in_one_zstd_frame_readable_without_clipstream() -> None:
    encoded = encode_log([("5-0", {b"e": EVENT})])
    plain = zstandard.ZstdDecompressor().decompress(encoded.data)  # one frame, size in its header
    line = orjson.loads(plain.splitlines()[0])
    assert line == {"id": "5-0", "e": orjson.loads(EVENT)}


def test_damage_is_found() -> None:
    encoded = encode_log([("5-0", {b"e": EVENT})])
    flipped = bytearray(encoded.data)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(ArchiveCorrupt):
        decompress(bytes(flipped), encoded.sha256)
    with pytest.raises(ArchiveCorrupt):  # even without the manifest's sha256: zstd's checksum
        decompress(bytes(flipped))


def test_ledger_segments_sort_by_account_then_id() -> None:
    rows = [
        ("acc_b", "20-0", {"kind": "fee", "amount": "-1"}),
        ("acc_a", "30-0", {"kind": "credit", "amount": "5"}),
        ("acc_a", "9-0", {"kind": "credit", "amount": "1"}),
    ]
    back = list(ledger_rows(decompress(encode_ledger(rows).data)))
    assert [(a, i) for a, i, _ in back] == [("acc_a", "9-0"), ("acc_a", "30-0"), ("acc_b", "20-0")]
    assert encode_ledger(rows).data == encode_ledger(list(reversed(rows))).data


ids = st.tuples(st.integers(0, 2**45), st.integers(0, 2**64 - 1)).map(lambda t: f"{t[0]}-{t[1]}")


@given(ids, ids)
def test_names_sort_as_ids_do(a: str, b: str) -> None:
    if id_key(a) > id_key(b):
        a, b = b, a
    first, second = log_segment_name(3, a, a), log_segment_name(3, b, b)
    assert (first < second) == (id_key(a) < id_key(b))
    assert log_range_of(log_segment_name(3, a, b)) == (a, b)
    # A segment starting after `a` sorts after the marker; one starting at `a` does not.
    assert log_segment_name(3, a, b) < log_names_after(3, a)
    assert log_segment_name(3, successor(a), b) > log_names_after(3, a)
    assert id_key(successor(a)) > id_key(a)
    assert len(padded(a)) == 41


def test_ledger_names_carry_their_range() -> None:
    assert ledger_range_of(ledger_segment_name(0, 5, 99)) == (5, 99)


def test_a_manifest_generation_grows_by_one_segment() -> None:
    empty = mf.Manifest(partition=2)
    info = SegmentInfo(
        name="p0002/log/x", first="1-0", last="9-3", count=4, bytes=10, raw_bytes=40, sha256="ab"
    )
    nxt = mf.with_log_segment(empty, info, writer="arc_1", now_ms=7)
    assert (nxt.generation, nxt.position, nxt.entries, nxt.bytes) == (1, "9-3", 4, 10)
    assert mf.decode(mf.encode(nxt)) == nxt
    assert mf.generation_of(mf.manifest_name(2, 12)) == 12
    assert mf.manifest_name(2, 9) < mf.manifest_name(2, 10)
