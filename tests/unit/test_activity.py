"""The rate chart's counting (projections.activity), pure."""

from __future__ import annotations

from projections.activity import BUCKET_MS, WINDOW_MS, Bucket, count, series


def test_entries_are_counted_by_kind_into_their_bucket() -> None:
    buckets: dict[int, Bucket] = {}
    t = 1_790_000_000_000
    count(
        buckets,
        [
            (t, "ExecutionRequested"),
            (t + 1, "StepStarted"),
            (t + 2, "ExecutionCompleted"),
            (t + BUCKET_MS, "ExecutionFailed"),
            (t + BUCKET_MS + 1, "ExecutionCancelled"),
            (t + BUCKET_MS + 2, None),
        ],
    )
    first, second = buckets[t - t % BUCKET_MS], buckets[t + BUCKET_MS - t % BUCKET_MS]
    assert (first.requested, first.done, first.error) == (1, 1, 0)
    assert (second.requested, second.done, second.error) == (0, 0, 2)


def test_the_series_covers_the_window_with_empty_buckets() -> None:
    now = 1_790_000_123_456
    buckets = {now - now % BUCKET_MS: Bucket(now - now % BUCKET_MS, requested=3)}
    points = series(buckets, now)
    assert len(points) == WINDOW_MS // BUCKET_MS
    assert points[-1].requested == 3
    assert all(b.requested == 0 for b in points[:-1])
    assert [b.start for b in points] == sorted(b.start for b in points)
