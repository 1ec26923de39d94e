"""What the API process's own event loop and garbage collector cost the realtime feed.

:class:`Samples` keeps the latest durations of something (a bounded ring, so memory is fixed);
:class:`LoopProbe` measures the event loop's lag (how late a timer fires: the time every ready
callback waited) and the garbage collector's pauses (``gc.callbacks``). The feed hub records, for
each event message, the time from its feed entry (the entry id's milliseconds: Redis's clock when
the projector added it) to the moment the server's write returned (``FeedHub.deliveries``): the
server's side of a delivery, without the client's.
"""

from __future__ import annotations

import gc
import time
from array import array
from typing import Any

import anyio


class Samples:
    """The latest ``capacity`` values (ms) and how many were ever added."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._values = array("d")
        self._capacity = capacity
        self._next = 0
        self.count = 0
        self.max_ms = 0.0

    def add(self, value_ms: float) -> None:
        if len(self._values) < self._capacity:
            self._values.append(value_ms)
        else:
            self._values[self._next] = value_ms
            self._next = (self._next + 1) % self._capacity
        self.count += 1
        self.max_ms = max(self.max_ms, value_ms)

    def values(self) -> list[float]:
        """The kept values, oldest first."""
        return list(self._values[self._next :]) + list(self._values[: self._next])

    def clear(self) -> None:
        self._values = array("d")
        self._next = 0
        self.count = 0
        self.max_ms = 0.0

    def summary(self) -> dict[str, float]:
        """count, p50, p99 and max of the kept values (ms)."""
        ordered = sorted(self._values)
        if not ordered:
            return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "count": float(self.count),
            "p50": ordered[len(ordered) // 2],
            "p99": ordered[max(0, int(len(ordered) * 0.99) - 1)],
            "max": ordered[-1],
        }


class LoopProbe:
    """Event-loop lag (a timer every ``interval_s``: how late it fired) and GC pauses."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.lag = Samples(20_000)
        self.gc_pauses = Samples(20_000)
        self.gc_full_pauses = Samples(20_000)  # of them, the full (oldest-generation) ones
        self._gc_started = 0.0

    async def run(self) -> None:
        """Measure until cancelled (the GC callback is removed then)."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                due = time.perf_counter() + self.interval_s
                await anyio.sleep(self.interval_s)
                self.lag.add(max(0.0, time.perf_counter() - due) * 1000)
        finally:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            pause_ms = (time.perf_counter() - self._gc_started) * 1000
            self.gc_pauses.add(pause_ms)
            if info.get("generation") == 2:
                self.gc_full_pauses.add(pause_ms)
            self._gc_started = 0.0
