"""The scheduler role: fire every enabled schedule once per ``interval_hours``.

Each pass (every ``CLIPSTREAM_SCHEDULER_INTERVAL_MS``) reads, per partition, the due index that
engine.resources.schedules keeps (``"{owner} {schedule_id}"`` -> next due tick, ms) up to now, and
for each due schedule:

    ticks      due, due + interval, due + 2 * interval …: the one fired is the latest at or before
               now, so a scheduler that was down catches up with ONE run, not a burst
    fire       engine.schedules.runs.trigger_run with that tick: its idempotency key is the
               schedule and the tick, so however many schedulers race on it, it starts one run
               (the others get that run back); while the previous run is still in flight the tick
               starts nothing (one run at a time) and is passed over
    advance    the index moves to the next tick with ``ZADD XX GT``: never backwards (a slow
               scheduler cannot undo a faster one) and never back in (a deleted schedule stays out)
    heal       a schedule deleted or disabled behind the index's back is taken out of it, guarded
               by the record as read, so a schedule enabled meanwhile is never lost

A tick that cannot start a run (no balance for the fee, no channel to sync) is logged and passed
over; Redis failing ends the pass and the next one tries again (nothing was advanced).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from engine import meters
from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import EngineError, StoreError
from engine.resources import schedules
from engine.resources.records import SCHEDULES, Schedule
from engine.resources.store import Store
from engine.runtime import Runtime
from engine.schedules.runs import trigger_run

log = logging.getLogger("clipstream.scheduler")

BATCH = 100  # due schedules read per partition per pass


def latest_tick(due_ms: int, interval_ms: int, now_ms: int) -> int:
    """The latest of the ticks ``due_ms + k * interval_ms`` (k >= 0) at or before ``now_ms``."""
    return due_ms + (now_ms - due_ms) // interval_ms * interval_ms


@dataclass(frozen=True, slots=True)
class Fired:
    """What a pass did with one due tick: ``dispatched`` (a run started, here or by another
    scheduler: ``execution_id``), ``already_running`` (the previous run is in flight) or
    ``refused`` (``reason``: nothing started)."""

    owner: str
    schedule_id: str
    tick_ms: int
    outcome: Literal["dispatched", "already_running", "refused"]
    execution_id: str | None = None
    reason: str = ""


class Scheduler:
    """Fires due schedules: ``run(stop)`` for a process, ``tick()`` for one pass."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Callable[[], int] = now_ms,
        scheduler_id: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.clock = clock
        self.scheduler_id = scheduler_id or f"sched_{secrets.token_hex(4)}"
        self._records = Store(runtime)

    async def run(self, stop: anyio.Event | None = None) -> None:
        """A pass every ``scheduler_interval_ms`` until ``stop`` is set; a failed pass is logged
        and the next one tries again."""
        stop = stop or anyio.Event()
        interval_s = self.runtime.settings.scheduler_interval_ms / 1000
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # a bug or Redis: never the end of the role
                log.exception("scheduler %s: pass failed", self.scheduler_id)
            with anyio.move_on_after(interval_s):
                await stop.wait()

    async def tick(self) -> list[Fired]:
        """One pass over every partition's due schedules."""
        now = self.clock()
        fired: list[Fired] = []
        for partition in self.store.partitions:
            due_key = self.store.keys.schedule_due(partition)
            rows = await self.store.redis.zrangebyscore(
                due_key, "-inf", now, start=0, num=BATCH, withscores=True
            )
            for member, score in rows:
                owner, _, schedule_id = as_str(member).partition(" ")
                result = await self._fire(due_key, owner, schedule_id, int(score), now)
                if result is not None:
                    fired.append(result)
        return fired

    async def _fire(
        self, due_key: str, owner: str, schedule_id: str, due_ms: int, now: int
    ) -> Fired | None:
        """Fire the latest due tick of one schedule and advance its due time."""
        schedule = await self._listed_schedule(due_key, owner, schedule_id)
        if schedule is None:
            return None
        interval_ms = schedule.interval_hours * schedules.HOUR_MS
        tick = latest_tick(due_ms, interval_ms, now)
        try:
            triggered = await trigger_run(
                self.runtime,
                owner,
                schedule_id,
                reporter_id=None,
                request_id=f"{self.scheduler_id}:{tick}",
                tick_ms=tick,
            )
        except StoreError:
            raise  # Redis: nothing advanced, the next pass tries again
        except EngineError as exc:
            log.warning("schedule %s: tick %d starts no run: %s", schedule_id, tick, exc)
            result = Fired(owner, schedule_id, tick, "refused", reason=str(exc))
        else:
            result = Fired(owner, schedule_id, tick, triggered.status, triggered.execution_id)
        meters.SCHEDULE_TICKS.labels(result.outcome).inc()
        member = schedules.due_member(owner, schedule_id)
        await self.store.redis.zadd(due_key, {member: tick + interval_ms}, xx=True, gt=True)
        return result

    async def _listed_schedule(self, due_key: str, owner: str, schedule_id: str) -> Schedule | None:
        """The enabled schedule a due entry names; None, and the entry taken out, when it is gone
        or disabled (only if the record is still what was read)."""
        st = self._records
        key = st.record(owner, SCHEDULES, schedule_id)
        raw = await st.redis.get(key)
        schedule = None if raw is None else SCHEDULES.decoder.decode(raw)
        if schedule is not None and schedule.enabled:
            return schedule
        txn = st.txn().absent(key) if raw is None else st.txn().unchanged(key, bytes(raw))
        await txn.remove(due_key, schedules.due_member(owner, schedule_id)).commit()
        return None
