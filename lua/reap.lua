-- reap.lua — the leader moves on tasks whose deadline passed (running →
-- lease expired: retry, dead or cancelled; a lease whose assignment the
-- worker never accepted, and a task an older distributor left assigned →
-- queued without using an attempt).
-- KEYS[1] deadlines zset     KEYS[2] scheduled zset     KEYS[3] counts hash
-- KEYS[4] intake stream      KEYS[5] events stream
-- ARGV[1] key prefix         ARGV[2] result TTL ms
-- ARGV[3] signed intake envelope for the tasks expected to be queued again,
--         with the versions they will have ('' if none)
-- ARGV[4] signed events envelope naming the tasks   ARGV[5] events MAXLEN
-- ARGV[6..] 4 per task: id, expected version, retry delay ms, '1' if the
--           caller listed it in the intake envelope as never run ('0' if not)
-- Reply: flat array, 2 per task: id, outcome ('queued' | 'scheduled' | 'dead'
--        | 'cancelled' | 'renewed' (deadline moved since it was read) |
--        'conflict' | 'gone' (no task: the member is dropped))
-- assign.lua takes the lease and charges the attempt; the worker accepts by
-- acknowledging the assign entry (`ent`) before it runs anything. An entry
-- still unread, or read but not acknowledged, means the handler never ran
-- (the worker died or stalled first): the attempt is given back. The caller
-- asks the worker's stream (Store::assignment_acknowledged) and flags such
-- tasks; this script only checks state and version.
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local reply, deltas, requeued, changed, dropped = {}, {}, {}, 0, {}
for i = 6, #ARGV, 4 do
  local id, expected, delay, listed = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = task_key(prefix, id)
  local t = redis.call('HMGET', key, 'state', 'v', 'w', 'att', 'cr')
  local due = tonumber(redis.call('ZSCORE', KEYS[1], id) or '-1')
  local outcome
  if not t[1] then
    outcome = 'gone'
    dropped[#dropped + 1] = id
  elseif due < 0 or due > now then
    outcome = 'renewed'
  elseif t[2] ~= expected then
    outcome = 'conflict'
  else
    local v = tonumber(t[2]) + 1
    dropped[#dropped + 1] = id
    -- Only a task that holds a slot gives one back (a finished task keeps
    -- the worker of its last attempt in `w`).
    if t[1] == 'running' or t[1] == 'assigned' then release_slot(prefix, t[3]) end
    bump(deltas, t[1], -1)
    -- The caller asked the worker's stream (Store::assignment_acknowledged)
    -- and listed such a task in the intake envelope.
    local never_ran = t[1] == 'assigned' or (t[1] == 'running' and listed == '1')
    if never_ran then
      -- The handler never ran. A lease taken at assignment gives back the
      -- attempt it charged (an older distributor's `assigned` charged none).
      local att = t[4] or '0'
      if t[1] == 'running' then att = int(math.max(tonumber(att) - 1, 0)) end
      if t[5] == '1' then
        -- A cancel was requested while it waited for the worker.
        finish(key, 'cancelled', now, ttl, v, 'att', att)
        outcome = 'cancelled'
      else
        redis.call('HSET', key, 'state', 'queued', 'v', v, 'att', att, 'ut', now, 'w', '')
        bump(deltas, 'queued', 1)
        requeued[#requeued + 1] = id
        outcome = 'queued'
      end
    elseif t[1] == 'running' then
      outcome = settle_failure(key, id, now, delay, ttl, v, 'lease expired', deltas, KEYS[2])
    else
      -- A deadline on any other state is a leftover; drop it.
      bump(deltas, t[1], 1)
      outcome = 'conflict'
    end
    changed = changed + 1
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = outcome
end
zrem_many(KEYS[1], dropped)
flush_counts(KEYS[3], deltas)
announce(prefix, KEYS[4], ARGV[3], requeued)
if changed > 0 then append(KEYS[5], ARGV[4], ARGV[5]) end
return reply
