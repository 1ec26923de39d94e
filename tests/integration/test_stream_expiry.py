"""An ended execution's own stream outlives the projector's lag: the appender keeps it for the
retention, and the live projector shortens it to the hot window only once the view holds its
end. Before, a tiny hot window let the stream expire before the projector had folded it, and
``GET /v1/executions/{id}`` answered 404 for an execution that had just been accepted."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from projections.projector import Projector
from projections.queries import Queries
from tests.integration.test_worker import request, transcribe

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """An archive and a hot window of nothing: a folded stream may go at once."""
    return replace(settings, archive_url="memory://", hot_seconds=0)


async def test_an_ended_stream_stays_until_the_projector_has_folded_its_end(
    runtime: Runtime,
) -> None:
    store = runtime.store
    req = await request(store, [transcribe()])
    stream = store.keys.execution(req.execution_id)
    await Worker(runtime).run_until_idle()

    # Ended, not folded: the stream is kept for the retention, and the read folds it.
    ttl = await store.redis.pttl(stream)
    assert ttl > runtime.settings.stream_retention_ms
    view = await Queries(runtime).get_view(req.owner, req.execution_id)
    assert view is not None
    assert view.status == "done"

    # Folded: the stream gets the hot window, and the view answers.
    await Projector(runtime).run_until_idle()
    assert await store.redis.pttl(stream) in (-2, 0, 1)  # gone, or about to be
    view = await Queries(runtime).get_view(req.owner, req.execution_id)
    assert view is not None
    assert view.status == "done"


async def test_a_stream_with_events_past_the_folded_end_is_left_alone(runtime: Runtime) -> None:
    """A retried dead letter appends past its first end: a projector folding that first end must
    not expire the stream of an execution running again."""
    store = runtime.store
    req = await request(store, [transcribe()])
    await Worker(runtime).run_until_idle()
    stream = store.keys.execution(req.execution_id)
    # What the retry does to the stream: an event past the end, and no expiry any more.
    await store.redis.xadd(stream, {"e": b"{}"}, id="99-0")
    await store.redis.persist(stream)
    await Projector(runtime).run_until_idle()
    assert await store.redis.pttl(stream) == -1
