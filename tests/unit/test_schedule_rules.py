"""What a schedule run's pick decides for a channel's videos: pure rules, no Redis."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from engine.schedules.rules import (
    Listing,
    PickRules,
    Video,
    decide,
    forgettable,
    published_ms,
    seen_parts,
    seen_value,
)

NOW = 1_790_000_000_000
HOUR = 3_600_000


def video(name: str, hours_old: float | None) -> Video:
    published = None if hours_old is None else _iso(NOW - int(hours_old * HOUR))
    return Video(video_id=name, title=name, published_at=published)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def outcomes(videos: list[Video], seen: dict[str, str] | None = None, cap: int = 2) -> list[str]:
    decided = decide(videos, seen or {}, run="runA", as_of_ms=NOW, max_age_hours=24, cap=cap)
    return [f"{d.video.video_id}:{d.outcome}" for d in decided]


def test_newest_first_up_to_the_cap_the_rest_capped() -> None:
    videos = [video("c", 3), video("a", 1), video("b", 2)]  # the listing's order is not trusted
    assert outcomes(videos) == ["a:processed", "b:processed", "c:capped"]


def test_too_old_is_decided_by_the_runs_time_not_the_cap() -> None:
    assert outcomes([video("a", 1), video("old", 25), video("edge", 24)]) == [
        "a:processed",
        "edge:processed",
        "old:skipped_too_old",
    ]


def test_seen_by_another_run_is_skipped_and_does_not_use_the_cap() -> None:
    seen = {"a": seen_value("runOld", "exc_p1_00000000000000000001")}
    decided = decide(
        [video("a", 1), video("b", 2), video("c", 3)],
        seen,
        run="runA",
        as_of_ms=NOW,
        max_age_hours=24,
        cap=2,
    )
    assert [(d.video.video_id, d.outcome, d.execution_id) for d in decided] == [
        ("a", "skipped_seen", "exc_p1_00000000000000000001"),
        ("b", "processed", None),
        ("c", "processed", None),
    ]


def test_what_this_run_started_before_a_crash_keeps_its_place_in_the_cap() -> None:
    """A newer video appeared between the two attempts of a pick: the video the first attempt
    started stays processed, and the cap is not exceeded."""
    seen = {"b": seen_value("runA", "exc_p1_00000000000000000002")}
    videos = [video("new", 0.5), video("b", 2), video("c", 3)]
    assert outcomes(videos, seen) == ["new:processed", "b:processed", "c:capped"]
    assert outcomes(videos, seen, cap=1) == ["new:capped", "b:processed", "c:capped"]


def test_a_video_listed_twice_is_decided_once_and_one_without_a_date_fails() -> None:
    assert outcomes([video("a", 1), video("a", 1), video("x", None)]) == [
        "a:processed",
        "x:failed",
    ]


def test_published_ms_reads_the_apis_times() -> None:
    assert published_ms("2026-09-21T14:13:20Z") == NOW
    assert published_ms("2026-09-21T14:13:20.000+00:00") == NOW
    assert published_ms("2026-09-21T14:13:20") == NOW  # no zone: UTC
    assert published_ms("yesterday") is None
    assert published_ms(None) is None


def test_what_this_run_recorded_stays_processed_whatever_its_age() -> None:
    """A pick that runs again keeps what it started even when the video would now be judged too
    old or beyond the cap: the seen hash, not the listing, says what was started."""
    seen = {"old": seen_value("runA", "exc_p1_00000000000000000003")}
    decided = decide(
        [video("old", 30), video("new", 1)], seen, run="runA", as_of_ms=NOW, max_age_hours=24, cap=1
    )
    assert [(d.video.video_id, d.outcome, d.execution_id) for d in decided] == [
        ("new", "capped", None),
        ("old", "processed", "exc_p1_00000000000000000003"),
    ]


def test_an_empty_listing_decides_nothing() -> None:
    assert outcomes([]) == []


def test_seen_parts_reads_back_what_seen_value_wrote() -> None:
    assert seen_parts(seen_value("exc_p3_run", "exc_p3_video")) == ("exc_p3_run", "exc_p3_video")
    assert seen_parts("exc_p3_run") == ("exc_p3_run", "")  # a malformed entry names no execution


def test_a_picks_input_decodes_with_the_fields_other_steps_share() -> None:
    """The pick's input carries the channel item's fields and the chain's ``previous`` besides
    its rules; the rules take what they name and ignore the rest."""
    given = {
        "item_id": "itm_channel",
        "item_type": "youtube_channel",
        "source": "https://www.youtube.com/@alpha",
        "external_id": "@alpha",
        "collection_id": "col_1",
        "item_index": 0,
        "item_step": 1,
        "schedule_id": "sch_1",
        "reporter_id": "rep_1",
        "workflow_id": "wf_1",
        "max_age_hours": 24,
        "max_videos_per_channel": 3,
        "as_of": NOW,
        "previous": {"output_ref": {"sha256": "ab" * 32}},
    }
    rules = msgspec.convert(given, PickRules)
    assert (rules.item_id, rules.collection_id, rules.schedule_id, rules.as_of) == (
        "itm_channel",
        "col_1",
        "sch_1",
        NOW,
    )
    with pytest.raises(msgspec.ValidationError, match="as_of"):
        msgspec.convert({k: v for k, v in given.items() if k != "as_of"}, PickRules)


def test_a_channel_listing_decodes_from_the_sync_blob() -> None:
    blob = (
        b'{"kind": "channel_videos", "channel_id": "UCalpha", "title": "Alpha", "videos": ['
        b'{"video_id": "v1", "title": "One", "published_at": "2026-09-21T14:13:20Z"},'
        b'{"video_id": "v2", "title": "Two", "published_at": null}]}'
    )
    listing = msgspec.json.decode(blob, type=Listing)
    assert listing.channel_id == "UCalpha"
    assert listing.videos == [
        Video(video_id="v1", title="One", published_at="2026-09-21T14:13:20Z"),
        Video(video_id="v2", title="Two", published_at=None),
    ]


def test_the_seen_hash_forgets_videos_older_than_the_age_window() -> None:
    hour = 3_600_000
    as_of = 100 * hour
    seen = {
        "old": seen_value("exc_r1", "exc_v1", as_of - 49 * hour),
        "recent": seen_value("exc_r1", "exc_v2", as_of - 47 * hour),
        "undated": seen_value("exc_r1", "exc_v3"),  # recorded before the time was kept
    }
    assert forgettable(seen, as_of_ms=as_of, max_age_hours=48) == ["old"]
    assert seen_parts(seen["old"]) == ("exc_r1", "exc_v1")
    assert seen_parts(seen["undated"]) == ("exc_r1", "exc_v3")
    # Forgotten or not, a video that old is never picked again: skipped as too old.
    video = Video(video_id="old", published_at="1970-01-03T03:00:00Z")  # as_of - 49 h
    decisions = decide([video], {}, run="exc_r2", as_of_ms=as_of, max_age_hours=48, cap=5)
    assert [d.outcome for d in decisions] == ["skipped_too_old"]
