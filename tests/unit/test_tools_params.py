"""Every tool's params schema: defaults, bounds, unknown fields refused, and the catalogue (as
``GET /v1/tools`` renders it) listing exactly the registered tools with the same schemas."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from api import render
from engine.errors import InvalidRequest
from engine.tools import (
    TOOLS,
    ChannelSyncParams,
    ExtractClaimsParams,
    SummaryReviewParams,
)
from engine.tools.catalog import catalogue, check_step

EXPECTED = {
    "transcribe": "transcriber",
    "summary_review": "llm",
    "extract_claims": "llm",
    "llm_prompt": "llm",
    "youtube_metadata": "youtube",
    "channel_sync": "youtube",
    "embed": "embedder",
}


def test_every_issue_tool_is_registered_with_its_provider_kind() -> None:
    assert {tid: tool.provider_kind for tid, tool in TOOLS.items()} == EXPECTED
    for tool in TOOLS.values():
        assert tool.retry.max_attempts > 1
        assert 0 < tool.timeout_s <= 600
        assert tool.description


def test_catalogue_follows_the_tools() -> None:
    entries = {e["tool_id"]: e for e in msgspec.to_builtins([render.tool(t) for t in catalogue()])}
    assert set(entries) == set(TOOLS)
    for tid, entry in entries.items():
        assert entry["params_schema"] == msgspec.json.schema(TOOLS[tid].params_schema)
    units = {u["unit"] for u in entries["summary_review"]["pricing"]["units"]}
    assert units == {"prompt_token", "completion_token", "audio_second"}
    assert entries["channel_sync"]["pricing"]["units"] == []


@pytest.mark.parametrize("tool_id", sorted(EXPECTED))
def test_empty_params_and_the_common_ones_are_valid(tool_id: str) -> None:
    check_step(tool_id, {})
    check_step(tool_id, {"timeout_s": 5, "sim": {"fail_attempts": 1}})


@pytest.mark.parametrize("tool_id", sorted(EXPECTED))
def test_unknown_params_are_refused(tool_id: str) -> None:
    with pytest.raises(InvalidRequest, match="surprise"):
        check_step(tool_id, {"surprise": 1})


@pytest.mark.parametrize(
    ("tool_id", "params"),
    [
        ("summary_review", {"length": "epic"}),
        ("summary_review", {"max_tokens": 0}),
        ("extract_claims", {"max_claims": 0}),
        ("extract_claims", {"max_claims": 1000}),
        ("channel_sync", {"max_videos": 501}),
        ("channel_sync", {"max_videos": "many"}),
        ("llm_prompt", {"max_tokens": -1}),
        ("llm_prompt", {"model": 3}),
    ],
)
def test_out_of_range_params_are_refused(tool_id: str, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match=tool_id):
        check_step(tool_id, params)


def test_defaults() -> None:
    assert SummaryReviewParams() == msgspec.convert({}, SummaryReviewParams)
    assert (SummaryReviewParams().length, SummaryReviewParams().model) == ("medium", None)
    assert ExtractClaimsParams().max_claims == 25
    assert ChannelSyncParams().max_videos == 50
