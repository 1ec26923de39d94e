"""Test support for schedule runs: a YouTube provider whose channel listings the test writes, and
an owner with a reporter, a workflow, collections of channels and a schedule over them."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.errors import ToolError
from engine.log.events import AnyEvent, ExecutionRequested, RunItemRecorded
from engine.money import accounts
from engine.providers import registry
from engine.providers.base import ChannelListing, ChannelVideo, ProviderCall, VideoMetadata
from engine.providers.registry import Providers
from engine.resources import collections, reporters, schedules
from engine.resources.items import create_item
from engine.resources.records import Schedule
from engine.resources.reporters import StepInput
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools.catalog import check_step
from projections.projector import Projector

HOUR_MS = 3_600_000


def hours_ago(hours: float, now_ms: int | None = None) -> str:
    """An ISO 8601 publication time ``hours`` before ``now_ms`` (default: now)."""
    now = time.time() * 1000 if now_ms is None else now_ms
    stamp = dt.datetime.fromtimestamp((now - hours * HOUR_MS) / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeYouTube:
    """Channel listings as the test sets them (``listings[channel]``, newest first); a channel in
    ``failing`` answers a non-retryable error. Counts the listings taken per channel."""

    def __init__(self) -> None:
        self.listings: dict[str, list[ChannelVideo]] = {}
        self.failing: set[str] = set()
        self.calls: Counter[str] = Counter()

    def upload(self, channel: str, video_id: str, hours_old: float) -> None:
        """Add a video to the top of ``channel``'s listing."""
        video = ChannelVideo(video_id, f"video {video_id}", hours_ago(hours_old))
        self.listings.setdefault(channel, []).insert(0, video)

    async def video(self, *, video_id: str, call: ProviderCall) -> VideoMetadata:
        raise ToolError("not_found", "the fake lists channels only", retryable=False)

    async def channel_videos(
        self, *, channel: str, max_videos: int, call: ProviderCall
    ) -> ChannelListing:
        self.calls[channel] += 1
        if channel in self.failing:
            raise ToolError("provider_rejected", f"channel {channel} is gone", retryable=False)
        videos = self.listings.get(channel, [])[:max_videos]
        return ChannelListing(f"UC{channel.strip('@'):_<22}", channel, videos, {"quota_units": 2})


class FakeProviders(Providers):
    """The simulated providers, but YouTube is ``fake``."""

    def __init__(self, fake: FakeYouTube) -> None:
        super().__init__()
        self.fake = fake

    def youtube(self, settings: Settings) -> Any:
        return self.fake


def install(monkeypatch: pytest.MonkeyPatch) -> FakeYouTube:
    """Make the process's providers use a fresh FakeYouTube (undone after the test)."""
    fake = FakeYouTube()
    monkeypatch.setattr(registry, "_current", FakeProviders(fake))
    return fake


@dataclass
class World:
    """One owner with a reporter, a one-step workflow, a schedule and the channels of its
    collections (``channels``: handle -> item id)."""

    runtime: Runtime
    owner: str
    reporter_id: str
    workflow_id: str
    schedule: Schedule
    collection_ids: list[str]
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def schedule_id(self) -> str:
        return self.schedule.schedule_id


async def world(
    runtime: Runtime,
    channels: list[list[str]],
    *,
    coins_micro: int = 10_000_000,
    **schedule_fields: Any,
) -> World:
    """A funded owner whose schedule runs a ``transcribe`` workflow over one collection per list
    of channel handles in ``channels``; ``schedule_fields`` override the schedule's rules
    (interval 24 h, max age 168 h, 5 videos per channel, enabled)."""
    account, _ = await accounts.create_account(runtime, name="t", coins_micro=coins_micro)
    owner = account.account_id
    reporter = await reporters.create_reporter(runtime, owner, {"name": "r"})
    workflow = await reporters.create_workflow(
        runtime,
        owner,
        reporter.reporter_id,
        {"name": "wf", "target_kind": "youtube_video"},
        [StepInput(tool_id="transcribe")],
        check_step=check_step,
    )
    found: dict[str, str] = {}
    collection_ids = []
    for handles in channels:
        collection = await collections.create_collection(runtime, owner, {"name": "c"})
        collection_ids.append(collection.collection_id)
        for handle in handles:
            if handle not in found:
                found[handle] = (await create_item(runtime, owner, handle)).item_id
            await collections.add_item(runtime, owner, collection.collection_id, found[handle])
    fields: dict[str, Any] = {
        "workflow_id": workflow.workflow_id,
        "interval_hours": 24,
        "max_age_hours": 168,
        "max_videos_per_channel": 5,
        "collection_ids": collection_ids,
        **schedule_fields,
    }
    schedule = await schedules.create_schedule(runtime, owner, reporter.reporter_id, fields)
    return World(
        runtime,
        owner,
        reporter.reporter_id,
        workflow.workflow_id,
        schedule,
        collection_ids,
        found,
    )


async def settle(runtime: Runtime) -> None:
    """Run workers and the projector until nothing is left to do: runs and the executions they
    started end, and every view is current."""
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()


def items_of(history: list[AnyEvent]) -> list[tuple[str, str]]:
    """(video, outcome) of a run's RunItemRecorded events, in log order."""
    return [(e.video_id, e.outcome) for e in history if isinstance(e, RunItemRecorded)]


async def children(runtime: Runtime, owner: str, run_execution_id: str) -> list[ExecutionRequested]:
    """Every execution a run started, read from the owner's partition log."""
    store = runtime.store
    entries = await store.log.read_log(store.keys.partition(owner), "0-0", 100_000)
    return [
        e.event
        for e in entries
        if isinstance(e.event, ExecutionRequested) and e.event.run_execution_id == run_execution_id
    ]
