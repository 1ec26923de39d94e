"""A transcript's segments in the API's shape: seconds, from what was stored in milliseconds
(every transcript stored so far) or already in seconds."""

from __future__ import annotations

from typing import Any

import pytest

from api.render import segment
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
