"""Read fees: every read of the account API pays ``fees.read``, charged after its answer is sent.

A read goes through two steps, each one script on the owner's slot (balance, ledger and the
partition's pending zset ``keys.read_charges`` share it):

1. **admit**, before the handler runs: a balance that is not positive refuses the read (402);
   otherwise the charge is recorded as pending (member ``{charge_id}|{account}|{fee}``, scored by
   the time) in the same call.
2. **settle**, once the answer has gone out: remove the pending member and, only when that removal
   happened, take ``min(fee, balance)`` and append a ``read`` entry to the ledger. A served read is
   charged; a read that answered an error is released (nothing taken). The removal is the guard:
   settling one charge twice (a retry, two sweepers, a retry racing a sweeper) takes it once.

Never lost: a settlement that fails (Redis unreachable) never fails the read, which has already
been answered. It waits in a bounded in-memory queue and is retried with the same charge. What the
queue cannot hold, or what a crashed API process held, the **sweep** finds: any API process
periodically settles, as served, the pending charges admitted more than :data:`GRACE_MS` ago. The
record was written before the handler ran, so an admitted read is charged at most once and at
least once; the price is that a read cut short by a crash is charged as if it had been served
(the two cannot be told apart afterwards).

Never negative: the charge is capped at the balance. A read admitted with less than the fee left
takes what is left; one settled at a zero balance takes nothing and writes no ledger entry.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import anyio
from redis.exceptions import RedisError

from engine import clock
from engine.connection import as_str
from engine.errors import InsufficientBalance, StoreUnavailable
from engine.runtime import Runtime

log = logging.getLogger("clipstream.read_fees")

GRACE_MS = 300_000  # a pending charge older than this has lost its API process
RETRY_CAPACITY = 10_000  # failed settlements kept in memory; the sweep settles the rest
RETRY_INTERVAL_S = 1.0
SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 500

# Admit a read: refuse a balance that is not positive, else record the pending charge.
# KEYS[1] balance  KEYS[2] pending read charges
# ARGV[1] member  ARGV[2] now ms  ARGV[3] fee (micro; 0: reads are free, nothing to record)
# -> 1 admitted | 0 refused
_ADMIT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return 1
"""

# Settle a pending read charge once: charge it (capped at the balance) or release it.
# KEYS[1] pending read charges  KEYS[2] balance  KEYS[3] ledger
# ARGV[1] member  ARGV[2] fee (micro)  ARGV[3] '1' charge / '0' release  ARGV[4] charge id
# ARGV[5] now ms
# -> micro-coins taken (0: released, already settled, or nothing left to take)
_SETTLE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '1' then return 0 end
local amount = math.min(tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[2]) or '0'))
if amount <= 0 then return 0 end
local balance = redis.call('DECRBY', KEYS[2], amount)
redis.call('XADD', KEYS[3], '*', 'charge_id', ARGV[4], 'kind', 'read',
  'amount', string.format('%d', -amount), 'balance', string.format('%d', balance), 'at', ARGV[5])
return amount
"""


@dataclass(frozen=True, slots=True)
class ReadCharge:
    """One admitted read's fee, pending until it is settled."""

    charge_id: str
    account_id: str
    fee: int

    @property
    def member(self) -> str:
        """The pending zset member: everything settling needs, so a sweeper needs nothing else."""
        return f"{self.charge_id}|{self.account_id}|{self.fee}"

    @classmethod
    def parse(cls, member: str) -> ReadCharge:
        charge_id, account_id, fee = member.rsplit("|", 2)
        return cls(charge_id, account_id, int(fee))


class ReadFees:
    """Admits reads, settles their charges and keeps failed settlements until they succeed.

    One per API process; :meth:`run` (the app's lifespan) retries the queue and sweeps.
    """

    def __init__(self, runtime: Runtime, *, capacity: int = RETRY_CAPACITY) -> None:
        self.runtime = runtime
        self.fee = runtime.settings.fees.read
        self._admit = runtime.redis.register_script(_ADMIT)
        self._settle = runtime.redis.register_script(_SETTLE)
        # Oldest dropped first when full: its pending record stays in Redis for the sweep.
        self._retry: deque[tuple[ReadCharge, bool]] = deque(maxlen=capacity)

    @property
    def queued(self) -> int:
        """Settlements waiting for a retry."""
        return len(self._retry)

    async def admit(self, account_id: str, charge_id: str) -> ReadCharge | None:
        """Let ``account_id`` read, recording the charge as pending; None when reads are free.

        InsufficientBalance when the balance is not positive; StoreUnavailable when Redis fails
        (the read cannot be admitted, and is not charged).
        """
        charge = ReadCharge(charge_id, account_id, self.fee)
        keys = self.runtime.store.keys
        try:
            admitted = await self._admit(
                keys=[keys.balance(account_id), keys.read_charges(keys.partition(account_id))],
                args=[charge.member, clock.now_ms(), self.fee],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"Redis failed admitting a read: {exc}") from exc
        if not int(admitted):
            raise InsufficientBalance("the balance is not positive: top up to read (GET /v1/me)")
        return charge if self.fee > 0 else None

    async def settle_now(self, charge: ReadCharge, *, served: bool) -> int:
        """Settle ``charge`` (charge it when ``served``, else release it); the micro-coins taken.

        StoreUnavailable when Redis fails: nothing happened, and the same call may be repeated.
        """
        keys = self.runtime.store.keys
        try:
            taken = await self._settle(
                keys=[
                    keys.read_charges(keys.partition(charge.account_id)),
                    keys.balance(charge.account_id),
                    keys.ledger(charge.account_id),
                ],
                args=[
                    charge.member,
                    charge.fee,
                    "1" if served else "0",
                    charge.charge_id,
                    clock.now_ms(),
                ],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"Redis failed settling {charge.charge_id}: {exc}") from exc
        return int(taken)

    async def settle(self, charge: ReadCharge, *, served: bool) -> None:
        """Settle ``charge``, or queue it for a retry when Redis fails. Never raises."""
        try:
            await self.settle_now(charge, served=served)
        except StoreUnavailable as exc:
            log.warning("read charge %s queued for a retry: %s", charge.charge_id, exc)
            self._retry.append((charge, served))

    async def retry(self) -> int:
        """Settle the queued settlements in order, stopping at the first that Redis still fails
        (the rest would fail the same way: one warning a tick, not one per charge); returns how
        many are still queued."""
        while self._retry:
            charge, served = self._retry[0]
            try:
                await self.settle_now(charge, served=served)
            except StoreUnavailable as exc:
                log.warning("%d read charges wait for Redis: %s", len(self._retry), exc)
                break
            self._retry.popleft()
        return len(self._retry)

    async def sweep(self, *, now_ms: int | None = None, grace_ms: int = GRACE_MS) -> int:
        """Settle as served every charge admitted before ``now_ms - grace_ms``, in every partition;
        returns how many it found (a concurrent sweep may have settled some of them first).
        StoreUnavailable when Redis fails."""
        cutoff = (clock.now_ms() if now_ms is None else now_ms) - grace_ms
        keys = self.runtime.store.keys
        settled = 0
        for partition in self.runtime.store.partitions:
            while True:
                try:
                    members = await self.runtime.redis.zrangebyscore(
                        keys.read_charges(partition), "-inf", cutoff, start=0, num=SWEEP_BATCH
                    )
                except RedisError as exc:
                    raise StoreUnavailable(f"Redis failed sweeping read charges: {exc}") from exc
                for member in members:
                    await self._settle_pending(keys.read_charges(partition), member)
                settled += len(members)
                if len(members) < SWEEP_BATCH:
                    break
        return settled

    async def _settle_pending(self, key: str, member: bytes | str) -> None:
        """Settle one pending record as served; one that cannot be parsed (written by hand, or by
        another version) is logged and dropped, so it cannot block the charges behind it."""
        text = as_str(member)
        try:
            charge = ReadCharge.parse(text)
        except ValueError:
            log.error("dropping a pending read charge that cannot be parsed: %r", text)
            await self.runtime.redis.zrem(key, member)
            return
        await self.settle_now(charge, served=True)

    async def run(self) -> None:
        """Forever: retry the queue every second and sweep every minute (the API's lifespan)."""
        last_sweep = -SWEEP_INTERVAL_S  # the first pass sweeps: what a crashed process left
        while True:
            await anyio.sleep(RETRY_INTERVAL_S)
            try:
                await self.retry()
                if time.monotonic() - last_sweep >= SWEEP_INTERVAL_S:
                    last_sweep = time.monotonic()
                    await self.sweep()
            except StoreUnavailable as exc:
                log.warning("settling read charges failed; the next pass retries: %s", exc)
            except Exception:  # the loop outlives any one bad record: the API depends on it
                log.exception("settling read charges failed")
