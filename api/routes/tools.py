"""The tool catalogue (``GET /v1/tools``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render
from api.auth import Caller, account_route
from api.openapi import doc
from api.render import respond
from api.schemas.resources import ToolList
from engine.tools.catalog import catalogue


@doc(summary="The tool catalogue", response=ToolList, tags=["tools"])
@account_route("read")
async def list_tools(request: Request, caller: Caller) -> Response:
    """``GET /v1/tools`` → ``{tools: [{tool_id, description, provider, params_schema,
    pricing}]}``."""
    return respond(ToolList(tools=[render.tool(t) for t in catalogue()]))


ROUTES: list[BaseRoute] = [Route("/v1/tools", list_tools, methods=["GET"])]
