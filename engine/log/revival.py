"""Revival: a dead-lettered execution queued again, once.

``store.revival.revive`` runs one script in the partition's slot that, only while the dead-letter
entries it names are still there and the execution is still at the seq the caller folded:

    appends     the ``ExecutionRetried`` to the execution stream and the partition log
    persists    the execution stream (its end gave it an expiry; it runs again, and its next end
                sets one); when that stream has expired meanwhile (with an archive, a finished
                execution's stream is kept for the hot window only) the caller passes its events,
                read from the archive, and the script writes them back first
    notes       the retry's seq in the partition's ``retried`` hash, kept for good (dead letters
                are rare): a reader that finds the execution in the archive
                (engine.archive.reader) must not stop at its first end
    removes     those dead-letter entries
    queues      the execution at the end of its owner's ready list (the owner joins the ring when
                that list was empty), as admission does for a new request

The dispatch (engine.log.leases) then leases it like any other, and the worker resumes it from
its history.

Two operators retrying the same dead letter at once: the first script removes the entries, the
second finds them gone and changes nothing, so the execution is queued and resumed once. The
decision of what may be retried is engine.run.revive's; this module only does it atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from engine.connection import as_str
from engine.errors import StoreUnavailable
from engine.log.context import StoreContext
from engine.log.ids import execution_partition

Revived = Literal["revived", "gone", "conflict"]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One entry of a partition's dead-letter stream (engine.log.leases writes them):
    ``payload`` is the entry that was dead-lettered, as it was (it may not decode)."""

    partition: int
    dead_id: str
    entry_id: str
    reason: str
    deliveries: int
    at: int | None
    payload: bytes


class Revival:
    """Queues dead-lettered executions again (see the module docstring)."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._revive = ctx.script(REVIVE)

    async def entries(self, partition: int) -> list[DeadEntry]:
        """Every entry of ``partition``'s dead-letter stream, oldest first (read in pages)."""
        stream = self._ctx.keys.dead(partition)
        out: list[DeadEntry] = []
        start = "-"
        while True:
            try:
                rows = await self._ctx.redis.xrange(stream, start, "+", count=_PAGE)
            except RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc
            for dead_id, fields in rows:
                out.append(_dead_entry(partition, as_str(dead_id), fields))
            if len(rows) < _PAGE:
                return out
            start = f"({as_str(rows[-1][0])}"

    async def revive(
        self,
        execution_id: str,
        owner: str,
        expected_seq: int,
        event: bytes,
        dead_ids: Sequence[str],
        restore: Sequence[bytes] = (),
    ) -> Revived:
        """Append ``event`` (the ExecutionRetried, stamped ``expected_seq + 1``), remove the dead
        letters ``dead_ids`` and queue the execution, all or nothing: ``revived``; ``gone`` when
        the dead letters are no longer there (retried already); ``conflict`` when the execution
        moved past ``expected_seq`` (fold again and decide again).

        The execution runs again, so its stream loses the expiry its end gave it (its next end
        sets it again). ``restore``: its events (seq 1 … ``expected_seq``), written back into its
        stream first when that stream has expired meanwhile (an archive kept them), so the worker
        that leases it reads its whole history as usual."""
        keys = self._ctx.keys
        p = execution_partition(execution_id)
        script_keys = [
            keys.execution(execution_id),
            keys.log(p),
            keys.dead(p),
            keys.ready(owner),
            keys.ring(p),
            keys.retried(p),
        ]
        args: list[Any] = [expected_seq, event, execution_id, owner, len(dead_ids), *dead_ids]
        args += restore
        reply = await self._ctx.run(self._revive, script_keys, args)
        outcome = as_str(reply)
        assert outcome in ("revived", "gone", "conflict"), outcome
        return outcome  # type: ignore[return-value]


def _dead_entry(partition: int, dead_id: str, fields: dict[Any, Any]) -> DeadEntry:
    named = {as_str(k): v for k, v in fields.items()}

    def text(name: str) -> str:
        value = named.get(name)
        return "" if value is None else as_str(value, errors="replace")

    at, deliveries = text("at"), text("deliveries")
    payload = named.get("e", b"")
    return DeadEntry(
        partition=partition,
        dead_id=dead_id,
        entry_id=text("entry_id"),
        reason=text("reason"),
        deliveries=int(deliveries) if deliveries.isdigit() else 0,
        at=int(at) if at.isdigit() else None,
        payload=payload.encode() if isinstance(payload, str) else bytes(payload),
    )


# KEYS[1] execution stream  KEYS[2] partition log  KEYS[3] dead-letter stream
# KEYS[4] the owner's ready list  KEYS[5] the partition's ring  KEYS[6] the retried executions
# (all in the partition's slot)
# ARGV[1] expected seq  ARGV[2] the event  ARGV[3] execution id  ARGV[4] owner
# ARGV[5] n dead-letter ids  ARGV[6 .. 5 + n] their ids  ARGV[6 + n ..] events to restore (seq 1 …)
# -> 'revived' | 'gone' (no such dead letter any more) | 'conflict' (the seq moved)
REVIVE = """
local n = tonumber(ARGV[5])
for i = 6, 5 + n do
  if #redis.call('XRANGE', KEYS[3], ARGV[i], ARGV[i]) == 0 then return 'gone' end
end
if #ARGV > 5 + n and redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 6 + n, #ARGV do redis.call('XADD', KEYS[1], (i - 5 - n) .. '-0', 'e', ARGV[i]) end
end
-- Its entries are seq 1-0, 2-0, ... and none is ever deleted: its length is its newest seq.
local current = redis.call('XLEN', KEYS[1])
if current ~= tonumber(ARGV[1]) then return 'conflict' end
redis.call('XADD', KEYS[1], (current + 1) .. '-0', 'e', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[6], ARGV[3], current + 1)
for i = 6, 5 + n do redis.call('XDEL', KEYS[3], ARGV[i]) end
if redis.call('RPUSH', KEYS[4], ARGV[3]) == 1 then redis.call('RPUSH', KEYS[5], ARGV[4]) end
return 'revived'
"""
