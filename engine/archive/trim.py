"""Trimming a partition log: never below what any reader still needs.

A log is trimmed (``XTRIM MINID floor``: every entry below ``floor`` goes, none at or above it)
only below the lowest of:

    the archive      the successor of the last entry archived (the manifest's position)
    each consumer    the successor of the last entry it has taken: every projection version's
                     checkpoint (given by the read side, see :data:`Consumers`)
    each group       its smallest pending (delivered, unacknowledged) entry, and the successor of
                     its last-delivered id: an entry not yet delivered is never trimmed
    the hot window   ``{Redis TIME - CLIPSTREAM_HOT_SECONDS}-0``: recent history stays in Redis

:func:`floor` is pure (property-tested); :func:`read_floor` gathers its inputs from Redis and the
consumers, :func:`trim_log` applies it. Without an archive nothing is trimmed (the archiver does not
call these). Redis 7.0 has no ``XTRIM … ACKED``, so the floor is computed here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from redis.exceptions import RedisError, ResponseError

from engine.archive.segments import format_id, id_key, successor
from engine.connection import RedisClient, as_str
from engine.errors import StoreUnavailable
from engine.log.keys import Keys

# The read side's positions in one partition's log: reader name -> the last entry id it has taken
# ("0-0": none yet). Given to the archiver by whoever composes the roles (api.cli), because the
# engine may not import the projections whose checkpoints these are.
Consumers = Callable[[int], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """A consumer group on the log: its last-delivered id and smallest pending id (None: none)."""

    last_delivered: str
    oldest_pending: str | None = None


@dataclass(frozen=True, slots=True)
class FloorInputs:
    """Everything the floor of one partition depends on."""

    archived: str  # last entry id archived ("0-0": none)
    hot_cut_ms: int  # Redis time minus the hot window
    consumers: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, GroupPosition] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Floor:
    """The lowest id the log must keep, and which input set it (for ``archive status``)."""

    floor: str
    held_by: str


def floor(inputs: FloorInputs) -> Floor:
    """The trim floor: the lowest of the bounds in the module docstring. Every entry below it has
    been archived, taken by every consumer, delivered to and acknowledged by every group, and is
    older than the hot window."""
    bounds: list[tuple[str, str]] = [
        (successor(inputs.archived), "archive"),
        (format_id(inputs.hot_cut_ms, 0), "hot window"),
    ]
    bounds += [(successor(pos), f"consumer {name}") for name, pos in inputs.consumers.items()]
    for name, group in inputs.groups.items():
        bounds.append((successor(group.last_delivered), f"group {name} (undelivered)"))
        if group.oldest_pending is not None:
            bounds.append((group.oldest_pending, f"group {name} (pending)"))
    low, held_by = min(bounds, key=lambda b: id_key(b[0]))
    return Floor(low, held_by)


async def group_positions(redis: RedisClient, log_key: str) -> dict[str, GroupPosition]:
    """Every consumer group on ``log_key`` with its last-delivered and oldest pending ids."""
    try:
        groups = await redis.xinfo_groups(log_key)
    except ResponseError:  # no such key yet
        return {}
    out: dict[str, GroupPosition] = {}
    for group in groups:
        name = as_str(group["name"])
        delivered = as_str(group.get("last-delivered-id") or b"0-0")
        pending = None
        if int(group.get("pending") or 0) > 0:
            summary = await redis.xpending(log_key, name)
            low = summary.get("min") if isinstance(summary, dict) else None
            pending = as_str(low) if low else None
        out[name] = GroupPosition(delivered, pending)
    return out


async def redis_time_ms(redis: RedisClient) -> int:
    """Redis's clock in ms: the hot window is measured on the clock that stamped the ids."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def read_floor(
    redis: RedisClient,
    keys: Keys,
    partition: int,
    archived: str,
    hot_ms: int,
    consumers: Consumers,
) -> Floor:
    """The floor of ``partition`` from what Redis and the consumers say now."""
    try:
        now = await redis_time_ms(redis)
        groups = await group_positions(redis, keys.log(partition))
        taken = await consumers(partition)
    except RedisError as exc:
        raise StoreUnavailable(f"reading the trim floor of partition {partition}: {exc}") from exc
    return floor(FloorInputs(archived, now - hot_ms, taken, groups))


async def trim_log(redis: RedisClient, keys: Keys, partition: int, low: Floor) -> int:
    """Trim ``partition``'s log below ``low.floor``, exactly (``~`` would keep up to a radix-tree
    node of 100 entries below it: a quiet partition's, forever); the number removed."""
    try:
        removed = await redis.xtrim(keys.log(partition), minid=low.floor, approximate=False)
    except RedisError as exc:
        raise StoreUnavailable(f"trimming partition {partition}: {exc}") from exc
    return int(removed)
