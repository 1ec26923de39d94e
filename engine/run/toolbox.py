"""What the worker runs: every tool of the catalogue (engine.tools.TOOLS) and the engine's own
internal tools, which no workflow step may name (a schedule run's pick, engine.schedules.pick).

A live view: a tool added to ``TOOLS`` is runnable at once.
"""

from __future__ import annotations

from collections import ChainMap

from engine.schedules.pick import SchedulePick
from engine.tools import TOOLS, Tool

INTERNAL: dict[str, Tool] = {tool.tool_id: tool for tool in (SchedulePick(),)}
RUNNABLE: ChainMap[str, Tool] = ChainMap(TOOLS, INTERNAL)
