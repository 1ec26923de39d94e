"""The tool registry: every tool a workflow step may name, by ``tool_id``.

``TOOLS`` is what a workflow step may name and what ``GET /v1/tools`` lists (id, description,
provider kind, params schema via ``msgspec.json.schema(tool.params_schema)``, pricing via
``estimate_cost``). ``INTERNAL`` holds the tools of the engine's own executions (a schedule run's
pick), which no client names; ``RUNNABLE`` is what the worker runs: both (a live view, so a tool
added to ``TOOLS`` is runnable at once).
"""

from __future__ import annotations

from collections import ChainMap

from engine.tools.base import ProviderKind, StepResult, Tool, ToolContext, ToolParams
from engine.tools.extract_claims import ExtractClaims, ExtractClaimsParams
from engine.tools.llm_prompt import LlmPrompt, LlmPromptParams
from engine.tools.schedule_pick import SchedulePick
from engine.tools.summary_review import SummaryReview, SummaryReviewParams
from engine.tools.transcribe import Transcribe, TranscribeParams
from engine.tools.youtube import (
    ChannelSync,
    ChannelSyncParams,
    YoutubeMetadata,
    YoutubeMetadataParams,
)

TOOLS: dict[str, Tool] = {
    tool.tool_id: tool
    for tool in (
        Transcribe(),
        SummaryReview(),
        ExtractClaims(),
        LlmPrompt(),
        YoutubeMetadata(),
        ChannelSync(),
    )
}
INTERNAL: dict[str, Tool] = {tool.tool_id: tool for tool in (SchedulePick(),)}
RUNNABLE: ChainMap[str, Tool] = ChainMap(TOOLS, INTERNAL)

__all__ = [
    "INTERNAL",
    "RUNNABLE",
    "TOOLS",
    "ChannelSyncParams",
    "ExtractClaimsParams",
    "LlmPromptParams",
    "ProviderKind",
    "StepResult",
    "SummaryReviewParams",
    "Tool",
    "ToolContext",
    "ToolParams",
    "TranscribeParams",
    "YoutubeMetadataParams",
]
