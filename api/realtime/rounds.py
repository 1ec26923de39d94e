"""A round over many members, one slice at a time: the realtime hub's pings to idle subscribers
and the WebSocket keepalive visit every connection once a period. Visiting 10,000 connections in
one callback holds the event loop for a few hundred milliseconds, and every event waiting behind
it; a round visits one slice per tick, ``period / slices`` apart, each member once a period."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

SLICES = 50  # a round's slices: one tick visits 1/50 of the members


class Round(Generic[T]):
    """Members spread over slices as they join (round-robin); :meth:`next_slice` gives the
    members of one slice after another."""

    __slots__ = ("_slices", "_tick", "joined")

    def __init__(self, slices: int = SLICES) -> None:
        self._slices: list[set[T]] = [set() for _ in range(slices)]
        self._tick = 0  # the slice the next tick visits
        self.joined = 0  # members that ever joined

    @property
    def slices(self) -> int:
        return len(self._slices)

    def join(self, member: T) -> int:
        """Add ``member``; the slice it is in (to :meth:`leave` it)."""
        index = self.joined % len(self._slices)
        self.joined += 1
        self._slices[index].add(member)
        return index

    def leave(self, member: T, index: int) -> None:
        self._slices[index].discard(member)

    def next_slice(self) -> list[T]:
        """The members of the next slice (a copy: a visit may make a member leave)."""
        members = list(self._slices[self._tick])
        self._tick = (self._tick + 1) % len(self._slices)
        return members

    def __bool__(self) -> bool:
        return any(self._slices)
