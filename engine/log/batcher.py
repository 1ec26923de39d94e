"""Group commit for the worker's appends.

Every execution a worker drives reaches its appends at its own moment, but with many executions in
flight most of them reach one in the same scheduling tick. An :class:`AppendBatcher` collects the
appends queued while the previous round trip is in flight (or during one pass of the event loop)
and writes them with one pipelined :meth:`EventLog.append_many`; each caller then gets its own
answer, exactly as if it had called :meth:`EventLog.append` alone. Nothing waits on a timer: a
lone append is sent at the next pass of the event loop, and a batch that fills is sent by the
append that filled it.
"""

from __future__ import annotations

import logging
from collections import deque

import anyio
import anyio.abc
import anyio.lowlevel

from engine.errors import BalanceRefused, ConcurrencyConflict, StoreUnavailable
from engine.log.event_log import AppendOp, AppendResult, EventLog
from engine.log.events import AnyEvent

log = logging.getLogger("clipstream.worker")


class _Pending:
    """One caller's append and, once written, its answer."""

    __slots__ = ("abandoned", "op", "result")

    def __init__(self, op: AppendOp) -> None:
        self.op = op
        self.result: AppendResult | None = None
        self.abandoned = False  # the caller was cancelled before the append was sent


class _Batch:
    """The appends that travel in one pipeline, and the event their callers wait on (one per
    batch, not one per append: an anyio.Event costs more to make than the rest of an append's
    bookkeeping here)."""

    __slots__ = ("done", "items")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.items: list[_Pending] = []


class AppendBatcher:
    """Collects appends from many tasks and writes them in pipelined batches.

    ``max_batch`` bounds one pipeline; up to ``max_in_flight`` pipelines may be in flight at once,
    so the executions answered by one can run their next step while Redis works on the next (the
    worker caps a pipeline at its share of the lanes: engine.run.worker).
    :meth:`run` must be running (a task of the worker's task group) for appends to be written.
    """

    def __init__(
        self, event_log: EventLog, *, max_batch: int = 200, max_in_flight: int = 2
    ) -> None:
        self.event_log = event_log
        self.max_batch = max(1, max_batch)
        self._open = _Batch()  # the batch new appends join
        self._full: deque[_Batch] = deque()  # batches that reached max_batch, not sent yet
        self._wake = anyio.Event()
        self._slots = anyio.Semaphore(max(1, max_in_flight))
        self._tasks: anyio.abc.TaskGroup | None = None  # run()'s, which the flushes run in

    async def append(self, op: AppendOp) -> list[AnyEvent]:
        """Append ``op`` in the next batch: the events stamped, or ConcurrencyConflict /
        BalanceRefused / StoreUnavailable exactly as :meth:`EventLog.append` raises them.

        A caller cancelled before its append was sent withdraws it (a job that lost its lease
        writes nothing more); once sent, it is written or refused by the expected seq as usual.
        """
        pending = _Pending(op)
        batch = self._open
        batch.items.append(pending)
        if len(batch.items) >= self.max_batch:
            self._open = _Batch()
            if self._tasks is not None and self._slots.value > 0:
                # Sent now, not after run() has had its turn: with every lane busy, each pass of
                # the event loop runs a great many steps, and Redis would idle meanwhile.
                self._slots.acquire_nowait()
                self._tasks.start_soon(self._flush, batch)
            else:
                self._full.append(batch)
        self._wake.set()
        try:
            await batch.done.wait()
        except BaseException:
            pending.abandoned = True
            raise
        result = pending.result
        if result is None:  # the batch's round trip was cancelled: written or not, unknown
            raise StoreUnavailable(f"the append to {op.execution_id} was interrupted")
        if isinstance(result, ConcurrencyConflict | BalanceRefused | StoreUnavailable):
            raise result
        return result

    async def run(self) -> None:
        """Write queued appends until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tasks = tg
            try:
                await self._send(tg)
            finally:
                self._tasks = None

    async def _send(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            # One more pass of the event loop: every task that is ready now reaches its append
            # and joins this batch instead of the next one.
            await anyio.lowlevel.checkpoint()
            while self._full or self._open.items:
                await self._slots.acquire()
                if self._full:
                    batch = self._full.popleft()
                elif self._open.items:
                    batch, self._open = self._open, _Batch()
                else:
                    self._slots.release()
                    continue
                tg.start_soon(self._flush, batch)

    async def _flush(self, batch: _Batch) -> None:
        try:
            # Appends withdrawn by their caller before this point are not sent.
            live = [p for p in batch.items if not p.abandoned]
            results: list[AppendResult] = []
            try:
                if live:
                    results = await self.event_log.append_many([p.op for p in live])
            except StoreUnavailable as exc:
                results = [exc] * len(live)
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("append batch failed")
                results = [StoreUnavailable(f"append batch failed: {exc}")] * len(live)
            for pending, result in zip(live, results, strict=True):
                pending.result = result
        finally:
            batch.done.set()
            self._slots.release()
