"""What a worker holds and what it hands the drive of one execution.

:class:`Job` is one lease the worker holds (queued for a lane, or being driven).
:class:`DriveContext` is all a drive (engine.run.drive) may use of the worker running it: the
worker builds one when it starts its lanes and passes it to every drive, so a drive never sees the
worker itself (the worker imports the drive, never the other way round).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from engine.log.batcher import AppendBatcher
from engine.log.events import AnyEvent
from engine.log.store import EventStore
from engine.runtime import Runtime
from engine.settings import Settings


@dataclass(eq=False, slots=True)
class Job:
    """One execution a worker holds the lease of (queued or running)."""

    execution_id: str
    owner: str
    partition: int
    entry_id: str
    epoch: int
    history: list[AnyEvent] | None = None  # known before the job runs; consumed by the first plan
    scope: anyio.CancelScope | None = None  # the whole job (lease lost, shutdown)
    call_scope: anyio.CancelScope | None = None  # the provider call or retry wait in progress
    known_seq: int = 0
    cancel_seen: bool = False
    lost: bool = False
    finished: bool = False  # terminal appended (or found), or abandoned: never hand back

    def interrupt(self) -> None:
        """A cancel was requested: abort the provider call (or retry wait) in progress."""
        self.cancel_seen = True
        if self.call_scope is not None:
            self.call_scope.cancel()

    def lose(self) -> None:
        """Another worker took the lease over: stop at once, write nothing more."""
        self.lost = True
        if self.scope is not None:
            self.scope.cancel()


@dataclass(frozen=True, slots=True)
class DriveContext:
    """The worker's side of a drive: where it appends, what it reads, who it is.

    ``stopping()`` is True once the worker's shutdown began (a drive keeps what is done and starts
    no new step); ``ack(job)`` releases the lease of a job whose execution needs nothing more, with
    the worker's next batch of releases.
    """

    runtime: Runtime
    settings: Settings
    store: EventStore
    batcher: AppendBatcher
    worker_id: str
    rng: random.Random
    stopping: Callable[[], bool]
    ack: Callable[[Job], None]
