"""Accounts, their balances and their API keys.

An account lives in its partition (``crc32(account_id) % P``): the record (``keys.account``), the
balance in micro-coins (``keys.balance``), the ledger stream (``keys.ledger``) and the partition's
applied-charges hash (``keys.charges``) share one slot, so creating an account and crediting it are
single atomic scripts.

API keys are ``ck_live_`` + 43 url-safe random characters (256 bits). Only their sha256 is stored:
``keys.api_key(hash)`` holds ``{account_id}|{hash}``, found in O(1) by hashing the presented key
and checked with ``hmac.compare_digest``. The account's index of key hashes
(``keys.resource_index(account, "apikey")``) lives in the account's slot; the two writes are
separate calls (different slots), ordered so a crash between them never leaves an unrevocable key.

No HTTP here: the API and the CLI both call these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

import msgspec
from redis.exceptions import RedisError

from engine.archive import reader
from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import IdempotencyMismatch, InvalidRequest, NotFound, StoreUnavailable
from engine.log.ids import is_id, new_id
from engine.runtime import Runtime

API_KEY_PREFIX = "ck_live_"
_API_KEY = re.compile(r"^ck_live_[A-Za-z0-9_-]{32,128}$")
_KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
_CREDIT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_NAME = 200
# The most an amount or a balance may be: a billion coins. Below it every micro-coin value has at
# most 15 significant digits, so the JSON number of coins clients see (a double) is exact both ways,
# and the Lua scripts' numbers (doubles too) compare balances exactly.
MAX_MICRO = 10**15
_ENTRY_ID = re.compile(r"^[0-9]{1,15}-[0-9]{1,18}$")  # what XRANGE can take (< 2**64 each)

# Create the record, set the opening balance and record it as the first credit, and list the
# account in its partition (whose ledgers and feeds the archiver keeps), all or nothing.
# KEYS[1] account hash  KEYS[2] balance  KEYS[3] ledger  KEYS[4] applied charges
# KEYS[5] the partition's accounts
# ARGV[1] account id  ARGV[2] name  ARGV[3] created at ms  ARGV[4] coins (micro)  ARGV[5] charge id
# -> 1, or 0 when the account already exists
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'account_id', ARGV[1], 'name', ARGV[2], 'created_at', ARGV[3])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4])
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[4])
  redis.call('XADD', KEYS[3], '*', 'charge_id', ARGV[5], 'kind', 'credit', 'amount', ARGV[4],
    'balance', ARGV[4], 'at', ARGV[3])
end
return 1
"""

# Credit an account once per charge id, keeping the balance at most ARGV[4].
# KEYS: as _CREATE  ARGV[1] charge id  ARGV[2] amount (micro)  ARGV[3] now ms  ARGV[4] max balance
# -> {'ok', balance} | {'duplicate', balance} | {'mismatch', first amount} | {'missing', ''}
#    | {'too_much', balance}
_CREDIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local prev = redis.call('HGET', KEYS[4], ARGV[1])
if prev then
  if prev ~= ARGV[2] then return {'mismatch', prev} end
  return {'duplicate', redis.call('GET', KEYS[2]) or '0'}
end
local before = redis.call('GET', KEYS[2]) or '0'
if tonumber(before) + tonumber(ARGV[2]) > tonumber(ARGV[4]) then return {'too_much', before} end
redis.call('INCRBY', KEYS[2], ARGV[2])
-- The balance as Redis stores it: Lua's tostring of a large number would print 1e+14.
local balance = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'charge_id', ARGV[1], 'kind', 'credit', 'amount', ARGV[2],
  'balance', balance, 'at', ARGV[3])
return {'ok', balance}
"""


class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One movement of an account's coins: ``amount`` is signed micro-coins (a credit is positive,
    a charge negative), ``balance`` the balance right after it. ``kind`` is whatever the writer
    named it (credit, fee, read, …): readers show kinds they do not know as they are.
    ``entry_id`` is its ledger stream id, the listing's cursor."""

    entry_id: str
    charge_id: str
    kind: str
    amount: int
    balance: int
    execution_id: str | None
    at: int


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """An account as the API shows it; ``balance`` is in micro-coins."""

    account_id: str
    name: str
    balance: int
    created_at: int


def key_hash(api_key: str) -> str:
    """The sha256 (hex) under which an API key is stored."""
    return hashlib.sha256(api_key.encode()).hexdigest()


async def _script(runtime: Runtime, source: str, keys: list[str], args: list[Any]) -> Any:
    try:
        return await runtime.redis.register_script(source)(keys=keys, args=args)
    except RedisError as exc:
        raise StoreUnavailable(f"Redis script failed: {exc}") from exc


def _money_keys(runtime: Runtime, account_id: str) -> list[str]:
    keys = runtime.store.keys
    return [
        keys.account(account_id),
        keys.balance(account_id),
        keys.ledger(account_id),
        keys.charges(keys.partition(account_id)),
        keys.accounts(keys.partition(account_id)),
    ]


# -- accounts ------------------------------------------------------------------------------------


async def create_account(runtime: Runtime, *, name: str, coins_micro: int) -> tuple[Account, str]:
    """Create an account holding ``coins_micro`` and its first API key; returns both.

    InvalidRequest for an empty or over-long name or a negative or absurd amount.
    """
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidRequest(f"name: must be 1 to {MAX_NAME} characters")
    if not 0 <= coins_micro <= MAX_MICRO:
        raise InvalidRequest("coins: must be between 0 and 1e9")
    account_id = new_id("acc")
    now = now_ms()
    created = await _script(
        runtime,
        _CREATE,
        _money_keys(runtime, account_id),
        [account_id, name, now, coins_micro, f"credit:{account_id}:opening"],
    )
    if int(created) != 1:  # a fresh id colliding is astronomically unlikely; never overwrite
        raise InvalidRequest("account id collision; try again")
    api_key = await issue_api_key(runtime, account_id)
    return Account(account_id=account_id, name=name, balance=coins_micro, created_at=now), api_key


async def get_account(runtime: Runtime, account_id: str) -> Account:
    """The account with its current balance; NotFound when there is none."""
    if not is_id(account_id, "acc"):
        raise NotFound("no such account")
    keys = runtime.store.keys
    pipe = runtime.redis.pipeline(transaction=False)
    pipe.hgetall(keys.account(account_id))
    pipe.get(keys.balance(account_id))
    record, balance = await pipe.execute()
    if not record:
        raise NotFound("no such account")
    fields = {as_str(k): as_str(v) for k, v in record.items()}
    return Account(
        account_id=account_id,
        name=fields.get("name", ""),
        balance=int(balance or 0),
        created_at=int(fields.get("created_at", "0")),
    )


async def balance(runtime: Runtime, account_id: str) -> int:
    """The account's balance in micro-coins (0 for an account with no balance key)."""
    return int(await runtime.redis.get(runtime.store.keys.balance(account_id)) or 0)


async def credit(runtime: Runtime, account_id: str, coins_micro: int, *, credit_id: str) -> int:
    """Add ``coins_micro`` once per ``credit_id``; returns the balance after it.

    A retry with the same id and amount changes nothing and returns the current balance; the same
    id with another amount is IdempotencyMismatch. NotFound for an unknown account;
    InvalidRequest when the balance would pass :data:`MAX_MICRO`.
    """
    if not is_id(account_id, "acc"):
        raise NotFound("no such account")
    if not 0 < coins_micro <= MAX_MICRO:
        raise InvalidRequest("coins: must be more than 0 and at most 1e9")
    if not _CREDIT_ID.match(credit_id):
        raise InvalidRequest("credit_id: 1 to 100 characters of letters, digits and _ . : -")
    status, value = await _script(
        runtime,
        _CREDIT,
        _money_keys(runtime, account_id),
        [f"credit:{account_id}:{credit_id}", coins_micro, now_ms(), MAX_MICRO],
    )
    status = as_str(status)
    if status == "missing":
        raise NotFound("no such account")
    if status == "mismatch":
        raise IdempotencyMismatch("this credit_id was already used with another amount")
    if status == "too_much":
        raise InvalidRequest("coins: a balance is at most 1e9 coins")
    return int(as_str(value))


def _ledger_entry(entry_id: str, values: dict[str, str]) -> LedgerEntry:
    return LedgerEntry(
        entry_id=entry_id,
        charge_id=values.get("charge_id", ""),
        kind=values.get("kind", ""),
        amount=int(values.get("amount", "0")),
        balance=int(values.get("balance", "0")),
        execution_id=values.get("execution_id") or None,
        at=int(values.get("at", "0")),
    )


async def ledger(
    runtime: Runtime, account_id: str, *, limit: int, cursor: str | None
) -> tuple[list[LedgerEntry], str | None]:
    """A page of the account's ledger, newest first, and the cursor of the next page (None: last).

    The cursor is the last entry's stream id: entries written meanwhile go on top and never shift
    a page. Past the entries Redis keeps (the hot window), the pages go on into the archive
    (engine.archive.reader). InvalidRequest for a cursor this listing did not return.
    """
    if cursor is not None and not _ENTRY_ID.match(cursor):
        raise InvalidRequest("cursor: not a cursor this list returned")
    found = await reader.ledger_page(runtime.store, runtime.archive, account_id, limit, cursor)
    return [_ledger_entry(entry_id, fields) for entry_id, fields in found.rows], found.next_cursor


# -- API keys ------------------------------------------------------------------------------------


async def issue_api_key(runtime: Runtime, account_id: str) -> str:
    """A new API key for the account. The key itself is returned once and never stored."""
    if not is_id(account_id, "acc") or not await runtime.redis.exists(
        runtime.store.keys.account(account_id)
    ):
        raise NotFound("no such account")
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    digest = key_hash(api_key)
    keys = runtime.store.keys
    # Index first: a crash before the key is stored leaves a dangling hash, never a live key
    # that the account's index cannot revoke.
    await runtime.redis.zadd(keys.resource_index(account_id, "apikey"), {digest: now_ms()})
    await runtime.redis.set(keys.api_key(digest), f"{account_id}|{digest}")
    return api_key


async def account_for_api_key(runtime: Runtime, api_key: str) -> str | None:
    """The account id an API key belongs to, or None for a malformed, unknown or revoked key."""
    record = api_key_record(runtime, api_key)
    if record is None:
        return None
    digest, name = record
    return account_of_record(await runtime.redis.get(name), digest)


def api_key_record(runtime: Runtime, api_key: str) -> tuple[str, str] | None:
    """The hash of a well-formed API key and the name of its record (what
    :func:`account_for_api_key` reads, for a caller that reads it in a pipeline of its own);
    None for a malformed key."""
    if not _API_KEY.match(api_key):
        return None
    digest = key_hash(api_key)
    return digest, runtime.store.keys.api_key(digest)


def account_of_record(stored: bytes | str | None, digest: str) -> str | None:
    """The account id in an API key's record as read (None: no such key, or a record that is not
    the key's)."""
    if stored is None:
        return None
    account_id, _, stored_hash = as_str(stored).partition("|")
    # The lookup already matched on the hash; the constant-time comparison guards against a
    # record that is not what its key name claims (e.g. written by hand).
    if not hmac.compare_digest(stored_hash.encode(), digest.encode()):
        return None
    return account_id


async def api_key_hashes(runtime: Runtime, account_id: str) -> list[str]:
    """The hashes of the account's live API keys, oldest first."""
    keys = runtime.store.keys
    rows = await runtime.redis.zrange(keys.resource_index(account_id, "apikey"), 0, -1)
    return [as_str(h) for h in rows]


async def revoke_api_key(runtime: Runtime, key_or_hash: str) -> str:
    """Revoke a key given as the key itself or its sha256; returns the account id it belonged to.

    NotFound when no live key matches.
    """
    if _API_KEY.match(key_or_hash):
        digest = key_hash(key_or_hash)
    elif _KEY_HASH.match(key_or_hash):
        digest = key_or_hash
    else:
        raise NotFound("no such API key")
    keys = runtime.store.keys
    stored = await runtime.redis.get(keys.api_key(digest))
    if stored is None:
        raise NotFound("no such API key")
    account_id = as_str(stored).partition("|")[0]
    # Key first: once it is gone the key no longer authenticates, whatever happens next.
    await runtime.redis.delete(keys.api_key(digest))
    await runtime.redis.zrem(keys.resource_index(account_id, "apikey"), digest)
    # Then the streams it opened (SSE) are closed in every API process.
    await announce_revocation(runtime, account_id, key=digest)
    return account_id


async def announce_revocation(
    runtime: Runtime, account_id: str, *, after_ms: int | None = None, key: str | None = None
) -> None:
    """Tell every API process (api.sessions.Revocations tails the ``revocations`` stream) that
    credentials of ``account_id`` ended: its sessions issued until ``after_ms``, or the API key
    whose sha256 is ``key``, so their live realtime streams are closed. The stream is trimmed as
    it is written: an entry older than the longest token lifetime (and the verifier's leeway)
    concerns no live session, and one about a key matters only to the processes running then."""
    fields = {"account": account_id}
    if after_ms is not None:
        fields["after"] = str(after_ms)
    if key is not None:
        fields["key"] = key
    keep_ms = (runtime.settings.session_max_ttl_s + 60) * 1000
    await runtime.redis.xadd(
        runtime.store.keys.revocations,
        fields,
        minid=str(max(0, now_ms() - keep_ms)),
        approximate=True,
    )
