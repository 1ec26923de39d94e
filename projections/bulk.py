"""Writing a whole rebuilt namespace at once (replay): big pipelined commands instead of the live
projector's per-view script.

A rebuild writes into a namespace nobody else writes to (dropped first, not live), from views
already folded to the partition log's end, so it needs neither the projector's compare-and-set nor
its one-script-per-batch: the same keys and index rules as :data:`projections.scripts.COMMIT`
become, per chunk of views, one ``MSET`` of the views and one multi-member ``ZADD`` per index key,
sent in one pipeline. The checkpoint is written last, after every chunk, so a namespace with a
checkpoint is complete (an unfinished rebuild's leftovers are dropped by the next one). Every key
is in the namespace's hash slot, so this holds on the cluster too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from engine.connection import RedisClient
from engine.errors import StoreUnavailable
from projections.namespace import Namespace, encode_pointer, transcripts_of
from projections.namespace import valid_name as _valid_name
from projections.views import ExecutionView, encode_view, is_active

CHUNK = 2_000  # views per pipeline


async def write_namespace(
    redis: RedisClient,
    ns: Namespace,
    views: Iterable[ExecutionView],
    ckpt: str,
    skipped: int,
    chunk: int = CHUNK,
) -> None:
    """Write ``views`` with their indexes and transcript pointers into the empty namespace ``ns``,
    then its skipped counter and checkpoint."""
    batch: list[ExecutionView] = []
    newest: dict[tuple[str, str, str], tuple[int, bytes]] = {}  # (owner, item, lang) -> pointer
    for view in views:
        batch.append(view)
        for pointer in transcripts_of(view):
            key = (view.owner, pointer.item_id, pointer.lang)
            # The newest transcript wins; at equal times the later one, as in COMMIT.
            if key not in newest or newest[key][0] <= pointer.created_at:
                newest[key] = (pointer.created_at, encode_pointer(pointer))
        if len(batch) >= chunk:
            await _write_views(redis, ns, batch)
            batch = []
    if batch:
        await _write_views(redis, ns, batch)
    pipe = redis.pipeline(transaction=False)
    pointers = list(newest.items())
    for start in range(0, len(pointers), chunk):
        part = pointers[start : start + chunk]
        _mset(pipe, [(ns.transcript(o, i, lang), raw) for (o, i, lang), (_, raw) in part])
        for (owner, item, lang), (at, _) in part:
            pipe.zadd(ns.transcript_langs(owner, item), {lang: at})
    if skipped:
        pipe.set(ns.skipped, skipped)
    pipe.set(ns.ckpt, ckpt)
    await _execute(pipe)


async def _write_views(redis: RedisClient, ns: Namespace, views: list[ExecutionView]) -> None:
    indexes: dict[str, dict[str, int]] = defaultdict(dict)
    # Key names made once per chunk (every view is in `all`, most owners have many views).
    everything = indexes[ns.all]
    owned: dict[str, dict[str, int]] = {}
    for view in views:
        xid, score, owner = view.execution_id, view.created_at, view.owner
        everything[xid] = score
        members = owned.get(owner)
        if members is None:
            members = owned[owner] = indexes[ns.owned(owner)]
        members[xid] = score
        if is_active(view):
            indexes[ns.active(owner)][xid] = score
        reporter = view.reporter_id
        if reporter is not None and _valid_name(reporter):
            indexes[ns.reporter(owner, reporter)][xid] = score
            if view.kind == "schedule_run":
                indexes[ns.runs(owner, reporter)][xid] = score
    pipe = redis.pipeline(transaction=False)
    _mset(pipe, [(ns.view(v.execution_id), encode_view(v)) for v in views])
    for key, members in indexes.items():
        pipe.zadd(key, members)
    await _execute(pipe)


def _mset(pipe: Any, pairs: list[tuple[str, bytes]]) -> None:
    """One MSET into ``pipe`` (as a raw command: redis-py's cluster pipeline refuses its mset
    method, though every key here is in the namespace's one slot)."""
    if pairs:
        pipe.execute_command("MSET", *(item for pair in pairs for item in pair))


async def _execute(pipe: Any) -> None:
    try:
        await pipe.execute()
    except RedisError as exc:
        raise StoreUnavailable(f"writing the rebuilt views failed: {exc}") from exc
