"""Cancelling a reporter execution over HTTP while its provider call is in flight: the call is
aborted (the simulated provider here would take ten minutes), the execution ends ``error`` with
code ``cancelled``, and the cancelled step is recorded as such."""

from __future__ import annotations

from dataclasses import replace

import anyio
import httpx
import pytest

from engine.log.events import ExecutionCancelled, ExecutionCancelRequested, StepFailed, StepStarted
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.api.test_process import _ok, process_video
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

# Loose on purpose: the verdict is that the call ended at all (it would run for ten minutes);
# this only catches a cancel that waits for a heartbeat-scale timer many times over.
ABORT_BOUND_MS = 5_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Every simulated provider call takes ten minutes: only a cancel can end it.
    return replace(settings, sim_latency_ms=600_000)


async def test_cancel_aborts_the_running_call_and_ends_in_cancelled(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    steps = [{"tool_id": "transcribe"}, {"tool_id": "llm_prompt", "prompt_text": "S"}]
    xid = await process_video(client, alice, steps)
    store = runtime.store
    worker = Worker(runtime)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await eventually(
            lambda: store.log.history(xid),
            until=lambda h: any(isinstance(e, StepStarted) for e in h),
        )
        cancelled = await client.post(f"/v1/executions/{xid}/cancel", headers=alice.key_auth)
        assert cancelled.status_code == 202, cancelled.text
        history = await eventually(
            lambda: store.log.history(xid), until=lambda h: isinstance(h[-1], ExecutionCancelled)
        )
        worker.request_stop()

    names = [type(e).__name__ for e in history]
    assert names[-3:] == [
        "ExecutionCancelRequested",
        "StepFailed",
        "ExecutionCancelled",
    ]
    request = history[-3]
    failed = history[-2]
    assert isinstance(request, ExecutionCancelRequested)
    assert isinstance(failed, StepFailed)
    assert (failed.step_index, failed.code, failed.retryable) == (0, "cancelled", False)
    assert history[-1].at - request.at < ABORT_BOUND_MS
    assert names.count("StepStarted") == 1  # the summary step never started

    await Projector(runtime).run_until_idle()
    body = await _ok(await client.get(f"/v1/executions/{xid}", headers=alice.key_auth))
    assert body["execution"]["status"] == "error"
    assert body["execution"]["error"]["code"] == "cancelled"
    assert [(s["tool_id"], s["status"]) for s in body["steps"]] == [("transcribe", "error")]
    assert [s["tool_id"] for s in body["step_inputs"]] == ["llm_prompt"]
    again = await client.post(f"/v1/executions/{xid}/cancel", headers=alice.key_auth)
    assert again.status_code == 409
