"""Read fees: every read of the account API pays ``fees.read``, reserved when it is admitted.

A read goes through two steps, each one script on the owner's slot (balance, ledger and the
partition's pending zset ``keys.read_charges`` share it):

1. **admit**, before the handler runs: when the balance covers the fee, the fee is taken, a
   ``read`` entry is written to the ledger and the charge is recorded as pending (member
   ``{charge_id}|{account}|{fee}``, scored by the time) — all in one call, so any number of
   concurrent reads never take more than the balance holds. When it does not cover it, the read is
   refused (402), unless it is one the owner may always make (``lenient``: ``/v1/me/ledger``, the
   owner's own execution and its events, DESIGN §6): that one is served free, nothing recorded.
2. **settle**, once the answer has gone out: remove the pending member and, only when that removal
   happened, keep the fee (a served read: nothing more to write) or give it back (a read that
   answered an error: the fee returns to the balance with a ``read_release`` ledger entry). The
   removal is the guard: settling one charge twice (a retry, two sweepers, a retry racing a
   sweeper) gives back at most once.

The ledger is exact at every instant: the balance always equals what its entries add up to, pending
reads included (they are ``read`` entries already).

Never lost: a settlement that fails (Redis unreachable) never fails the read, which has already
been answered. It waits in a bounded in-memory queue and is retried with the same charge. What the
queue cannot hold, or what a crashed API process held, the **sweep** finds: any API process
periodically settles, as served, the pending charges admitted more than :data:`GRACE_MS` ago. The
price is that a read cut short by a crash keeps its fee as if it had been served (the two cannot be
told apart afterwards).

Never negative: a read is admitted only when the balance covers its whole fee.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

import anyio
from redis.exceptions import RedisError

from engine import clock, meters
from engine.connection import as_str
from engine.errors import InsufficientBalance, StoreUnavailable
from engine.runtime import Runtime
from engine.settings import coins_text

log = logging.getLogger("clipstream.read_fees")

GRACE_MS = 300_000  # a pending charge older than this has lost its API process
RETRY_CAPACITY = 10_000  # failed settlements kept in memory; the sweep settles the rest
RETRY_INTERVAL_S = 1.0
SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 500

READ = "read"  # ledger kind of a read's fee (negative)
READ_RELEASE = "read_release"  # ledger kind of a fee given back (positive)

# Admit a read: take the fee when the balance covers it (ledger entry and pending record in the
# same call); else refuse it, or serve it free when it is lenient.
# KEYS[1] balance  KEYS[2] ledger  KEYS[3] pending read charges
# ARGV[1] member  ARGV[2] now ms  ARGV[3] fee (micro, > 0)  ARGV[4] charge id  ARGV[5] '1' lenient
# -> 1 admitted and charged | 2 admitted free | 0 refused
_ADMIT = """
local fee = tonumber(ARGV[3])
if tonumber(redis.call('GET', KEYS[1]) or '0') < fee then
  if ARGV[5] == '1' then return 2 end
  return 0
end
local balance = redis.call('DECRBY', KEYS[1], fee)
redis.call('XADD', KEYS[2], '*', 'charge_id', ARGV[4], 'kind', 'read',
  'amount', string.format('%d', -fee), 'balance', string.format('%d', balance), 'at', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

# Settle a pending read charge once: keep its fee, or give it back.
# KEYS[1] pending read charges  KEYS[2] balance  KEYS[3] ledger
# ARGV[1] member  ARGV[2] fee (micro)  ARGV[3] '1' keep / '0' give back  ARGV[4] release charge id
# ARGV[5] now ms
# -> micro-coins given back (0: kept, or already settled)
_SETTLE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[3] == '1' then return 0 end
local balance = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'charge_id', ARGV[4], 'kind', 'read_release',
  'amount', ARGV[2], 'balance', string.format('%d', balance), 'at', ARGV[5])
return tonumber(ARGV[2])
"""


def release_id(charge_id: str) -> str:
    """The charge id of the ledger entry that gives a read's fee back: ``read:X`` ->
    ``read_release:X``."""
    return f"{READ_RELEASE}:{charge_id.removeprefix(READ + ':')}"


class Admission(IntEnum):
    """What :meth:`ReadFees.admit`'s script answered."""

    REFUSED = 0
    CHARGED = 1
    FREE = 2


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

    async def admit(
        self, account_id: str, charge_id: str, *, lenient: bool = False
    ) -> ReadCharge | None:
        """Let ``account_id`` read: its fee is taken now and pending until :meth:`settle`. None
        when nothing was taken (reads are free, or a ``lenient`` read the balance cannot cover).

        InsufficientBalance when the balance does not cover the fee (and the read is not
        lenient); StoreUnavailable when Redis fails (the read is not admitted, nothing taken).
        """
        if self.fee <= 0:
            return None
        charge = ReadCharge(charge_id, account_id, self.fee)
        keys = self.runtime.store.keys
        try:
            answer = await self._admit(
                keys=[
                    keys.balance(account_id),
                    keys.ledger(account_id),
                    keys.read_charges(keys.partition(account_id)),
                ],
                args=[charge.member, clock.now_ms(), self.fee, charge_id, "1" if lenient else "0"],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"Redis failed admitting a read: {exc}") from exc
        admission = Admission(int(answer))
        if admission is Admission.REFUSED:
            raise InsufficientBalance(
                f"the balance does not cover a read ({coins_text(self.fee)} coins): top up "
                "to read (GET /v1/me answers at any balance)"
            )
        if admission is not Admission.CHARGED:
            return None
        meters.COINS_CHARGED.labels("read").inc(meters.coins(self.fee))
        return charge

    async def settle_now(self, charge: ReadCharge, *, served: bool) -> int:
        """Settle ``charge``: keep its fee when ``served``, else give it back; the micro-coins
        given back (0 when kept, or when it was already settled).

        StoreUnavailable when Redis fails: nothing happened, and the same call may be repeated.
        """
        keys = self.runtime.store.keys
        try:
            given = await self._settle(
                keys=[
                    keys.read_charges(keys.partition(charge.account_id)),
                    keys.balance(charge.account_id),
                    keys.ledger(charge.account_id),
                ],
                args=[
                    charge.member,
                    charge.fee,
                    "1" if served else "0",
                    release_id(charge.charge_id),
                    clock.now_ms(),
                ],
            )
        except RedisError as exc:
            raise StoreUnavailable(f"Redis failed settling {charge.charge_id}: {exc}") from exc
        if int(given):
            meters.COINS_REFUNDED.labels("read").inc(meters.coins(int(given)))
        return int(given)

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
