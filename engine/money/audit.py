"""The ledger audit: an account recomputed from its ledger, entry by entry (``clipstream accounts
audit``). Ledger entries and kinds: engine.money.billing.

The ledger is read whole across the two tiers: its archived entries (engine.archive), then the
ones still in Redis. The applied-charges hash forgets the charge ids of ended executions once
their log entries are archived (engine.archive.retention), so an archived or out-of-hot-window
entry may be missing there; it must never hold another amount.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.exceptions import RedisError

from engine.archive import reader
from engine.archive.trim import redis_time_ms
from engine.connection import as_str
from engine.errors import NotFound, StoreUnavailable
from engine.log.ids import is_id
from engine.money.billing import CREDIT, RELEASE, RESERVE, SETTLE
from engine.money.read_fees import READ, READ_RELEASE, release_id
from engine.runtime import Runtime

# Kinds whose entries give to the balance; every other kind takes from it (fee, read, reserve,
# settle, and whatever kind a later change adds).
GIVING = frozenset({CREDIT, RELEASE, READ_RELEASE})
# Kinds whose charge ids the applied-charges hash must record (the fee is made idempotent by its
# execution stream instead, and read fees by their own scheme).
RECORDED = frozenset({CREDIT, RESERVE, SETTLE, RELEASE})
_PAGE = 1_000


@dataclass(slots=True)
class Audit:
    """An account recomputed from its ledger. ``ok`` when ``problems`` is empty."""

    account_id: str
    balance: int  # as stored
    entries: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # signed sum by kind
    credits: int = 0
    charges: int = 0  # what every taking entry took (positive)
    releases: int = 0
    held: dict[str, int] = field(default_factory=dict)  # open reservations: charge id -> amount
    uncovered: int = 0  # actual cost written off because the balance could not pay it
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def expected_balance(self) -> int:
        """credits - charges + releases."""
        return self.credits - self.charges + self.releases


async def _ledger(runtime: Runtime, account_id: str) -> list[dict[str, str]]:
    rows = await reader.ledger_rows(runtime.store, runtime.archive, account_id)
    return [fields for _, fields in rows]


async def _applied(runtime: Runtime, account_id: str, ids: list[str]) -> list[str | None]:
    keys = runtime.store.keys
    hash_key = keys.charges(keys.partition(account_id))
    out: list[str | None] = []
    for i in range(0, len(ids), _PAGE):
        values = await runtime.redis.hmget(hash_key, ids[i : i + _PAGE])
        out.extend(None if v is None else as_str(v) for v in values)
    return out


async def audit_account(runtime: Runtime, account_id: str) -> Audit:
    """Recompute ``account_id`` from its ledger and check it.

    Checks: balance == credits - charges + releases; each entry's ``balance`` is the running sum
    of the amounts before it and never negative; no charge id twice; amounts have their kind's
    sign; each release gives back exactly its reservation, each read release exactly the read fee
    taken before it; the applied-charges hash records every
    credit, reserve, settle and release with its amount. Open reservations (executions still
    running, or a dead worker's not yet taken over) are listed in ``held``: at a quiescent point,
    with every execution ended, there are none. NotFound for an unknown account.
    """
    if not is_id(account_id, "acc"):
        raise NotFound("no such account")
    keys = runtime.store.keys
    try:
        exists = await runtime.redis.exists(keys.account(account_id), keys.ledger(account_id))
        stored = int(await runtime.redis.get(keys.balance(account_id)) or 0)
        rows = await _ledger(runtime, account_id)
        applied = await _applied(runtime, account_id, [r.get("charge_id", "") for r in rows])
        # Charge ids of entries before this may have been forgotten (see the module docstring).
        forgettable_before = (
            await redis_time_ms(runtime.redis) - runtime.settings.hot_ms if runtime.archive else 0
        )
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read the ledger: {exc}") from exc
    if not exists:
        raise NotFound("no such account")
    result = Audit(account_id=account_id, balance=stored, entries=len(rows))
    reserved: dict[str, int] = {}
    released: dict[str, int] = {}
    reads: dict[str, int] = {}  # read fees taken, by the charge id of their give-back
    seen: set[str] = set()
    running = 0
    for row, recorded in zip(rows, applied, strict=True):
        forgotten = recorded is None and int(row.get("at", "0")) < forgettable_before
        _check_entry(result, row, None if forgotten else recorded, running, seen, forgotten)
        amount = int(row.get("amount", "0"))
        running += amount
        kind, cid = row.get("kind", ""), row.get("charge_id", "")
        result.totals[kind] = result.totals.get(kind, 0) + amount
        result.uncovered += int(row.get("uncovered", "0"))
        if kind == CREDIT:
            result.credits += amount
        elif kind == RELEASE:
            result.releases += amount
            released[cid] = amount
        elif kind == READ_RELEASE:
            result.releases += amount
            if reads.pop(cid, None) != amount:
                result.problems.append(f"{cid} gives back {amount}, not a read fee taken before")
        else:
            result.charges -= amount
            if kind == RESERVE:
                reserved[cid] = -amount
            elif kind == READ:
                reads[release_id(cid)] = -amount
    _check_releases(result, reserved, released)
    if stored != result.expected_balance:
        result.problems.append(
            f"balance is {stored} but credits - charges + releases = {result.expected_balance}"
        )
    return result


def _check_entry(
    result: Audit,
    row: dict[str, str],
    recorded: str | None,
    running: int,
    seen: set[str],
    forgotten: bool = False,
) -> None:
    """The checks of one ledger entry, given the running balance before it."""
    cid, kind = row.get("charge_id", ""), row.get("kind", "")
    amount = int(row.get("amount", "0"))
    if cid in seen:
        result.problems.append(f"charge id {cid} appears twice in the ledger")
    seen.add(cid)
    if (amount < 0 and kind in GIVING) or (amount > 0 and kind not in GIVING):
        result.problems.append(f"{cid}: a {kind} entry of {amount} has the wrong sign")
    after = running + amount
    if int(row.get("balance", "0")) != after:
        result.problems.append(
            f"{cid}: the entry says balance {row.get('balance')}, the entries up to it add up "
            f"to {after}"
        )
    if after < 0:
        result.problems.append(f"{cid}: the balance went negative ({after})")
    if kind in RECORDED and recorded != str(amount) and not (forgotten and kind != CREDIT):
        result.problems.append(
            f"{cid}: the applied-charges hash holds {recorded!r}, the ledger {amount}"
        )


def _check_releases(result: Audit, reserved: dict[str, int], released: dict[str, int]) -> None:
    """Each release gives back exactly its reservation; the unreleased ones are held."""
    for cid, amount in released.items():
        reservation_id = RESERVE + cid.removeprefix(RELEASE)
        if reservation_id not in reserved:
            result.problems.append(f"{cid} releases {reservation_id}, which is not in the ledger")
        elif reserved[reservation_id] != amount:
            result.problems.append(
                f"{cid} gives back {amount}, its reservation held {reserved[reservation_id]}"
            )
    result.held = {
        cid: amount
        for cid, amount in reserved.items()
        if RELEASE + cid.removeprefix(RESERVE) not in released
    }
