"""What a schedule run's pick decides for one channel's videos: pure rules, no I/O, no clock
(the run's time, ``as_of``, comes in with the pick's input; docs/decisions/0003).

Rules, per channel, newest first: a video a run of this schedule processed before is
``skipped_seen``; one published more than ``max_age_hours`` before the run was requested is
``skipped_too_old``; of the rest, the first ``max_videos_per_channel`` are ``processed`` and the
others ``capped``. A video with no readable publication date is ``failed``, and so is one whose
request the engine refuses (engine.schedules.pick, which starts the picked videos).

Also the shapes a pick reads (its input, the ``channel_sync`` listing), what the schedule's seen
hash records for a processed video, and which of its videos it may forget (those older than the
age window can never be picked again). Imports only the event vocabulary (engine.log.events).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec

from engine.log.events import RunOutcome

_HOUR_MS = 3_600_000


class Video(msgspec.Struct, frozen=True, kw_only=True):
    """One upload in a channel listing (the ``channel_sync`` blob's ``videos``)."""

    video_id: str
    title: str = ""
    published_at: str | None = None


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a ``channel_sync`` blob a pick reads."""

    channel_id: str
    videos: list[Video]


class PickRules(msgspec.Struct, frozen=True, kw_only=True):
    """A pick step's input as engine.schedules.runs.build_run writes it (the channel and the
    run's rules)."""

    item_id: str
    collection_id: str | None = None
    schedule_id: str
    workflow_id: str
    reporter_id: str
    max_age_hours: int
    max_videos_per_channel: int
    as_of: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What a run does with one video. ``processed`` without ``execution_id`` is still to be
    started; with one, it was (by this run, before a crash), or, for ``skipped_seen``, by the
    earlier run that processed it."""

    video: Video
    outcome: RunOutcome
    execution_id: str | None = None
    reason: str = ""


def seen_value(run: str, execution_id: str, published: int | None = None) -> str:
    """What the seen hash records for a processed video: the run, the video's execution and,
    when known, its publication time (ms), by which the hash forgets it (:func:`forgettable`)."""
    return f"{run} {execution_id}" if published is None else f"{run} {execution_id} {published}"


def seen_parts(value: str) -> tuple[str, str]:
    """The run and the execution a seen-hash value names (the inverse of :func:`seen_value`)."""
    run, _, rest = value.partition(" ")
    return run, rest.partition(" ")[0]


def forgettable(seen: dict[str, str], *, as_of_ms: int, max_age_hours: int) -> list[str]:
    """The videos of a seen hash that no run from ``as_of_ms`` on can pick again: published
    more than ``max_age_hours`` before it, they are ``skipped_too_old`` whether seen or not.
    Entries recorded without a publication time are kept."""
    oldest = as_of_ms - max_age_hours * _HOUR_MS
    out = []
    for video_id, value in seen.items():
        published = value.split(" ")[2:3]
        if published and published[0].isdigit() and int(published[0]) < oldest:
            out.append(video_id)
    return out


def published_ms(published_at: str | None) -> int | None:
    """An ISO 8601 time (``2026-11-29T09:00:00Z``) in ms; None when absent or unreadable."""
    if not published_at:
        return None
    try:
        stamp = dt.datetime.fromisoformat(published_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def decide(
    videos: list[Video],
    seen: dict[str, str],
    *,
    run: str,
    as_of_ms: int,
    max_age_hours: int,
    cap: int,
) -> list[Decision]:
    """The rules of the module docstring over one channel's ``videos``, newest first.

    ``seen`` holds the seen-hash entries of these videos. Videos this run ``run`` already
    processed (a pick that runs again) keep their execution and use their share of ``cap`` first,
    so a pick run twice picks the same videos even if the listing changed in between.
    """
    oldest = as_of_ms - max_age_hours * _HOUR_MS
    unique = list({v.video_id: v for v in videos}.values())
    unique.sort(key=lambda v: published_ms(v.published_at) or 0, reverse=True)
    taken = sum(1 for v in unique if v.video_id in seen and seen_parts(seen[v.video_id])[0] == run)
    out: list[Decision] = []
    for video in unique:
        recorded = seen.get(video.video_id)
        published = published_ms(video.published_at)
        if recorded is not None:
            by, execution_id = seen_parts(recorded)
            outcome: RunOutcome = "processed" if by == run else "skipped_seen"
            out.append(Decision(video, outcome, execution_id))
        elif published is None:
            out.append(Decision(video, "failed", reason="no publication date in the listing"))
        elif published < oldest:
            out.append(Decision(video, "skipped_too_old"))
        elif taken < cap:
            taken += 1
            out.append(Decision(video, "processed"))
        else:
            out.append(Decision(video, "capped"))
    return out
