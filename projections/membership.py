"""The live projectors, and each one's share of the partitions.

Every running projector announces itself in one sorted set, ``{prefix}projectors`` (member: the
projector id, score: when its announcement runs out, in ms), renewed with its leases. From the
members alive now, :func:`share` gives each projector the same slice of the partitions (P/N, the
first ``P % N`` members one more), so N processes split the work evenly and move to a new split
when one joins, leaves or dies:

    joins   every member's share shrinks; each gives back the leases outside its share, the
            newcomer takes them
    leaves  it removes itself (a clean stop) and gives its leases back; the others widen at once
    dies    its announcement runs out after one lease time, as do its leases; the others widen

The leases still say who folds a partition, and the checkpoint's compare-and-set is still what
stops a double apply: a share is only advice on which leases to ask for, and two projectors that
briefly disagree on the members (one has not seen a join yet) at worst wait for each other's
leases.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.connection import RedisClient, as_str
from engine.log.keys import Keys


def members_key(keys: Keys) -> str:
    """The sorted set of live projectors (one key for the deployment, whatever the version)."""
    return f"{keys.prefix}projectors"


def share(partitions: Sequence[int], members: Sequence[str], me: str) -> list[int]:
    """``me``'s slice of ``partitions`` among ``members`` (``me`` counted in whether listed or not):
    every ``N``-th partition from ``me``'s rank in the sorted members, so the slices of all
    members cover every partition once and differ in size by one at most."""
    ranked = sorted({*members, me})
    rank, n = ranked.index(me), len(ranked)
    return [p for i, p in enumerate(sorted(partitions)) if i % n == rank]


async def announce(redis: RedisClient, keys: Keys, me: str, now_ms: int, ttl_ms: int) -> list[str]:
    """Announce ``me`` alive until ``now_ms + ttl_ms``, forget members whose announcement ran out,
    and return the members alive (``me`` included), in one round trip."""
    key = members_key(keys)
    pipe = redis.pipeline(transaction=False)
    pipe.zadd(key, {me: now_ms + ttl_ms})
    pipe.zremrangebyscore(key, "-inf", now_ms)
    pipe.zrange(key, 0, -1)
    *_, raw = await pipe.execute()
    return [as_str(m) for m in raw]


async def withdraw(redis: RedisClient, keys: Keys, me: str) -> None:
    """Leave the members (a clean stop): the others widen their share at their next check."""
    await redis.zrem(members_key(keys), me)
