"""The tool registry: every tool a workflow step may name, by ``tool_id``.

``TOOLS`` is what a workflow step may name and what ``GET /v1/tools`` lists (id, description,
provider kind, params schema via ``msgspec.json.schema(tool.params_schema)``, pricing via
``estimate_cost``). The engine's own internal tools (a schedule run's pick) are not here: no
client names them, and :mod:`engine.run.toolbox` adds them to what the worker runs.
"""

from __future__ import annotations

from engine.tools.base import ProviderKind, StepResult, Tool, ToolContext, ToolParams
from engine.tools.embed import Embed, EmbedParams
from engine.tools.extract_claims import ExtractClaims, ExtractClaimsParams
from engine.tools.llm_prompt import LlmPrompt, LlmPromptParams
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
        Embed(),
    )
}

__all__ = [
    "TOOLS",
    "ChannelSyncParams",
    "EmbedParams",
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
