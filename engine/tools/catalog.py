"""The tool catalogue, and the check every workflow step passes.

A read-only view of :data:`engine.tools.TOOLS`: what each tool is, which provider kind it calls,
its params Struct (the API shows its ``msgspec.json.schema``: the document and the check cannot
disagree) and what its provider charges per unit in micro-coins (the simulated providers' cost
model, the one the worker charges). How clients see an entry is ``api.render``'s business.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import InvalidRequest
from engine.providers import sim
from engine.tools import TOOLS, ProviderKind, Tool

# What one unit of work costs, per provider kind, in micro-coins.
_UNIT_PRICES: dict[ProviderKind, list[tuple[str, int]]] = {
    "transcriber": [("audio_second", sim.AUDIO_MICRO_PER_SECOND)],
    "llm": [
        ("prompt_token", sim.LLM_MICRO_PER_PROMPT_TOKEN),
        ("completion_token", sim.LLM_MICRO_PER_COMPLETION_TOKEN),
    ],
    "youtube": [],
    "embedder": [("thousand_tokens", sim.EMBED_MICRO_PER_1K_TOKENS)],
}


def unit_prices(tool: Tool) -> list[tuple[str, int]]:
    """What ``tool`` charges, as (unit, micro-coins per unit): the units of its own provider kind
    and of those it may also call (a summary transcribes an item that has no transcript yet). A
    step supplied its own input (a transcript's ``text``) costs nothing; the YouTube Data API
    costs quota, not coins."""
    return [
        (unit, micro)
        for kind in (tool.provider_kind, *tool.also_uses)
        for unit, micro in _UNIT_PRICES.get(kind, [])
    ]


def catalogue() -> list[Tool]:
    """Every tool a step may name, by ``tool_id``."""
    return [TOOLS[tool_id] for tool_id in sorted(TOOLS)]


def check_step(tool_id: str, params: dict[str, Any], where: str = "step") -> None:
    """InvalidRequest naming the problem unless ``tool_id`` is in the catalogue and ``params``
    validate against its params schema."""
    tool = TOOLS.get(tool_id)
    if tool is None:
        known = ", ".join(sorted(TOOLS))
        raise InvalidRequest(f"{where}.tool_id: no tool {tool_id!r} in the catalogue ({known})")
    try:
        msgspec.convert(params, tool.params_schema)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{where}.params: {exc} (tool {tool_id})") from None
