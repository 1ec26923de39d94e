"""The tool registry: every tool a workflow step may name, by ``tool_id``.

``TOOLS`` is what the worker runs and what ``GET /v1/tools`` lists (id, description, provider
kind, params schema via ``msgspec.json.schema(tool.params_schema)``, pricing via
``estimate_cost``).
"""

from __future__ import annotations

from engine.tools.base import ProviderKind, StepResult, Tool, ToolContext, ToolParams
from engine.tools.llm_prompt import LlmPrompt, LlmPromptParams
from engine.tools.transcribe import Transcribe, TranscribeParams

TOOLS: dict[str, Tool] = {tool.tool_id: tool for tool in (Transcribe(), LlmPrompt())}

__all__ = [
    "TOOLS",
    "LlmPromptParams",
    "ProviderKind",
    "StepResult",
    "Tool",
    "ToolContext",
    "ToolParams",
    "TranscribeParams",
]
