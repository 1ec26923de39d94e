"""The Lua scripts behind the store. Each touches keys of one hash slot only (cluster-safe).

Kept apart from store.py so the Python around them stays readable; only store.py runs them
(engine.money.billing turns money events into the moves APPEND_BATCH applies).
"""

from __future__ import annotations

# Ending a lease (prepended to the scripts that end one): acknowledge the execution's entry of the
# work stream, delete it (the work stream only holds live leases), and give its owner's slot back.
# The slot is given back only when the entry was still pending, so a second release is a no-op and
# the running count always equals the owner's pending entries.
_RELEASE = """
local function release(work, running, group, id)
  local entry = redis.call('XRANGE', work, id, id)
  if redis.call('XACK', work, group, id) == 0 then return 0 end
  redis.call('XDEL', work, id)
  if #entry > 0 then
    local owner = entry[1][2][2]
    if redis.call('HINCRBY', running, owner, -1) <= 0 then redis.call('HDEL', running, owner) end
  end
  return 1
end
"""

# The expected-version append, for one or many executions of one partition in one call (the
# worker's batches; EventStore.append is a batch of one). For each op: check its expected seq and
# that the owner's balance covers its money moves taken in order; when both hold, store the blobs
# its events name (SET NX), apply each money move whose charge id is not applied yet (balance,
# applied-charges hash, ledger entry), append the events to the execution stream and the partition
# log, set the retention, and release the execution's lease (its work-stream entry, see DISPATCH)
# when one is given. Each op is all or nothing and independent of the others: a StepCompleted
# never names a blob that is not stored, a money event is never written without its money moving
# (nor money moved without its event), and a terminal append and the end of its lease cannot be
# split.
# KEYS[1] partition log  KEYS[2] partition's applied charges  KEYS[3] work stream
# KEYS[4] running counts  KEYS[5..] per op: its execution stream, then (only when it has money
# moves) the owner's balance and ledger, then its blob keys
# ARGV[1] group  ARGV[2] now ms  then per op: expected seq, PEXPIRE ms (0: none), lease to
# release ('': none), n blobs, n events, n moves, execution id, the blob values, the events,
# then per move: kind, charge id, signed amount (micro-coins), uncovered amount
# -> per op four numbers: 1, new seq, 0, 0 (written) | 0, current seq, 0, 0 (conflict) |
#    2, current seq, n, balance (the op's n-th move would take the balance below zero)
APPEND_BATCH = (
    _RELEASE
    + """
local log, charges, now = KEYS[1], KEYS[2], ARGV[2]
local k, a = 5, 3
local out = {}
while a <= #ARGV do
  local stream = KEYS[k]
  local expected = tonumber(ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  local ack = ARGV[a + 2]
  local blobs = tonumber(ARGV[a + 3])
  local events = tonumber(ARGV[a + 4])
  local moves = tonumber(ARGV[a + 5])
  local xid = ARGV[a + 6]
  a = a + 7
  local balance_key, ledger_key, blob_k = KEYS[k + 1], KEYS[k + 2], k + 1
  if moves > 0 then blob_k = k + 3 end
  local m = a + blobs + events
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local current = 0
  if #last > 0 then current = tonumber(string.match(last[1][1], '^(%d+)')) end
  local status, refused, available = 1, 0, 0
  if current ~= expected then
    status = 0
  elseif moves > 0 then
    local balance = tonumber(redis.call('GET', balance_key) or '0')
    for j = 0, moves - 1 do
      if redis.call('HEXISTS', charges, ARGV[m + 4 * j + 1]) == 0 then
        local after = balance + tonumber(ARGV[m + 4 * j + 2])
        if after < 0 then
          status, refused, available = 2, j + 1, balance
          break
        end
        balance = after
      end
    end
  end
  if status == 1 then
    for i = 0, blobs - 1 do
      redis.call('SET', KEYS[blob_k + i], ARGV[a + i], 'NX')
    end
    for j = 0, moves - 1 do
      local kind, id = ARGV[m + 4 * j], ARGV[m + 4 * j + 1]
      local amount, uncovered = ARGV[m + 4 * j + 2], ARGV[m + 4 * j + 3]
      if redis.call('HSETNX', charges, id, amount) == 1 then
        redis.call('INCRBY', balance_key, amount)
        -- The balance as Redis stores it: Lua's tostring of a large number would print 1e+14.
        local balance = redis.call('GET', balance_key)
        if uncovered == '0' then
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now)
        else
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now, 'uncovered', uncovered)
        end
      end
    end
    for i = 0, events - 1 do
      local event = ARGV[a + blobs + i]
      redis.call('XADD', stream, (expected + 1 + i) .. '-0', 'e', event)
      redis.call('XADD', log, '*', 'e', event)
    end
    if ttl > 0 then redis.call('PEXPIRE', stream, ttl) end
    if ack ~= '' then release(KEYS[3], KEYS[4], ARGV[1], ack) end
    current = expected + events
  end
  out[#out + 1] = status
  out[#out + 1] = current
  out[#out + 1] = refused
  out[#out + 1] = available
  k = blob_k + blobs
  a = m + 4 * moves
end
return out
"""
)

# Accept a request: idempotency check, flat fee, ledger entry, the ExecutionRequested append and
# its place in the owner's ready list (the owner joins the ring when the list was empty), all or
# nothing.
# KEYS[1] execution stream  KEYS[2] partition log  KEYS[3] balance  KEYS[4] ledger
# KEYS[5] idempotency record  KEYS[6] the owner's ready list  KEYS[7] the partition's ring
# ARGV[1] fee  ARGV[2] encoded ExecutionRequested  ARGV[3] '1' when an Idempotency-Key was given
# ARGV[4] request fingerprint  ARGV[5] idempotency ttl s  ARGV[6] execution id  ARGV[7] now ms
# ARGV[8] owner
# -> {'ok', log_id, balance} | {'duplicate', execution_id} | {'mismatch', execution_id}
#    | {'insufficient', balance} | {'exists', ''}
REQUEST = """
if ARGV[3] == '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local sep = string.find(prev, '|', 1, true)
    local fingerprint = string.sub(prev, 1, sep - 1)
    local xid = string.sub(prev, sep + 1)
    if fingerprint == ARGV[4] then return {'duplicate', xid} end
    return {'mismatch', xid}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local fee = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[3]) or '0')
if balance < fee then return {'insufficient', string.format('%d', balance)} end
if fee > 0 then
  balance = redis.call('DECRBY', KEYS[3], fee)
  redis.call('XADD', KEYS[4], '*', 'charge_id', 'fee:' .. ARGV[6], 'kind', 'fee',
    'amount', string.format('%d', -fee), 'balance', string.format('%d', balance),
    'execution_id', ARGV[6], 'at', ARGV[7])
end
redis.call('XADD', KEYS[1], '1-0', 'e', ARGV[2])
local log_id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
if redis.call('RPUSH', KEYS[6], ARGV[6]) == 1 then redis.call('RPUSH', KEYS[7], ARGV[8]) end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[5], ARGV[4] .. '|' .. ARGV[6], 'EX', tonumber(ARGV[5]))
end
return {'ok', log_id, string.format('%d', balance)}
"""

# Renew (idle 0) or hand back (idle = a large number) leases this consumer still holds.
# KEYS[1] work stream  ARGV[1] group  ARGV[2] consumer  ARGV[3] idle ms  ARGV[4..] entry ids
# -> one 1 (still ours) or 0 (taken over or gone) per id
TOUCH = """
local held = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', tonumber(ARGV[3]), 'JUSTID')
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
"""

# Take over entries idle longer than a lease, with each one's delivery count: leases (the work
# stream) and log entries a dead reader never acknowledged (the partition log).
# KEYS[1] work stream or partition log
# ARGV[1] group  ARGV[2] consumer  ARGV[3] min idle ms  ARGV[4] cursor  ARGV[5] count
# -> {next_cursor, {{id, fields, deliveries}, ...}}
CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4],
  'COUNT', tonumber(ARGV[5]))
local out = {}
for _, entry in ipairs(r[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local n = 1
    if #p > 0 then n = p[1][4] end
    out[#out + 1] = {entry[1], entry[2], n}
  end
end
return {r[1], out}
"""

# Move one entry to the dead-letter stream and acknowledge it (a log entry) or release it (a lease),
# atomically.
# KEYS[1] partition log or work stream  KEYS[2] dead-letter stream  KEYS[3] running counts (only
# for a lease)
# ARGV[1] group  ARGV[2] entry id  ARGV[3] reason  ARGV[4] payload  ARGV[5] deliveries  ARGV[6] now
DEAD_LETTER = (
    _RELEASE
    + """
redis.call('XADD', KEYS[2], '*', 'entry_id', ARGV[2], 'reason', ARGV[3], 'e', ARGV[4],
  'deliveries', ARGV[5], 'at', ARGV[6])
if KEYS[3] then return release(KEYS[1], KEYS[3], ARGV[1], ARGV[2]) end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""
)

# Lease up to n executions of one partition, owners in turn: take the owner at the head of the
# ring and move it to the tail; skip it while its leases are at the cap; otherwise pop its oldest
# ready execution (the owner leaves the ring when that was its last) and lease it: a work-stream
# entry read at once by the consumer through the group, so that entry's pending entry is the lease,
# exactly as decision 0001 describes, and the owner's running count goes up by one. Only this script
# adds to the work stream and it reads each entry as it adds it, so '>' always delivers that entry.
# Stops when n are leased, the ring is empty, or every owner left in it is at the cap.
# KEYS[1] ring  KEYS[2] work stream  KEYS[3] running counts
# ARGV[1] group  ARGV[2] consumer  ARGV[3] n  ARGV[4] per-owner cap (0: none)
# ARGV[5] ready-list prefix  ARGV[6] execution-stream prefix (engine.log.keys: both in this slot)
# -> per lease {entry id, {event, ...}}: the execution's history so far, ExecutionRequested first
DISPATCH = """
local ring, work, running = KEYS[1], KEYS[2], KEYS[3]
local want, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local skipped = 0
while #out < want and skipped < redis.call('LLEN', ring) do
  local owner = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  if cap > 0 and tonumber(redis.call('HGET', running, owner) or '0') >= cap then
    skipped = skipped + 1
  else
    skipped = 0
    local ready = ARGV[5] .. owner
    local xid = redis.call('LPOP', ready)
    if redis.call('LLEN', ready) == 0 then redis.call('LREM', ring, -1, owner) end
    local rows = {}
    if xid then rows = redis.call('XRANGE', ARGV[6] .. xid, '-', '+') end
    if #rows > 0 then
      local history = {}
      for i, row in ipairs(rows) do history[i] = row[2][2] end
      local id = redis.call('XADD', work, '*', 'o', owner, 'e', history[1])
      redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', work, '>')
      redis.call('HINCRBY', running, owner, 1)
      out[#out + 1] = {id, history}
    end
  end
end
return out
"""

# End leases whose execution needs nothing more (found terminal on a redelivery).
# KEYS[1] work stream  KEYS[2] running counts  ARGV[1] group  ARGV[2..] entry ids
# -> how many were still pending
RELEASE = (
    _RELEASE
    + """
local n = 0
for i = 2, #ARGV do n = n + release(KEYS[1], KEYS[2], ARGV[1], ARGV[i]) end
return n
"""
)


def _around_request(body: str) -> str:
    """A script that runs ``body`` with REQUEST callable as ``request(keys, argv)``, and
    ``from(t, i)`` for the tail of a table: REQUEST keeps its own KEYS and ARGV layout behind the
    wrapper's, so the two never have to agree on positions."""
    return (
        "local function request(KEYS, ARGV)\n"
        + REQUEST
        + "end\n"
        + "local function from(t, first)\n"
        + "  local out = {}\n"
        + "  for i = first, #t do out[#out + 1] = t[i] end\n"
        + "  return out\n"
        + "end\n"
        + body
    )


# REQUEST for a schedule run, one run at a time per schedule: only while the schedule record and its
# run marker are what the caller read (else 'moved': read again), and only when the run the marker
# names has ended (the caller folded its history: terminal is final, so that cannot go stale); the
# marker then names the new run, atomically with its ExecutionRequested. An Idempotency-Key already
# used answers as REQUEST does (duplicate or mismatch) whatever runs.
# KEYS[1] run marker  KEYS[2] idempotency record  KEYS[3] schedule record  KEYS[4..] REQUEST's
# ARGV[1] marker as read ('' none)  ARGV[2] '1' when that run is in flight
# ARGV[3] new execution id  ARGV[4] '1' when an Idempotency-Key was given
# ARGV[5] schedule record as read  ARGV[6..] REQUEST's
# -> REQUEST's reply | {'running', execution id of the run in flight} | {'moved', ''}
REQUEST_RUN = _around_request(
    """
local keys, argv = from(KEYS, 4), from(ARGV, 6)
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return request(keys, argv) end
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return {'moved', ''} end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return {'moved', ''} end
if ARGV[2] == '1' then return {'running', ARGV[1]} end
local reply = request(keys, argv)
if reply[1] == 'ok' then redis.call('SET', KEYS[1], ARGV[3]) end
return reply
"""
)

# REQUEST for one video of a schedule run: nothing when a run of the schedule already processed
# the video ('seen'); otherwise the video is recorded as processed atomically with its
# ExecutionRequested. An Idempotency-Key already used (the same run asking again) answers as
# REQUEST does.
# KEYS[1] the schedule's seen hash  KEYS[2] idempotency record  KEYS[3..] REQUEST's
# ARGV[1] video id  ARGV[2] what to record for it  ARGV[3] '1' when an Idempotency-Key was given
# ARGV[4..] REQUEST's
# -> REQUEST's reply | {'seen', what was recorded}
REQUEST_ONCE = _around_request(
    """
local keys, argv = from(KEYS, 3), from(ARGV, 4)
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return request(keys, argv) end
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen then return {'seen', seen} end
local reply = request(keys, argv)
if reply[1] == 'ok' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return reply
"""
)
