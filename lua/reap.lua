-- reap.lua — the leader ends the leases of batches whose deadline passed
-- (running → lease expired: retry, dead or cancelled; a lease whose
-- assignment the worker never accepted → queued without using an attempt).
-- KEYS[1] leases zset        KEYS[2] scheduled zset     KEYS[3] counts hash
-- KEYS[4] events stream
-- ARGV[1] key prefix
-- ARGV[2] signed events envelope naming the tasks   ARGV[3] events MAXLEN
-- ARGV[4..] runs, one per due batch: a header of 3 — the batch's fencing
--           token, '1' if the caller found the batch never run ('0' if
--           not), the number of tasks n —
--           then n × 3: id, expected version, retry delay ms. The caller
--           lists the tasks it read as running under the token; n = 0 for
--           a batch whose record is gone.
-- Reply: flat array, 2 per task: id, outcome ('queued' | 'scheduled' |
--        'dead' | 'cancelled' | 'renewed' (the batch's deadline moved
--        since it was read) | 'conflict' (no longer running under the
--        token at the version read))
-- assign.lua takes the lease and charges the attempt; the worker accepts by
-- acknowledging the assign entry (`ent` of the batch record) before it
-- runs anything. An entry still unread, or read but not acknowledged,
-- means no handler of the batch ran (the worker died or stalled first):
-- the attempts are given back. The caller asks the worker's stream
-- (Store::assignment_acknowledged) and flags such a batch; this script
-- only checks the deadline, state, token and version.
-- A batch that is due is over once this script has run: its still-running
-- tasks were all listed (a task leaves a token for good once it stops
-- running under it), so its record and deadline go.
local prefix = ARGV[1]
local now = now_ms()
local reply, deltas, changed = {}, {}, 0
local i = 4
while i <= #ARGV do
  local token, listed, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local due = tonumber(redis.call('ZSCORE', KEYS[1], token) or '-1')
  local expired = due >= 0 and due <= now
  local record = batch_key(prefix, token)
  local ended = 0
  for _ = 1, n do
    local id, expected, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local key = task_key(prefix, id)
    local t = expired and redis.call('HMGET', key, 'state', 'v', 'b', 'att', 'cr', 'q', 'uq', 'uw', 'h', 'tags', 'prio')
    local outcome
    if not t then
      outcome = 'renewed'
    elseif t[1] ~= 'running' or t[3] ~= token or t[2] ~= expected then
      outcome = 'conflict'
    else
      local v = int(t[2] + 1)
      ended = ended + 1
      bump(deltas, 'running', -1)
      stopped_running(t[6], 1)
      if listed == '1' then
        -- The handler never ran: the attempt charged at assignment is
        -- given back.
        local att = int(math.max(tonumber(t[4] or '1') - 1, 0))
        if t[5] == '1' then
          -- A cancel was requested while it waited for the worker.
          finish(key, id, t[6], 'cancelled', now, v, 'att', att, t[7], t[8])
          outcome = 'cancelled'
        else
          redis.call('HSET', key, 'state', 'queued', 'v', v, 'att', att, 'ut', now)
          bump(deltas, 'queued', 1)
          enqueue_later(id, t[6], t[9], t[10], t[11])
          outcome = 'queued'
        end
      else
        outcome = settle_failure(key, id, now, delay, v, 'lease expired', deltas, KEYS[2])
      end
    end
    reply[#reply + 1] = id
    reply[#reply + 1] = outcome
  end
  if expired then
    -- Each task that ended here held a slot on the batch's worker.
    release_slots(prefix, redis.call('HGET', record, 'w'), ended)
    redis.call('DEL', record)
    redis.call('ZREM', KEYS[1], token)
  end
  changed = changed + ended
end
flush_counts(KEYS[3], deltas)
file_stopped(prefix)
file_enqueued(prefix)
if changed > 0 then append(KEYS[4], ARGV[2], ARGV[3]) end
file_finished(prefix, now)
return reply
