"""Sessions that end (DESIGN §8): a session JWT's lifetime is capped, and every session of an
account can be revoked at once.

A session is a verified session JWT: its account, when it was issued (``iat_ms``, the mint's
clock in milliseconds; a token without it counts as issued at the last millisecond of its
``iat`` second) and when it expires. Tokens whose lifetime (``exp - iat``) exceeds
``CLIPSTREAM_SESSION_MAX_TTL`` are neither minted nor accepted.

Revoking an account's sessions (``clipstream accounts revoke-sessions``, ``DELETE
/admin/accounts/{id}/sessions``) writes two things, in this order:

1. ``sessions_after`` in the account's record: every token issued at or before that instant is
   refused from now on (REST checks it on each request with a session, the realtime feed when a
   subscription starts);
2. an entry in the ``revocations`` stream, which every API process tails (:class:`Revocations`,
   one blocking read per process, whatever its subscriber count) to close that account's live
   WebSocket and SSE streams with 4401.

Revoking an API key (``DELETE /admin/keys/{key}``, engine.money.accounts.revoke_api_key) deletes
it, then writes an entry naming its sha256 to the same stream: the SSE streams it opened are
closed (``KEY_REVOKED``) in every process; a stream opening just as it is revoked checks that its
key still exists once it has joined.

A crash between the two steps of a sessions revocation leaves live streams open until their
tokens expire while every new request is refused; revoking again finishes the job. (A crash
between a key's deletion and its entry leaves its SSE streams open until they end: the key is
gone, so it cannot be revoked again; they are refused when they reconnect.) The stream keeps
entries for the longest token lifetime (a revocation older than that can concern no live token)
and is trimmed as it is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import RedisError

from engine import clock
from engine.connection import as_str
from engine.errors import NotFound
from engine.log.ids import is_id
from engine.money.accounts import announce_revocation
from engine.runtime import Runtime

log = logging.getLogger("clipstream.sessions")

SESSIONS_AFTER = "sessions_after"  # the account record's field


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session token: whose, issued when and valid until when (epoch ms)."""

    account_id: str
    issued_ms: int
    expires_ms: int

    def revoked_by(self, sessions_after_ms: int | None) -> bool:
        """Whether a revocation at ``sessions_after_ms`` ends this session."""
        return sessions_after_ms is not None and self.issued_ms <= sessions_after_ms


def issued_ms(claims: dict[str, Any]) -> int:
    """When a token was minted, in ms: its ``iat_ms``, or (a token without one) the last
    millisecond of its ``iat`` second, so a revocation in that second still covers it."""
    exact = claims.get("iat_ms")
    if isinstance(exact, int) and not isinstance(exact, bool):
        return exact
    return math.floor(float(claims["iat"])) * 1000 + 999


async def sessions_after(runtime: Runtime, account_id: str) -> int | None:
    """The account's revocation instant (ms), or None when its sessions were never revoked."""
    return sessions_after_of(
        await runtime.redis.hget(runtime.store.keys.account(account_id), SESSIONS_AFTER)
    )


def sessions_after_read(runtime: Runtime, account_id: str) -> tuple[str, ...]:
    """The command that reads :func:`sessions_after` (for a caller that sends it in a pipeline
    of its own)."""
    return ("HGET", runtime.store.keys.account(account_id), SESSIONS_AFTER)


def sessions_after_of(reply: Any) -> int | None:
    """:func:`sessions_after` from its command's reply; the reply's error raised when it failed
    (a revocation is never skipped because Redis failed to say)."""
    if isinstance(reply, Exception):
        raise reply
    return None if reply is None else int(reply)


async def revoke_sessions(runtime: Runtime, account_id: str) -> int:
    """End every session of ``account_id`` issued until now (NotFound for no such account); the
    instant (ms) after which tokens are valid again."""
    keys = runtime.store.keys
    if not is_id(account_id, "acc") or not await runtime.redis.exists(keys.account(account_id)):
        raise NotFound("no such account")
    now = clock.now_ms()
    await runtime.redis.hset(keys.account(account_id), SESSIONS_AFTER, str(now))
    await announce_revocation(runtime, account_id, after_ms=now)
    return now


class Revocations:
    """Tails the ``revocations`` stream for one API process and calls ``on_revoke(account,
    after_ms)`` for each sessions revocation and ``on_revoke_key(account, key_hash)`` for each
    revoked API key written after it started (what came before is in the accounts' records and
    the keys' absence, which every new subscription checks)."""

    def __init__(
        self,
        runtime: Runtime,
        on_revoke: Callable[[str, int], None],
        on_revoke_key: Callable[[str, str], None],
        *,
        block_ms: int = 5_000,
    ) -> None:
        self.redis = runtime.redis
        self.key = runtime.store.keys.revocations
        self.on_revoke = on_revoke
        self.on_revoke_key = on_revoke_key
        self.block_ms = block_ms

    async def run(self) -> None:
        """Read until cancelled (a failing Redis is retried with a backoff)."""
        position = "$"
        failures = 0
        while True:
            try:
                if position == "$":
                    newest = await self.redis.xrevrange(self.key, "+", "-", count=1)
                    position = as_str(newest[0][0]) if newest else "0-0"
                reply = await self.redis.xread({self.key: position}, count=100, block=self.block_ms)
                failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("reading sessions revocations failed, retrying: %s", exc)
                await anyio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            items = reply.items() if isinstance(reply, dict) else reply or []
            for _key, rows in items:
                if rows and isinstance(rows[0], list) and len(rows) == 1:
                    rows = rows[0]  # RESP3 shape
                for entry_id, fields in rows:
                    position = as_str(entry_id)
                    account = as_str(fields.get(b"account", b""))
                    after, key = fields.get(b"after"), fields.get(b"key")
                    if account and after is not None:
                        self.on_revoke(account, int(after))
                    if account and key is not None:
                        self.on_revoke_key(account, as_str(key))
