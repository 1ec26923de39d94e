"""Lua scripts of the projector. Each touches the keys of one namespace of one partition only (one
hash slot), and every key it touches is passed in KEYS."""

from __future__ import annotations

from projections.feed import LIVE_MAXLEN

# Write a batch of views, their indexes and transcript pointers, and move the checkpoint — only
# if the checkpoint is still where this projector read from (compare-and-set), all or nothing.
# KEYS[1] ckpt  KEYS[2] skipped counter  KEYS[3] all-executions zset
#   then per view 5 keys: view, owner zset, owner active zset, reporter zset (or the view key
#   again when there is no reporter), reporter's schedule runs zset (or the view key again when
#   the view is not a run), then per transcript 2 keys: pointer, item languages zset,
#   then per feed appended to 1 key: the owner's feed stream (each once), then (when there is
#   any feed entry) the partition's live stream, which gets one entry naming the feeds appended to,
#   then per ended execution 1 key: its own stream
# ARGV[1] expected ckpt  ARGV[2] new ckpt  ARGV[3] skipped entries  ARGV[4] n views
# ARGV[5] n transcripts  ARGV[6] n feed entries  ARGV[7] feed MAXLEN (approximate)
# ARGV[8] n ended executions  ARGV[9] their streams' time to live once folded (ms)
# ARGV[10] n feeds appended to
#   then per view 6 args: execution id, view JSON, created_at, active '1'|'0', reporter '1'|'0',
#   schedule run '1'|'0'
#   then per transcript 3 args: pointer JSON, created_at, lang
#   then, when there is any feed entry, 1 arg holding them all (projections.projector
#   ._packed_feed): a header line of five words per entry separated by one space (its feed's
#   place among the feed keys from 0, execution id, seq, event type, its summary's length), a
#   newline, then the summaries back to back (each a FeedSummary's JSON: the entry's v is 2, see
#   projections.feed)
#   then per ended execution 1 arg: the seq of its view's last event
# The feed entries are appended here, with the checkpoint, so a batch retried after a crash or a
# lost compare-and-set never appends them twice.
# An ended execution's stream is given its short time to live here, only when its newest entry is
# the one its view folded: until then (the projector behind, or the execution retried since) a
# read can still fold it from its stream (the appender set the long retention).
# -> {1, new ckpt} or {0, current ckpt} when another projector moved it
COMMIT = """
local current = redis.call('GET', KEYS[1]) or '0-0'
if current ~= ARGV[1] then return {0, current} end
local k, a = 4, 11
for _ = 1, tonumber(ARGV[4]) do
  local xid, score = ARGV[a], ARGV[a + 2]
  redis.call('SET', KEYS[k], ARGV[a + 1])
  redis.call('ZADD', KEYS[3], score, xid)
  redis.call('ZADD', KEYS[k + 1], score, xid)
  if ARGV[a + 3] == '1' then
    redis.call('ZADD', KEYS[k + 2], score, xid)
  else
    redis.call('ZREM', KEYS[k + 2], xid)
  end
  if ARGV[a + 4] == '1' then redis.call('ZADD', KEYS[k + 3], score, xid) end
  if ARGV[a + 5] == '1' then redis.call('ZADD', KEYS[k + 4], score, xid) end
  k, a = k + 5, a + 6
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
  local n_keys, packed = tonumber(ARGV[10]), ARGV[a]
  local nl = string.find(packed, '\\n', 1, true)
  local w = {}
  for word in string.gmatch(string.sub(packed, 1, nl - 1), '%S+') do w[#w + 1] = word end
  local pos = nl + 1
  for i = 0, n_feed - 1 do
    local size = tonumber(w[5 * i + 5])
    redis.call('XADD', KEYS[k + tonumber(w[5 * i + 1])], 'MAXLEN', '~', ARGV[7], '*',
      'execution_id', w[5 * i + 2], 'seq', w[5 * i + 3], 'type', w[5 * i + 4],
      'summary', string.sub(packed, pos, pos + size - 1), 'v', '2')
    pos = pos + size
  end
  -- one notification naming the feeds appended to, for the API hubs (projections.feed)
  local feeds = {}
  for i = k, k + n_keys - 1 do feeds[#feeds + 1] = KEYS[i] end
  redis.call('XADD', KEYS[k + n_keys], 'MAXLEN', '~', 'LIVE_MAXLEN', '*', 'feeds',
    table.concat(feeds, ' '))
  k, a = k + n_keys + 1, a + 1
end
for _ = 1, tonumber(ARGV[8] or '0') do
  local newest = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
  if #newest == 1 and newest[1][1] == ARGV[a] .. '-0' then
    redis.call('PEXPIRE', KEYS[k], ARGV[9])
  end
  k, a = k + 1, a + 1
end
local skipped = tonumber(ARGV[3])
if skipped > 0 then redis.call('INCRBY', KEYS[2], skipped) end
redis.call('SET', KEYS[1], ARGV[2])
return {1, ARGV[2]}
""".replace("LIVE_MAXLEN", str(LIVE_MAXLEN))

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
