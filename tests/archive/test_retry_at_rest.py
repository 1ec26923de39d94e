"""A dead letter retried after its execution's view was packed at rest (projections.retention
assumes a finished view is never written again: a retry is the one exception), its own stream
expired (kept for the hot window only when there is an archive) and its log archived: it is
resumed from the archive's copy of its events, and its view is read the same way."""

from __future__ import annotations

import pytest

from engine.archive import reader
from engine.errors import StateConflict
from engine.log.events import ExecutionCompleted
from engine.run import revive
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.namespace import Namespace, current_version
from projections.projector import Projector
from projections.queries import Queries
from projections.retention import ViewRetention
from projections.views import is_packed
from tests.archive.conftest import new_archiver
from tests.integration.test_dead_letter_retry import dead_lettered

pytestmark = pytest.mark.anyio


async def test_a_packed_dead_letter_is_retried_to_done(arch_runtime: Runtime) -> None:
    runtime = arch_runtime
    store = runtime.store
    req = await dead_lettered(runtime)
    x = req.execution_id
    await Projector(runtime).run_until_idle()
    await new_archiver(runtime).run_until_idle()
    sweep = ViewRetention(runtime)
    await sweep.sweep()  # hot window 0: the finished (error) view is packed now
    keys = store.keys
    version = await current_version(runtime.redis, keys)
    view_key = Namespace(keys, keys.partition(req.owner), version).view(x)
    assert is_packed(await runtime.redis.get(view_key))
    assert await store.log.history(x) == []  # its stream expired with the hot window (0 here)
    with pytest.raises(StateConflict, match="nor in an archive"):
        await revive.retry(store, x, "cli:ops")  # without the archive, it cannot be resumed

    await revive.retry(store, x, "cli:ops", runtime.archive)
    restored = await store.log.history(x)
    assert [e.seq for e in restored] == list(range(1, len(restored) + 1))
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()
    history = await reader.execution_history(store, runtime.archive, x)
    assert isinstance(history[-1], ExecutionCompleted)
    view = await Queries(runtime).get_view(req.owner, x)
    assert view is not None
    assert (view.status, view.retries) == ("done", 1)
