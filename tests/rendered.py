"""The read side as a client sees it: views (``projections``) rendered by ``api.render`` into the
JSON bodies the routes send, for tests that assert on bodies rather than on views."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from api import render
from engine.runtime import Runtime
from projections import progress
from projections.queries import Queries
from projections.views import ExecutionView

Body = dict[str, Any]


def body(struct: msgspec.Struct) -> Body:
    """A response Struct as the JSON a client decodes (the bytes ``render.respond`` sends)."""
    decoded: Body = orjson.loads(render.respond(struct).body)
    return decoded


def execution_body(view: ExecutionView) -> Body:
    """``GET /v1/executions/{id}``'s body for ``view``."""
    return body(render.execution_detail(view))


def summary_body(view: ExecutionView) -> Body:
    """The ``execution`` object of the 202 body and of lists, for ``view``."""
    return body(render.execution(view))


def run_body(view: ExecutionView) -> Body:
    """``GET …/schedule/runs/{run_id}``'s ``run``, for a schedule run's ``view``."""
    return body(render.run_detail(progress.run_detail(view)))


class RenderedQueries:
    """:class:`projections.queries.Queries`, each answer rendered as the route renders it."""

    def __init__(self, runtime: Runtime) -> None:
        self.views = Queries(runtime)

    async def get_view(self, owner: str, execution_id: str) -> ExecutionView | None:
        return await self.views.get_view(owner, execution_id)

    async def get_execution(self, owner: str, execution_id: str) -> Body | None:
        view = await self.views.get_view(owner, execution_id)
        return None if view is None else execution_body(view)

    async def history(self, owner: str, execution_id: str) -> list[Body] | None:
        events = await self.views.history(owner, execution_id)
        return None if events is None else body(render.events(events, None))["events"]

    async def list_executions(
        self, owner: str, *, active: bool, limit: int, cursor: str | None
    ) -> tuple[list[Body], str | None]:
        page = await self.views.list_executions(owner, active=active, limit=limit, cursor=cursor)
        listed = body(render.execution_list(page))
        return listed["executions"], listed["next_cursor"]

    async def list_reporter_executions(
        self, owner: str, reporter_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Body], str | None]:
        page = await self.views.list_reporter_executions(
            owner, reporter_id, limit=limit, cursor=cursor
        )
        listed = body(render.execution_list(page))
        return listed["executions"], listed["next_cursor"]

    async def list_runs(
        self, owner: str, reporter_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Body], str | None]:
        page = await self.views.list_runs(owner, reporter_id, limit=limit, cursor=cursor)
        listed = body(render.run_list(page))
        return listed["runs"], listed["next_cursor"]

    async def get_run(self, owner: str, reporter_id: str, run: str) -> Body | None:
        found = await self.views.get_run(owner, reporter_id, run)
        return None if found is None else body(render.run_detail(found))

    async def get_transcript(self, owner: str, item_id: str, lang: str | None) -> Body | None:
        found = await self.views.get_transcript(owner, item_id, lang)
        return None if found is None else body(render.transcript(found))
