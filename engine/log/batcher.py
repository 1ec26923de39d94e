"""Group commit for the worker's appends.

Every execution a worker drives reaches its appends at its own moment, but with many executions in
flight most of them reach one in the same scheduling tick. An :class:`AppendBatcher` collects the
appends queued while the previous round trip is in flight (or during one pass of the event loop)
and writes them with one pipelined :meth:`EventLog.append_many`; each caller then gets its own
answer, exactly as if it had called :meth:`EventLog.append` alone. Nothing waits on a timer: a
lone append is sent at the next pass of the event loop.
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc
import anyio.lowlevel

from engine.errors import BalanceRefused, ConcurrencyConflict, StoreUnavailable
from engine.log.event_log import AppendOp, AppendResult, EventLog
from engine.log.events import AnyEvent

log = logging.getLogger("clipstream.worker")


class _Pending:
    """One caller's append and, once written, its answer."""

    __slots__ = ("abandoned", "done", "op", "result")

    def __init__(self, op: AppendOp) -> None:
        self.op = op
        self.done = anyio.Event()
        self.result: AppendResult | None = None
        self.abandoned = False  # the caller was cancelled before the append was sent


class AppendBatcher:
    """Collects appends from many tasks and writes them in pipelined batches.

    ``max_batch`` bounds one pipeline; up to ``max_in_flight`` pipelines may be in flight at once,
    so the executions answered by one can run their next step while Redis works on the next.
    :meth:`run` must be running (a task of the worker's task group) for appends to be written.
    """

    def __init__(
        self, event_log: EventLog, *, max_batch: int = 200, max_in_flight: int = 2
    ) -> None:
        self.event_log = event_log
        self.max_batch = max(1, max_batch)
        self._queue: list[_Pending] = []
        self._wake = anyio.Event()
        self._slots = anyio.Semaphore(max(1, max_in_flight))

    async def append(self, op: AppendOp) -> list[AnyEvent]:
        """Append ``op`` in the next batch: the events stamped, or ConcurrencyConflict /
        BalanceRefused / StoreUnavailable exactly as :meth:`EventLog.append` raises them.

        A caller cancelled before its append was sent withdraws it (a job that lost its lease
        writes nothing more); once sent, it is written or refused by the expected seq as usual.
        """
        pending = _Pending(op)
        self._queue.append(pending)
        self._wake.set()
        try:
            await pending.done.wait()
        except BaseException:
            pending.abandoned = True
            raise
        result = pending.result
        if isinstance(result, ConcurrencyConflict | BalanceRefused | StoreUnavailable):
            raise result
        assert result is not None
        return result

    async def run(self) -> None:
        """Write queued appends until cancelled."""
        async with anyio.create_task_group() as tg:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                # One more pass of the event loop: every task that is ready now reaches its append
                # and joins this batch instead of the next one.
                await anyio.lowlevel.checkpoint()
                while self._queue:
                    await self._slots.acquire()
                    batch = self._take()
                    if batch:
                        tg.start_soon(self._flush, batch)
                    else:
                        self._slots.release()

    def _take(self) -> list[_Pending]:
        """Up to ``max_batch`` queued appends, skipping those withdrawn by their caller."""
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.max_batch:
            take = self.max_batch - len(batch)
            chunk, self._queue = self._queue[:take], self._queue[take:]
            batch.extend(p for p in chunk if not p.abandoned)
        return batch

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            try:
                results = await self.event_log.append_many([p.op for p in batch])
            except StoreUnavailable as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("append batch failed")
                results = [StoreUnavailable(f"append batch failed: {exc}")] * len(batch)
            for pending, result in zip(batch, results, strict=True):
                pending.result = result
                pending.done.set()
        finally:
            self._slots.release()
