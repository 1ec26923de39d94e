"""The worker's batched write path, on fakeredis and on a private real Redis: executions that
reach an append together share a round trip, each still gets its own answer, a first delivery is
planned without reading its history, and a withdrawn append is never written."""

from __future__ import annotations

import copy
from typing import Any

import anyio
import pytest

from engine.errors import ConcurrencyConflict, StoreUnavailable
from engine.log.batcher import AppendBatcher
from engine.log.event_log import AppendOp, AppendResult, EventLog
from engine.log.events import (
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionStarted,
    StepCompleted,
    StepSpec,
    StepStarted,
)
from engine.run.worker import Worker
from engine.runtime import Runtime
from tests.integration.test_worker import of_type, pending_count, request, transcribe

pytestmark = pytest.mark.anyio


class _CountingLog:
    """Counts the log calls the worker makes, passing everything through."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self.append_many_calls: list[int] = []
        self.history_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def append_many(self, ops: list[AppendOp]) -> list[AppendResult]:
        self.append_many_calls.append(len(ops))
        return await self._log.append_many(ops)

    async def history(self, execution_id: str, after_seq: int = 0) -> Any:
        self.history_calls += 1
        return await self._log.history(execution_id, after_seq)

    async def histories(self, execution_ids: list[str]) -> Any:
        self.history_calls += len(execution_ids)
        return await self._log.histories(execution_ids)


async def test_executions_at_the_same_point_share_round_trips(runtime: Runtime) -> None:
    store = runtime.store
    reqs = [await request(store, [transcribe()]) for _ in range(12)]
    worker = Worker(runtime)
    counting = _CountingLog(store.log)
    # The worker's own store, whose log counts: the checks below read the real one.
    worker.store = copy.copy(store)
    worker.store.log = counting  # type: ignore[assignment]
    worker.batcher = AppendBatcher(counting, max_batch=runtime.settings.batch)  # type: ignore[arg-type]
    await worker.run_until_idle()

    for req in reqs:
        history = await store.log.history(req.execution_id)
        assert [type(e).__name__ for e in history] == [
            "ExecutionRequested",
            "ExecutionStarted",
            "StepStarted",
            "StepCompleted",
            "ExecutionCompleted",
        ]
        [done] = of_type(history, StepCompleted)
        assert done.output_ref is not None
        p = store.keys.partition(req.owner)
        assert await store.blobs.get(p, done.output_ref.sha256) is not None
        assert await pending_count(store, req) == 0
    # Two appends per execution (started, then completed), in far fewer round trips; and no
    # history was read: every delivery was a first one.
    assert sum(counting.append_many_calls) == 2 * len(reqs)
    assert len(counting.append_many_calls) < len(reqs)
    assert counting.history_calls == 0


async def test_a_cancel_before_the_first_delivery_is_honoured(runtime: Runtime) -> None:
    # The worker plans a first delivery from the entry alone; the cancel already in the log makes
    # its first append conflict, and the reloaded history ends the execution without a step.
    store = runtime.store
    req = await request(store, [transcribe()])
    cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=req.owner)
    await store.log.append(req.execution_id, 1, [cancel])
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == [
        "ExecutionRequested",
        "ExecutionCancelRequested",
        "ExecutionCancelled",
    ]
    assert of_type(history, StepStarted) == []
    assert await pending_count(store, req) == 0


async def test_each_caller_gets_its_own_answer_from_one_batch(runtime: Runtime) -> None:
    store = runtime.store
    a = await request(store, [transcribe()])
    b = await request(store, [transcribe()])
    batcher = AppendBatcher(store.log)
    results: dict[str, Any] = {}

    async def append(name: str, op: AppendOp) -> None:
        try:
            results[name] = await batcher.append(op)
        except ConcurrencyConflict as exc:
            results[name] = exc

    started_a = ExecutionStarted(execution_id=a.execution_id, worker_id="w", epoch=1)
    started_b = ExecutionStarted(execution_id=b.execution_id, worker_id="w", epoch=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        async with anyio.create_task_group() as callers:
            callers.start_soon(append, "a", AppendOp(a.execution_id, 1, [started_a]))
            callers.start_soon(append, "b", AppendOp(b.execution_id, 2, [started_b]))
        tg.cancel_scope.cancel()
    assert [e.seq for e in results["a"]] == [2]
    assert isinstance(results["b"], ConcurrencyConflict)
    assert results["b"].actual == 1
    assert len(await store.log.history(b.execution_id)) == 1


async def test_an_append_withdrawn_before_it_is_sent_is_never_written(runtime: Runtime) -> None:
    store = runtime.store
    req = await request(store, [transcribe()])
    batcher = AppendBatcher(store.log)  # not running yet: the append waits in its queue
    done = ExecutionCompleted(execution_id=req.execution_id, cost=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.append, AppendOp(req.execution_id, 1, [done]))
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()  # the caller lost its lease: it withdraws
    started = ExecutionStarted(execution_id=req.execution_id, worker_id="w", epoch=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        written = await batcher.append(AppendOp(req.execution_id, 1, [started]))
        tg.cancel_scope.cancel()
    assert [e.seq for e in written] == [2]
    history = await store.log.history(req.execution_id)
    assert of_type(history, ExecutionCompleted) == []
    assert of_type(history, ExecutionCancelled) == []


async def test_a_step_reads_its_predecessors_blob_from_the_drive_not_redis(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transcript a drive's first step made is what its summary step reads: no round trip.
    The summary is the transcript's, as when it is read from Redis."""
    store = runtime.store
    loads: list[str] = []
    get = store.blobs.get

    async def counted(partition: int, sha256: str) -> bytes | None:
        loads.append(sha256)
        return await get(partition, sha256)

    monkeypatch.setattr(store.blobs, "get", counted)
    summary = StepSpec(step_id="stp_s", tool_id="summary_review")
    req = await request(store, [transcribe(), summary])
    await Worker(runtime).run_until_idle()
    history = await store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    transcript, review = of_type(history, StepCompleted)
    assert transcript.output_ref is not None
    assert review.output["kind"] == "summary"
    assert transcript.output_ref.sha256 not in loads


class _StuckLog:
    """An event log whose round trip never answers (until it is cancelled)."""

    def __init__(self) -> None:
        self.sent = anyio.Event()

    async def append_many(self, ops: list[AppendOp]) -> list[AppendResult]:
        self.sent.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_batch_cancelled_in_flight_answers_its_callers() -> None:
    """The batcher stopped (a worker shutting down) while a batch's round trip is in flight: its
    callers learn that the append's outcome is unknown (StoreUnavailable) instead of waiting for
    an answer that will never come."""
    stuck = _StuckLog()
    batcher = AppendBatcher(stuck)  # type: ignore[arg-type]
    answers: list[BaseException] = []

    async def caller() -> None:
        try:
            await batcher.append(AppendOp("exc_stuck", 3, []))
        except StoreUnavailable as exc:
            answers.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as callers:
            callers.start_soon(caller)
            async with anyio.create_task_group() as running:
                running.start_soon(batcher.run)
                await stuck.sent.wait()
                running.cancel_scope.cancel()
    assert len(answers) == 1
