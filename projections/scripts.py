"""Lua scripts of the projector, and the arguments of its COMMIT (:func:`commit_args`), packed as
the script reads them. Each touches the keys of one namespace of one partition only (one hash
slot): passed in KEYS, or named from prefixes that carry the partition's hash tag."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from projections.feed import (
    FEED_MAXLEN,
    LIVE_MAXLEN,
    SUMMARY_VERSION,
    FeedRecord,
    feed_groups,
    feed_key,
    live_key,
)
from projections.namespace import Namespace, encode_pointer, transcripts_of
from projections.namespace import valid_name as _valid_name
from projections.views import ExecutionView, encode_view, is_active

# Write a batch of views, their indexes and transcript pointers, and move the checkpoint — only
# if the checkpoint is still where this projector read from (compare-and-set), all or nothing.
# The views, their indexes and the ended executions' streams are named from their prefixes
# (projections.namespace, engine.log.keys: each carries the partition's hash tag, so they are in
# the slot of the keys declared, as engine.log.leases.DISPATCH does); the other keys are declared.
# KEYS[1] ckpt  KEYS[2] skipped counter  KEYS[3] all-executions zset
#   then per transcript 2 keys: pointer, item languages zset,
#   then per feed appended to 1 key: the owner's feed stream (each once), then (when there is
#   any feed entry) the partition's live stream, which gets one entry naming the feeds appended to
# ARGV[1] expected ckpt  ARGV[2] new ckpt  ARGV[3] skipped entries  ARGV[4] n views
# ARGV[5] n transcripts  ARGV[6] n feed entries  ARGV[7] feed MAXLEN (approximate)
# ARGV[8] n ended executions  ARGV[9] their streams' time to live once folded (ms)
# ARGV[10] n feeds appended to  ARGV[11..16] the prefixes of the views, the owners' zsets, the
# owners' active zsets, the reporters' zsets and the reporters' schedule runs zsets (both followed
# by '{owner}:{reporter}'), and the execution streams
#   then, when there is any view (_packed_views), 1 arg: a header of seven words per view
#   separated by one space (execution id, owner, created_at, active '1'|'0', reporter id or '-',
#   schedule run '1'|'0', indexed '1'|'0'), then the views' JSON, 1 arg each. Indexed '1': the
#   view is stored as active, so it is in every index already; only the view is written, and its
#   entry in the owner's active set removed once it ended.
#   then per transcript 3 args: pointer JSON, created_at, lang
#   then, when there is any feed entry (_packed_feed), 1 arg: a header of four words per entry
#   (its feed's place among the feed keys from 0, execution id, its events' seqs and types, each
#   comma-separated), then its summaries, 1 arg each entry (a JSON array of FeedRow: the
#   entry's v is SUMMARY_VERSION, see projections.feed)
#   then, when there is any ended execution, 1 arg: two words each, its id and the seq of its
#   view's last event
# Large values go in args of their own, never cut out of a bigger one: Lua hashes every byte of a
# string it makes (an arg, or a string.sub); cut out of one packed arg, the views and summaries
# were hashed twice (the script took about a fifth longer).
# The feed entries are appended here, with the checkpoint, so a batch retried after a crash or a
# lost compare-and-set never appends them twice.
# An ended execution's stream is given its short time to live here, only when its newest entry is
# the one its view folded: until then (the projector behind, or the execution retried since) a
# read can still fold it from its stream (the appender set the long retention).
# -> {1, new ckpt} or {0, current ckpt} when another projector moved it
COMMIT = """
local function words(header)
  local w = {}
  for word in string.gmatch(header, '%S+') do w[#w + 1] = word end
  return w
end
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return {0, current} end
local k, a = 4, 17
local n_views = tonumber(ARGV[4])
if n_views > 0 then
  local w = words(ARGV[a])
  for i = 0, n_views - 1 do
    local j = 7 * i
    local xid, owner, score, reporter = w[j + 1], w[j + 2], w[j + 3], w[j + 5]
    redis.call('SET', ARGV[11] .. xid, ARGV[a + 1 + i])
    if w[j + 7] == '1' then
      if w[j + 4] ~= '1' then redis.call('ZREM', ARGV[13] .. owner, xid) end
    else
      redis.call('ZADD', KEYS[3], score, xid)
      redis.call('ZADD', ARGV[12] .. owner, score, xid)
      if w[j + 4] == '1' then
        redis.call('ZADD', ARGV[13] .. owner, score, xid)
      else
        redis.call('ZREM', ARGV[13] .. owner, xid)
      end
      if reporter ~= '-' then
        local by = owner .. ':' .. reporter
        redis.call('ZADD', ARGV[14] .. by, score, xid)
        if w[j + 6] == '1' then redis.call('ZADD', ARGV[15] .. by, score, xid) end
      end
    end
  end
  a = a + 1 + n_views
end
for _ = 1, tonumber(ARGV[5]) do
  -- the newest transcript wins, whatever order executions are folded in
  local prev = redis.call('ZSCORE', KEYS[k + 1], ARGV[a + 2])
  if (not prev) or tonumber(prev) <= tonumber(ARGV[a + 1]) then
    redis.call('SET', KEYS[k], ARGV[a])
    redis.call('ZADD', KEYS[k + 1], ARGV[a + 1], ARGV[a + 2])
  end
  k, a = k + 2, a + 3
end
local n_feed = tonumber(ARGV[6])
if n_feed > 0 then
  local n_keys, w = tonumber(ARGV[10]), words(ARGV[a])
  for i = 0, n_feed - 1 do
    redis.call('XADD', KEYS[k + tonumber(w[4 * i + 1])], 'MAXLEN', '~', ARGV[7], '*',
      'execution_id', w[4 * i + 2], 'seq', w[4 * i + 3], 'type', w[4 * i + 4],
      'summary', ARGV[a + 1 + i], 'v', 'SUMMARY_VERSION')
  end
  -- one notification naming the feeds appended to, for the API hubs (projections.feed)
  local feeds = {}
  for i = k, k + n_keys - 1 do feeds[#feeds + 1] = KEYS[i] end
  redis.call('XADD', KEYS[k + n_keys], 'MAXLEN', '~', 'LIVE_MAXLEN', '*', 'feeds',
    table.concat(feeds, ' '))
  k, a = k + n_keys + 1, a + 1 + n_feed
end
local n_ended = tonumber(ARGV[8])
if n_ended > 0 then
  local w = words(ARGV[a])
  for i = 0, n_ended - 1 do
    local stream = ARGV[16] .. w[2 * i + 1]
    -- Its entries are seq 1-0, 2-0, ... with none ever deleted: its length is its newest seq.
    if redis.call('XLEN', stream) == tonumber(w[2 * i + 2]) then
      redis.call('PEXPIRE', stream, ARGV[9])
    end
  end
end
local skipped = tonumber(ARGV[3])
if skipped > 0 then redis.call('INCRBY', KEYS[2], skipped) end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
""".replace("LIVE_MAXLEN", str(LIVE_MAXLEN)).replace("SUMMARY_VERSION", SUMMARY_VERSION.decode())

# Renew a partition lease only if this projector still holds it.
# KEYS[1] lease  ARGV[1] projector id  ARGV[2] ttl ms  -> 1 held, 0 lost
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""

# Give a lease up (graceful stop) only if this projector holds it.
# KEYS[1] lease  ARGV[1] projector id  -> 1 released, 0 not ours
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def commit_args(
    ns: Namespace,
    views: Sequence[ExecutionView],
    expected: str,
    new: str,
    skipped: int,
    feed: Sequence[FeedRecord] = (),
    ended_ttl_ms: int | None = None,
    stored: Mapping[str, ExecutionView] | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`scripts.COMMIT` for writing ``views``, appending ``feed`` entries
    and giving the streams of the ended ones ``ended_ttl_ms`` to live (the live projector only:
    a replay passes neither) and moving the checkpoint. ``stored`` holds the views as they are
    in Redis before this write, where known: one stored as active is in every index already, so
    only its view (and, once it ended, its leaving the active set) is written, and a transcript
    it held already has its pointer."""
    ended = [] if ended_ttl_ms is None else [v for v in views if not is_active(v)]
    keys: list[str] = [ns.ckpt, ns.skipped, ns.all]
    args: list[Any] = [expected, new, skipped, len(views), 0, 0, FEED_MAXLEN]
    args += [len(ended), ended_ttl_ms or 0, 0]
    args += (ns.view_prefix, ns.owned_prefix, ns.active_prefix, ns.reporter_prefix)
    args += (ns.runs_prefix, ns.keys.execution_prefix(ns.partition))
    known = stored or {}
    if views:
        args += _packed_views(views, known)
    # A transcript the stored view held already had its pointer written with it.
    pointers = [
        (view.owner, p)
        for view in views
        for p in transcripts_of(view, known.get(view.execution_id))
    ]
    args[4] = len(pointers)
    for owner, pointer in pointers:
        keys += [
            ns.transcript(owner, pointer.item_id, pointer.lang),
            ns.transcript_langs(owner, pointer.item_id),
        ]
        args += [encode_pointer(pointer), pointer.created_at, pointer.lang]
    if feed:
        feeds = _packed_feed(ns, feed)
        args[5], args[9] = feeds.entries, len(feeds.keys)
        keys += feeds.keys
        keys.append(live_key(ns.keys, ns.partition))  # the notification the API hubs block on
        args += feeds.args
    if ended:
        args.append(_words([w for v in ended for w in (v.execution_id, str(v.seq))]))
    return keys, args


def _words(words: list[str]) -> str:
    """``words`` joined by single spaces; ValueError when one is empty or holds whitespace (the
    COMMIT script splits them on whitespace)."""
    header = " ".join(words)
    if len(header.split()) != len(words):
        raise ValueError("an id in a projector commit is empty or holds a space")
    return header


def _packed_views(
    views: Sequence[ExecutionView], stored: Mapping[str, ExecutionView]
) -> list[bytes | str]:
    """The views of a commit as the script reads them: one header arg of seven words per view
    (execution id, owner, created_at, active '1'|'0', reporter id or '-', schedule run '1'|'0',
    indexed '1' when ``stored`` holds it as active, else '0'), then each view's JSON. The small
    fields of all views share one arg (redis-py encodes every argument on its own: one per batch
    instead of ten per view); each view is an arg of its own, which Lua reads without copying."""
    words: list[str] = []
    data: list[bytes | str] = []
    for view in views:
        before = stored.get(view.execution_id)
        reporter = view.reporter_id
        has_reporter = reporter is not None and _valid_name(reporter)
        is_run = has_reporter and view.kind == "schedule_run"
        words += (view.execution_id, view.owner, str(view.created_at))
        words += ("1" if is_active(view) else "0", reporter if has_reporter and reporter else "-")
        words.append("1" if is_run else "0")
        words.append("1" if before is not None and is_active(before) else "0")
        data.append(encode_view(view))
    return [_words(words), *data]


class _Feeds(NamedTuple):
    keys: list[str]  # the feeds appended to, in the order of their first entry
    entries: int  # how many entries the commit appends
    args: list[bytes | str]  # every entry, as the COMMIT script reads them


def _packed_feed(ns: Namespace, feed: Sequence[FeedRecord]) -> _Feeds:
    """The feed entries of a commit (one per execution: projections.feed.feed_groups) as the
    script reads them: one header arg of four words per entry (the index of its feed among the
    keys, execution id, the events' seqs and types), then each entry's summaries. Each feed's key
    is passed once, however many entries it gets."""
    index: dict[str, int] = {}
    words: list[str] = []
    groups = feed_groups(feed)
    for group in groups:
        n = index.get(group.owner)
        if n is None:
            n = index[group.owner] = len(index)
        words += (str(n), group.execution_id, group.seqs, group.types)
    # The projected partition's tag, so each key is in the script's slot whatever the owner.
    keys = [feed_key(ns.keys, ns.partition, owner) for owner in index]
    return _Feeds(keys, len(groups), [_words(words), *(g.summaries for g in groups)])
