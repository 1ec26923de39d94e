"""What else Redis may forget, once the archive holds it or it can no longer matter.

    applied charges  a charge id guards against applying one money move twice; once its
                     execution has ended no append can reach it again (every append is checked
                     against the execution's seq), so the ids of an ended execution are dropped
                     from ``{pN}:charges`` as its log entries are archived. Ids archived while the
                     execution still ran wait in ``{pN}:charges:open`` until its end is archived.
                     Charge ids are read off every event that carries one (engine.log.events.
                     charge_ids: the money events of older logs, and the step events that carry
                     their reservation or settlement). Credits are never in the log and are kept.
    ledgers          entries through the manifest's ``ledger_through`` are in ledger segments:
                     trimmed (``GET /v1/me/ledger`` and the audit read the archive beyond)
    feeds            a realtime feed keeps the hot window; an older cursor gets ``reset``
    accounts         ``{pN}:accounts`` lists the partition's accounts (written with the account;
                     :func:`index_accounts` fills it once for a store created before it existed),
                     so the archiver knows which ledgers and feeds to keep to their window

Everything here is idempotent: a crash and a rerun forget nothing that must be kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.exceptions import RedisError

from engine.connection import RedisClient, as_str
from engine.errors import StoreUnavailable
from engine.log import codec
from engine.log.entries import RawEntry
from engine.log.events import (
    MONEY_EVENTS,
    TERMINAL_EVENTS,
    CostCharged,
    CostReleased,
    CostReserved,
    charge_ids,
)
from engine.log.keys import Keys, partition_of

_MONEY = frozenset(t.__name__ for t in MONEY_EVENTS)
_ALWAYS_MONEY = frozenset(t.__name__ for t in (CostReserved, CostCharged, CostReleased))
_CARRIED = (b'"reserve_id":"', b'"settlement":{')
_TERMINAL = frozenset(t.__name__ for t in TERMINAL_EVENTS)
INDEXED_FIELD = "accounts_indexed"


async def forget_charges(
    redis: RedisClient, keys: Keys, partition: int, rows: Sequence[tuple[str, dict[bytes, bytes]]]
) -> None:
    """Drop from the partition's applied charges the ids of executions whose end is in ``rows``
    (a segment being archived); remember the ids of the others until their end is archived."""
    charges: dict[str, set[str]] = {}
    ended: set[str] = set()
    for entry_id, fields in rows:
        raw = fields.get(codec.FIELD)
        if raw is None:
            continue
        kind = RawEntry(entry_id, raw).event_type
        if kind in _MONEY and (kind in _ALWAYS_MONEY or any(m in raw for m in _CARRIED)):
            # A money event, or a step's event that carries its reservation or settlement (the
            # bytes say which may: only those are decoded).
            event = RawEntry(entry_id, raw).decode().event
            if event is not None and (carried := charge_ids(event)):
                charges.setdefault(event.execution_id, set()).update(carried)
        elif kind in _TERMINAL:
            event = RawEntry(entry_id, raw).decode().event
            if event is not None:
                ended.add(event.execution_id)
    involved = sorted(set(charges) | ended)
    if not involved:
        return
    open_key, charges_key = keys.open_charges(partition), keys.charges(partition)
    try:
        earlier = await redis.hmget(open_key, involved)
        pipe = redis.pipeline(transaction=False)
        for xid, held in zip(involved, earlier, strict=True):
            ids = set(as_str(held).split()) if held else set()
            ids |= charges.get(xid, set())
            if xid in ended:
                if ids:
                    pipe.hdel(charges_key, *sorted(ids))
                if held:
                    pipe.hdel(open_key, xid)
            elif ids:
                pipe.hset(open_key, xid, " ".join(sorted(ids)))
        await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"forgetting charges of partition {partition}: {exc}") from exc


async def trim_ledgers(
    redis: RedisClient, keys: Keys, accounts: Iterable[str], through: int
) -> None:
    """Trim the ledgers of ``accounts`` below ``through`` + 1 ms (what a ledger segment holds)."""
    pipe = redis.pipeline(transaction=False)
    for account in accounts:
        pipe.xtrim(keys.ledger(account), minid=f"{through + 1}-0", approximate=False)
    try:
        await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"trimming ledgers: {exc}") from exc


async def trim_feeds(
    redis: RedisClient, keys: Keys, partition: int, cut_ms: int, ledger_through: int = 0
) -> None:
    """Trim the feeds of the partition's accounts to their window (entries from ``cut_ms`` on),
    and, when ``ledger_through`` is given, their ledgers below it (what a crash between a ledger
    segment and its trim left, or an account with no entry since)."""
    try:
        accounts = [as_str(a) for a in await redis.smembers(keys.accounts(partition))]
        pipe = redis.pipeline(transaction=False)
        for account in accounts:
            pipe.xtrim(keys.feed(partition, account), minid=f"{cut_ms}-0", approximate=False)
            if ledger_through:
                minid = f"{ledger_through + 1}-0"
                pipe.xtrim(keys.ledger(account), minid=minid, approximate=False)
        if accounts:
            await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"trimming feeds of partition {partition}: {exc}") from exc


async def index_accounts(redis: RedisClient, keys: Keys) -> int:
    """Fill the partitions' account sets from the account records, once per store (a store
    created before the sets existed); the number of accounts indexed by this call."""
    try:
        if await redis.hget(keys.meta, INDEXED_FIELD):
            return 0
        found = 0
        pattern = f"{keys.prefix}{{p*}}:acct:*"
        async for raw in redis.scan_iter(match=pattern, count=1000):
            account = as_str(raw).rsplit(":acct:", 1)[-1]
            await redis.sadd(keys.accounts(partition_of(account, keys.partitions)), account)
            found += 1
        await redis.hset(keys.meta, INDEXED_FIELD, "1")
    except RedisError as exc:
        raise StoreUnavailable(f"indexing accounts: {exc}") from exc
    return found
