"""A transcript's segments and a claims document's claims in the API's shape: seconds, from what
was stored in milliseconds (every transcript stored so far, claims stored before 2026-12-05) or
already in seconds."""

from __future__ import annotations

from typing import Any

import pytest

from api.render import content, segment
from api.schemas.executions import SegmentOut


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (
            {"start_ms": 1500, "end_ms": 3250, "text": "a"},
            SegmentOut(start=1.5, end=3.25, text="a"),
        ),
        ({"start": 1.5, "end": 3, "text": "b"}, SegmentOut(start=1.5, end=3, text="b")),
        ({"start_ms": 0, "end_ms": None, "text": "c"}, None),
        ({"start_ms": True, "end_ms": 1, "text": "d"}, None),
        ({"start_ms": 0, "end_ms": 1}, None),
        ("not a segment", None),
    ],
)
def test_segments_in_seconds(stored: Any, shown: SegmentOut | None) -> None:
    assert segment(stored) == shown


def test_claims_in_seconds_old_and_new() -> None:
    old = {
        "kind": "claims",
        "model": "m",
        "claims": [
            {"text": "a", "start_ms": 1500, "end_ms": 3250},
            {"text": "b", "start_ms": None, "end_ms": None},
        ],
    }
    assert content(old) == {
        "kind": "claims",
        "model": "m",
        "claims": [
            {"text": "a", "start": 1.5, "end": 3.25},
            {"text": "b", "start": None, "end": None},
        ],
    }
    new = {"kind": "claims", "claims": [{"text": "a", "start": 1.5, "end": 3.25}]}
    assert content(new) == new
    other = {"kind": "summary", "start_ms": 1}
    assert content(other) is other
    assert content("text") == "text"


def test_a_transcript_and_an_embedding_whole_in_seconds() -> None:
    transcript = {"lang": "en", "segments": [{"start_ms": 0, "end_ms": 1500, "text": "a"}]}
    assert content(transcript, "transcript")["segments"] == [{"start": 0, "end": 1.5, "text": "a"}]
    assert content(transcript) is transcript  # the blob names no kind, the step's output does
    embedding = {"kind": "embedding", "vectors": [{"start_ms": 500, "end_ms": 900, "vector": [1]}]}
    assert content(embedding)["vectors"] == [{"start": 0.5, "end": 0.9, "vector": [1]}]
